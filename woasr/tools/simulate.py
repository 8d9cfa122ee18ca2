"""Computation-aware simulation: a file fed to the processor as a live stream would be.

The simulated clock is what a live server experiences: audio becomes
available in real time, and while the model computes, time passes. An update
starts at ``max(previous audio end + min_chunk, previous emission)``; its
words are emitted at ``start + compute time``. With ``aware=False`` compute
costs no time (only the chunking is simulated).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from woasr.core.audio import SAMPLE_RATE, FloatAudio
from woasr.core.hypothesis import normalize_token
from woasr.core.processor import OnlineASRProcessor
from woasr.core.records import Update, Word

PARTIAL_MATCH_S = 0.5
"""A committed word matches a partial word with the same text ending this close to it."""


@dataclass(frozen=True, slots=True)
class Step:
    """One processor update as the simulated client saw it."""

    audio_end: float
    """Seconds of audio available when the update started."""
    emission: float
    """Simulated time at which its words were sent."""
    compute: float
    """Seconds the update took."""
    update: Update
    buffer_s: float
    final: bool = False


@dataclass(slots=True)
class _Sighting:
    text: str
    end: float
    first_seen: float


class PartialTracker:
    """Remembers when each word first showed up in a partial, to time partial latency."""

    def __init__(self) -> None:
        self._pending: list[_Sighting] = []

    def _find(self, word: Word) -> _Sighting | None:
        key = normalize_token(word.text)
        return next(
            (s for s in self._pending if s.text == key and abs(s.end - word.end) < PARTIAL_MATCH_S),
            None,
        )

    def see(self, words: tuple[Word, ...], now: float) -> None:
        for word in words:
            if self._find(word) is None:
                self._pending.append(_Sighting(normalize_token(word.text), word.end, now))

    def first_seen(self, word: Word, committed_at: float) -> float:
        """When the committed ``word`` was first shown (its commit time if never partial)."""
        sighting = self._find(word)
        if sighting is None:
            return committed_at
        self._pending.remove(sighting)
        self._pending = [s for s in self._pending if s.end > word.end - PARTIAL_MATCH_S]
        return sighting.first_seen


def simulate(
    processor: OnlineASRProcessor,
    audio: FloatAudio,
    min_chunk: float = 1.0,
    aware: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[Step]:
    """Feed ``audio`` in ``min_chunk`` steps; yield every update, the last from ``finish()``."""
    duration = len(audio) / SAMPLE_RATE
    fed = 0.0
    now = 0.0
    while fed < duration:
        start = min(max(fed + min_chunk, now), duration)
        processor.insert_audio(audio[round(fed * SAMPLE_RATE) : round(start * SAMPLE_RATE)])
        fed = start
        began = clock()
        update = processor.process() if fed < duration else processor.finish()
        compute = clock() - began
        now = start + compute if aware else start
        yield Step(fed, now, compute, update, processor.buffer_s, final=fed >= duration)
