"""A scripted backend for processor tests: it "hears" a known word list.

The synthetic audio carries its own clock: every sample holds the index of
its 10 ms tick, so the backend can tell which absolute seconds a buffer spans
without being told the processor's offset.
"""

from __future__ import annotations

import numpy as np

from woasr.core.audio import SAMPLE_RATE
from woasr.core.records import Segment, Transcription, Word

TICK = SAMPLE_RATE // 100
TICKS = 60_000  # the clock wraps after 600 s


def clock_audio(start_s: float, end_s: float) -> np.ndarray:
    """Samples from ``start_s`` to ``end_s`` whose values encode their own time."""
    index = np.arange(round(start_s * SAMPLE_RATE), round(end_s * SAMPLE_RATE))
    return ((index // TICK) % TICKS / TICKS).astype(np.float32)


def words_at(text: str, start: float = 0.0, step: float = 0.4) -> list[Word]:
    """Words of ``text`` laid out every ``step`` seconds, each lasting 0.3 s."""
    return [Word(start + i * step, start + i * step + 0.3, f" {t}") for i, t in enumerate(text.split())]


class ScriptedASR:
    """Returns the script's words that lie inside the buffer, relative to it.

    ``drift`` makes every call hear a different last word, so consecutive
    hypotheses never fully agree (to exercise the hard cap). With
    ``forces_prefix`` it behaves like the incremental decoder: the words that
    spell the given prefix are left out of the result.
    """

    def __init__(self, script: list[Word], *, drift: bool = False, segment_every: int = 0,
                 forces_prefix: bool = False) -> None:
        self.script = script
        self.drift = drift
        self.segment_every = segment_every
        self.forces_prefix = forces_prefix
        self.calls: list[tuple[float, float, str]] = []
        self.prefixes: list[str] = []

    def transcribe(self, audio: np.ndarray, prompt: str, language: str | None, prefix: str = "") -> Transcription:
        start = round(float(audio[0]) * TICKS) / 100
        end = start + len(audio) / SAMPLE_RATE
        self.calls.append((start, end, prompt))
        self.prefixes.append(prefix)
        heard = [w.shifted(-start) for w in self.script if w.start >= start - 0.05 and w.end <= end]
        if self.forces_prefix and prefix:
            forced = len(prefix.split())
            assert [w.text.strip() for w in heard[:forced]] == prefix.split(), "the prefix must be what was heard"
            heard = heard[forced:]
        if self.drift:
            heard = [Word(w.start, w.end, f"{w.text}{len(self.calls)}") for w in heard]
        if not heard:
            return Transcription((), language)
        size = self.segment_every or len(heard)
        segments = tuple(
            Segment(chunk[0].start, chunk[-1].end, tuple(chunk))
            for chunk in (heard[i : i + size] for i in range(0, len(heard), size))
        )
        return Transcription(segments, language or "en")
