"""Audio sample conventions of the core: 16 kHz mono float32 in [-1, 1]."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16_000
"""Whisper's rate; every stream is converted to it at the edge."""

FloatAudio = npt.NDArray[np.float32]


def to_float32(samples: npt.ArrayLike) -> FloatAudio:
    """Samples as float32 in [-1, 1]; int16 PCM is scaled, floats are kept."""
    array = np.asarray(samples)
    if array.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {array.shape}")
    if array.dtype == np.int16:
        return array.astype(np.float32) / 32768.0
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    raise TypeError(f"expected int16 PCM or float samples, got {array.dtype}")


def pcm16le_to_float32(data: bytes) -> FloatAudio:
    """Raw PCM16 little-endian bytes (an even number of them) as float32 samples."""
    if len(data) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    return to_float32(np.frombuffer(data, dtype="<i2").astype(np.int16))


def seconds(samples: int) -> float:
    return samples / SAMPLE_RATE


class PcmResampler:
    """PCM16LE bytes at ``rate`` Hz, in any chunking, as PCM16LE bytes at :data:`SAMPLE_RATE`.

    For protocols whose clients send other rates (Deepgram's ``sample_rate``, OpenAI Realtime's
    24 kHz). Streaming (soxr keeps its filter state between chunks); an odd byte waits for its pair.
    """

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        self.rate = rate
        self._carry = b""
        self._stream = None
        if rate != SAMPLE_RATE:
            import soxr  # only where a conversion is needed

            self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="int16")

    def convert(self, data: bytes, last: bool = False) -> bytes:
        """The 16 kHz bytes for ``data`` (``last``: the end of the stream, flush the filter)."""
        data = self._carry + data
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        if self._stream is None:
            return data[:usable]
        samples = np.frombuffer(data[:usable], dtype="<i2")
        return self._stream.resample_chunk(samples, last=last).astype("<i2").tobytes()
