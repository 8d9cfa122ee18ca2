"""``woasr capture``: write each stretch of speech of a stream as its own WAV file.

The segmentation is sans-I/O (:class:`SegmentCapture`: samples in, finished
segments out, decided by :class:`~woasr.core.vad.VoiceActivityDetector`); the
I/O around it reads the microphone, a file or PCM from stdin, and
:class:`SegmentWriter` writes the WAVs and ``index.jsonl`` so that a capture
stopped at any moment leaves only complete files and complete index lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from woasr.core.audio import SAMPLE_RATE, FloatAudio, pcm16le_to_float32, to_float32
from woasr.core.vad import FRAME_S, SileroVadModel, SpeechStart, VadEvent, VadSettings, VoiceActivityDetector

log = logging.getLogger(__name__)

INDEX = "index.jsonl"
FILE_BLOCK_S = 1.0
"""A file is read in blocks this long, as fast as the VAD goes (about 300x real time)."""


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    """What is written around and of each stretch of speech (seconds)."""

    pre_roll_s: float = 0.3
    """Audio kept before the first speech frame (less if the previous segment ended closer)."""
    post_roll_s: float = 0.3
    """Audio kept after the last speech frame (less if the next speech starts sooner)."""
    min_seconds: float = 0.5
    """Speech shorter than this (a click, a cough, a lone "uh"), rolls not counted, is not written."""
    max_seconds: float = 30.0
    """A longer segment is cut every this many seconds (Whisper's window is 30 s)."""
    threshold: float = 0.5
    """The VAD's speech probability threshold."""
    min_silence_s: float = 0.5
    """Silence that ends a segment."""

    def __post_init__(self) -> None:
        for name in ("pre_roll_s", "post_roll_s", "min_seconds", "min_silence_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.max_seconds) and self.max_seconds > max(self.min_seconds, FRAME_S)):
            raise ValueError(f"max_seconds must exceed min_seconds ({self.min_seconds}), got {self.max_seconds!r}")
        _ = self.vad  # validates the threshold

    @property
    def vad(self) -> VadSettings:
        """The detector's settings: no pad of its own, the rolls are applied here."""
        return VadSettings(threshold=self.threshold, min_silence_s=self.min_silence_s, speech_pad_s=0.0)


@dataclass(frozen=True, slots=True, eq=False)
class CapturedSegment:
    """One finished segment: its audio and where it lies in the stream (seconds from its first sample)."""

    start_s: float
    end_s: float
    speech_s: float
    """Its span from the first to the last speech frame the VAD heard (the segment without its rolls)."""
    audio: FloatAudio

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass(slots=True)
class _Open:
    """The segment being captured, in samples."""

    begin: int  # first sample not yet written
    speech_start: int
    speech_end: int | None = None  # set by the VAD's SpeechEnd
    end: int | None = None  # speech_end + post-roll, or the next speech start if sooner


class _History:
    """The recent samples of the stream, kept as the blocks that were fed (no copying per feed)."""

    def __init__(self) -> None:
        self._blocks: list[tuple[int, FloatAudio]] = []
        self.end = 0

    def append(self, audio: FloatAudio) -> None:
        if len(audio):
            self._blocks.append((self.end, audio))
            self.end += len(audio)

    def drop_before(self, sample: int) -> None:
        """Forget blocks that end at or before ``sample``."""
        keep = 0
        while keep < len(self._blocks) and self._blocks[keep][0] + len(self._blocks[keep][1]) <= sample:
            keep += 1
        del self._blocks[:keep]

    def slice(self, start: int, end: int) -> FloatAudio:
        parts = [
            block[max(start - at, 0) : end - at] for at, block in self._blocks if at < end and at + len(block) > start
        ]
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if len(audio) != end - start:
            raise RuntimeError(f"samples {start}..{end} are no longer kept")  # a bug in the retention
        return audio


class SegmentCapture:
    """Speech segments of one stream with pre- and post-roll, decided as samples arrive.

    Sans-I/O: :meth:`feed` takes samples and returns the segments it finished;
    :meth:`finish` ends the stream and returns the rest (the segment in
    progress, cut at the stream end). Segments come in stream order, never
    overlap, and do not depend on how the stream was cut into blocks: a
    segment is returned once no later audio can change it (its post-roll and
    the VAD's start delay have passed), so a few tenths of a second after it ends.
    """

    def __init__(self, settings: CaptureSettings | None = None, model: SileroVadModel | None = None) -> None:
        self.settings = settings or CaptureSettings()
        self.detector = VoiceActivityDetector(self.settings.vad, model)
        s = self.settings
        self._pre, self._post = _samples(s.pre_roll_s), _samples(s.post_roll_s)
        self._max, self._min = _samples(s.max_seconds), _samples(s.min_seconds)
        # A SpeechStart reaches back at most min_speech_s + 2 frames before the audio fed;
        # a SpeechEnd at most min_silence_s + 2 frames. Beyond these the past is settled.
        self._start_delay = _samples(self.settings.vad.min_speech_s + 2 * FRAME_S)
        self._end_delay = _samples(s.min_silence_s + 2 * FRAME_S)
        self._history = _History()
        self._open: _Open | None = None
        self._previous_end = 0
        self._finished = False

    @property
    def fed_s(self) -> float:
        return self._history.end / SAMPLE_RATE

    @property
    def in_segment(self) -> bool:
        """A segment has started and is not returned yet."""
        return self._open is not None

    def feed(self, samples: npt.ArrayLike) -> list[CapturedSegment]:
        """Take 16 kHz mono samples (float32 or int16 PCM); return the segments now finished."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        audio = np.array(to_float32(samples))  # a copy: the caller may reuse its buffer
        self._history.append(audio)
        done = self._on_events(self.detector.feed(audio))
        done += self._settled()
        keep_from = self._open.begin if self._open else self._history.end - self._pre - self._start_delay
        self._history.drop_before(keep_from)
        return done

    def finish(self) -> list[CapturedSegment]:
        """End of stream: the segment in progress, its post-roll cut at the stream end."""
        if self._finished:
            return []
        done = self._on_events(self.detector.finish())
        self._finished = True
        if self._open is None:
            return done
        self._open.end = min(self._open.end if self._open.end is not None else self._history.end, self._history.end)
        return done + self._close()

    def _on_events(self, events: list[VadEvent]) -> list[CapturedSegment]:
        done: list[CapturedSegment] = []
        for event in events:
            at = _samples(event.time)
            if isinstance(event, SpeechStart):
                if self._open is not None:  # the previous one waits for its post-roll: it stops here
                    self._open.end = min(self._open.end, at)
                    done += self._close()
                self._open = _Open(begin=max(at - self._pre, self._previous_end, 0), speech_start=at)
            else:
                self._open.speech_end = at
                self._open.end = at + self._post
        return done

    def _settled(self) -> list[CapturedSegment]:
        """Pieces no later audio can change: whole max-length ones of long speech, or the closed segment."""
        segment, fed = self._open, self._history.end
        if segment is None:
            return []
        if segment.end is None:  # speech goes on at least until fed - end_delay
            pieces = []
            while fed - self._end_delay >= segment.begin + self._max:
                pieces += self._piece(segment.begin, segment.begin + self._max)
                segment.begin += self._max
            return pieces
        return self._close() if fed >= segment.end + self._start_delay else []

    def _close(self) -> list[CapturedSegment]:
        segment, self._open = self._open, None
        pieces = []
        for begin in range(segment.begin, segment.end, self._max):
            pieces += self._piece(begin, min(begin + self._max, segment.end), segment)
        self._previous_end = segment.end
        return pieces

    def _piece(self, begin: int, end: int, segment: _Open | None = None) -> list[CapturedSegment]:
        """The segment [begin, end) if it holds enough speech, else nothing."""
        segment = segment or self._open
        speech_end = segment.speech_end if segment.speech_end is not None else end
        speech = max(0, min(end, speech_end) - max(begin, segment.speech_start))
        if speech < self._min:
            log.debug("%.2f-%.2f s: %.2f s of speech is under --min-seconds, not written",
                      begin / SAMPLE_RATE, end / SAMPLE_RATE, speech / SAMPLE_RATE)
            return []
        return [CapturedSegment(begin / SAMPLE_RATE, end / SAMPLE_RATE, speech / SAMPLE_RATE,
                                self._history.slice(begin, end))]


def _samples(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


class SegmentWriter:
    """Writes segments into a folder: each WAV whole (temp name, fsync, rename), then its index line.

    So whenever the process stops, every line of ``index.jsonl`` names a complete
    file. Numbering continues after the files already in the folder.
    """

    def __init__(self, out_dir: str | Path, source: str, transcribe: Callable[[FloatAudio], str] | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.source = source
        self.transcribe = transcribe
        numbers = [int(m.group(1)) for p in self.out_dir.glob("seg_*.wav") if (m := re.match(r"seg_(\d+)_", p.name))]
        self.next_number = max(numbers, default=0) + 1
        self.written = 0
        self._index = open(self.out_dir / INDEX, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, segment: CapturedSegment) -> dict:
        """Write one segment and append its index line; returns the line's record."""
        import soundfile as sf

        name = f"seg_{self.next_number:06d}_{segment.start_s:.3f}s.wav"
        self.next_number += 1
        temporary = self.out_dir / f".{name}.part"
        with open(temporary, "wb") as file:
            sf.write(file, segment.audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.out_dir / name)
        _fsync_dir(self.out_dir)
        record = {
            "file": name,
            "start_s": round(segment.start_s, 3),
            "end_s": round(segment.end_s, 3),
            "duration_s": round(segment.duration_s, 3),
            "source": self.source,
        }
        if self.transcribe is not None:
            record["text"] = self.transcribe(segment.audio)
        self._index.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._index.flush()
        os.fsync(self._index.fileno())
        self.written += 1
        log.info("%s %.2f-%.2f s (%.2f s)%s", name, segment.start_s, segment.end_s, segment.duration_s,
                 f": {record['text']}" if "text" in record else "")
        return record

    def close(self) -> None:
        self._index.close()


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# I/O: sources of float32 blocks, all stoppable by the same event.


class SourceUnavailable(Exception):
    """The audio source could not be opened or failed while read."""


async def file_blocks(path: str, stop: asyncio.Event) -> AsyncIterator[FloatAudio]:
    """The whole file at once from disk, then in blocks as fast as they are taken."""
    from woasr.audio_io import load_audio

    try:
        audio = load_audio(path)
    except (OSError, RuntimeError) as exc:  # soundfile's errors are RuntimeErrors
        raise SourceUnavailable(f"{path}: {exc}") from exc
    step = _samples(FILE_BLOCK_S)
    for at in range(0, len(audio), step):
        if stop.is_set():
            return
        yield audio[at : at + step]
        await asyncio.sleep(0)  # let a signal handler run


async def stdin_blocks(stop: asyncio.Event, fd: int | None = None) -> AsyncIterator[FloatAudio]:
    """Raw PCM16LE mono 16 kHz from stdin, as it arrives, until EOF or ``stop``.

    A daemon thread does the blocking reads, so a stop never waits for the pipe.
    """
    fd = sys.stdin.fileno() if fd is None else fd
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    def reader() -> None:
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except OSError as exc:
                log.error("stdin: %s", exc)
                data = b""
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, data)
            except RuntimeError:  # the loop is closed: capture is over
                return
            if not data:
                return

    threading.Thread(target=reader, name="capture-stdin", daemon=True).start()
    stopping = asyncio.ensure_future(stop.wait())
    odd = b""
    try:
        while not stop.is_set():
            getting = asyncio.ensure_future(chunks.get())
            await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                return
            data = odd + getting.result()
            if not getting.result():
                return
            whole = len(data) - len(data) % 2
            odd = data[whole:]
            yield pcm16le_to_float32(data[:whole])
    finally:
        stopping.cancel()


async def mic_blocks(stop: asyncio.Event, device: int | str | None) -> AsyncIterator[FloatAudio]:
    try:
        import sounddevice
    except OSError as exc:  # PortAudio is not installed
        raise SourceUnavailable(f"microphone: {exc}") from exc
    from woasr.clients.sources import mic_source

    try:
        async for block in mic_source(stop, device):
            yield pcm16le_to_float32(block)
    except (sounddevice.PortAudioError, ValueError) as exc:  # no such device, no input device
        raise SourceUnavailable(f"microphone: {exc}") from exc


async def capture(
    blocks: AsyncIterator[FloatAudio], segments: SegmentCapture, writer: SegmentWriter
) -> SourceUnavailable | None:
    """Feed every block to the segmenter and write what it finishes, then the segment in progress.

    The sources end by themselves on ``stop`` (the microphone after yielding what it
    captured). Returns the error that ended the source, if one did; what came before it is written.
    """
    error = None
    try:
        async for block in blocks:
            for segment in segments.feed(block):
                writer.write(segment)
    except SourceUnavailable as exc:
        error = exc
    for segment in segments.finish():
        writer.write(segment)
    return error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``woasr capture`` options."""
    defaults = CaptureSettings()
    parser.add_argument("--out", required=True, metavar="DIR",
                        help=f"folder for the WAVs and {INDEX} (created; an existing index is appended to)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", default=None, help="capture from this audio file (as fast as possible)")
    source.add_argument("--stdin", action="store_true", help="capture raw PCM16LE mono 16 kHz from stdin")
    parser.add_argument("--device", default=None,
                        help="microphone (the default source): input device index or name")
    parser.add_argument("--pre-roll", type=float, default=defaults.pre_roll_s,
                        help=f"seconds kept before speech (default: {defaults.pre_roll_s})")
    parser.add_argument("--post-roll", type=float, default=defaults.post_roll_s,
                        help=f"seconds kept after speech (default: {defaults.post_roll_s})")
    parser.add_argument("--min-seconds", type=float, default=defaults.min_seconds,
                        help=f"speech shorter than this is not written (default: {defaults.min_seconds})")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help=f"longer segments are split every this many seconds (default: {defaults.max_seconds})")
    parser.add_argument("--threshold", type=float, default=defaults.threshold,
                        help=f"VAD speech probability threshold (default: {defaults.threshold})")
    parser.add_argument("--min-silence", type=float, default=defaults.min_silence_s,
                        help=f"seconds of silence that end a segment (default: {defaults.min_silence_s})")
    parser.add_argument("--transcribe", action="store_true", help="add each segment's text to the index")
    parser.add_argument("--model", default="tiny.en", help="model for --transcribe (default: tiny.en)")
    parser.add_argument("--lang", default="en", help="language for --transcribe, or 'auto' (default: en)")


def settings_from(args: argparse.Namespace) -> CaptureSettings:
    return CaptureSettings(
        pre_roll_s=args.pre_roll, post_roll_s=args.post_roll, min_seconds=args.min_seconds,
        max_seconds=args.max_seconds, threshold=args.threshold, min_silence_s=args.min_silence,
    )


def run(args: argparse.Namespace) -> int:
    """``woasr capture``: 0 when the source ended (or the microphone was stopped), 128 + signal when
    a file or stdin capture was stopped before its end, 1 when the source failed, 2 on bad options."""
    try:
        settings = settings_from(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    transcribe = None
    if args.transcribe:
        from woasr.asr.faster_whisper_backend import FasterWhisperASR
        from woasr.core.records import join_words

        asr = FasterWhisperASR(args.model, None if args.lang in (None, "", "auto") else args.lang)

        def transcribe(audio: FloatAudio) -> str:
            return join_words(asr.transcribe(audio).words)
    source = args.file if args.file else "stdin" if args.stdin else "microphone"
    writer = SegmentWriter(args.out, source, transcribe)
    segments = SegmentCapture(settings)
    received: list[int] = []

    async def main() -> SourceUnavailable | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda signum=signum: (received.append(signum), stop.set()))
        if args.file:
            blocks = file_blocks(args.file, stop)
        elif args.stdin:
            blocks = stdin_blocks(stop)
        else:
            device = int(args.device) if args.device and args.device.isdigit() else args.device
            blocks = mic_blocks(stop, device)
        return await capture(blocks, segments, writer)

    try:
        error = asyncio.run(main())
    finally:
        writer.close()
    if error is not None:
        log.error("%s", error)
        return 1
    log.info("%d segments from %.1f s of %s written to %s", writer.written, segments.fed_s, source, args.out)
    if received and source != "microphone":
        return 128 + received[0]
    return 0
