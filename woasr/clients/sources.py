"""Audio sources for the clients: a file (paced in real time or not) or the microphone.

Both yield PCM16LE mono 16 kHz blocks of ``block_s`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from woasr.audio_io import load_audio
from woasr.core.audio import SAMPLE_RATE

log = logging.getLogger(__name__)


def to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


async def paced_blocks(pcm: bytes, block_s: float = 0.1, paced: bool = True) -> AsyncIterator[bytes]:
    """PCM16 audio in blocks, each released when it would have been spoken (or at once)."""
    step = int(block_s * SAMPLE_RATE) * 2
    loop = asyncio.get_running_loop()
    started = loop.time()
    for index, offset in enumerate(range(0, len(pcm), step)):
        if paced:
            await asyncio.sleep(max(0.0, started + (index + 1) * block_s - loop.time()))
        yield pcm[offset : offset + step]


async def file_source(path: str | Path, block_s: float = 0.1, paced: bool = True) -> AsyncIterator[bytes]:
    """The file's audio in blocks, paced in real time unless ``paced`` is false."""
    async for block in paced_blocks(to_pcm16(load_audio(path)), block_s, paced):
        yield block


async def mic_source(
    stop: asyncio.Event, device: int | str | None = None, block_s: float = 0.1
) -> AsyncIterator[bytes]:
    """Microphone blocks until ``stop`` is set; resampled to 16 kHz if the device cannot do it."""
    import sounddevice as sd
    import soxr

    info = sd.query_devices(device, "input")
    try:
        sd.check_input_settings(device=device, samplerate=SAMPLE_RATE, channels=1, dtype="float32")
        rate = SAMPLE_RATE
    except Exception:  # noqa: BLE001 - PortAudio reports unsupported rates in several ways
        rate = int(info["default_samplerate"])
    log.info("microphone %r at %d Hz%s", info["name"], rate, "" if rate == SAMPLE_RATE else " (resampled to 16 kHz)")
    resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
    loop = asyncio.get_running_loop()
    blocks: asyncio.Queue[bytes] = asyncio.Queue()

    def on_audio(indata, frames, time_info, status) -> None:  # PortAudio thread
        if status:
            log.warning("microphone: %s", status)
        mono = indata[:, 0].copy()
        if resampler is not None:
            mono = resampler.resample_chunk(mono)
        loop.call_soon_threadsafe(blocks.put_nowait, to_pcm16(mono))

    with sd.InputStream(device=device, samplerate=rate, channels=1, dtype="float32",
                        blocksize=int(rate * block_s), callback=on_audio):
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                getting = asyncio.ensure_future(blocks.get())
                await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if getting.done():
                    yield getting.result()
                else:
                    getting.cancel()
                    break
        finally:
            stopping.cancel()
    while not blocks.empty():  # what was captured before the stop
        yield blocks.get_nowait()
