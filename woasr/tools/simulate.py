"""Computation-aware simulation: a file fed to the processor as a live stream would be.

The simulated clock is what a live server experiences: audio becomes
available in real time, and while the model computes, time passes. An update
starts at ``max(previous audio end + min_chunk, previous emission)``; its
words are emitted at ``start + compute time``. With ``aware=False`` compute
costs no time (only the chunking is simulated).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from woasr.core.audio import SAMPLE_RATE, FloatAudio
from woasr.core.hypothesis import normalize_token
from woasr.core.processor import DEFAULT_MIN_CHUNK_S, OnlineASRProcessor
from woasr.core.records import Update, Word
from woasr.core.vac import GateItem, UtteranceEnd, VoiceGate, feed_processor

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
    """The last update of the stream."""
    finished: bool = False
    """The update was a ``finish()`` (the stream's end, or an utterance's with voice-activity control)."""


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


RECEIVE_BLOCK_S = 0.1
"""With voice-activity control, audio reaches the detector in blocks this long, as from a live client."""


def simulate(
    processor: OnlineASRProcessor,
    audio: FloatAudio,
    min_chunk: float = DEFAULT_MIN_CHUNK_S,
    aware: bool = True,
    clock: Callable[[], float] = time.perf_counter,
    gate: VoiceGate | None = None,
) -> Iterator[Step]:
    """Feed ``audio`` in ``min_chunk`` steps; yield every update, the last from ``finish()``.

    With a ``gate`` (voice-activity control) the detector hears the audio in
    receive-sized blocks, silence is skipped, and an utterance end starts an
    update at once that finishes the utterance.
    """
    if gate is not None:
        yield from _simulate_gated(processor, audio, min_chunk, aware, clock, gate)
        return
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
        yield Step(fed, now, compute, update, processor.buffer_s, final=fed >= duration, finished=fed >= duration)


def _simulate_gated(
    processor: OnlineASRProcessor,
    audio: FloatAudio,
    min_chunk: float,
    aware: bool,
    clock: Callable[[], float],
    gate: VoiceGate,
) -> Iterator[Step]:
    duration = len(audio) / SAMPLE_RATE
    queue: deque[GateItem] = deque()
    pushed = fed = now = 0.0
    gate_done = False
    while not gate_done or queue:
        target = min(max(fed + min_chunk, now), duration)
        while pushed < target and not (pushed >= now and any(isinstance(i, UtteranceEnd) for i in queue)):
            block_end = min(pushed + RECEIVE_BLOCK_S, target)
            queue.extend(gate.push(audio[round(pushed * SAMPLE_RATE) : round(block_end * SAMPLE_RATE)]))
            pushed = block_end
        if pushed >= duration and not gate_done:
            queue.extend(gate.finish())
            gate_done = True
        fed = pushed
        began = clock()
        ended = feed_processor(processor, queue)
        final = gate_done and not queue
        finishes = ended is not None or final
        update = processor.finish() if finishes else processor.process()
        compute = clock() - began
        now = fed + compute if aware else fed
        yield Step(fed, now, compute, update, processor.buffer_s, final=final, finished=finishes)
