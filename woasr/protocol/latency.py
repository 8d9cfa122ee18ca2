"""Latency bookkeeping of a session: when each piece of audio arrived, and what it cost.

Kept apart from the session's state machine: the session records arrivals
and asks how late a word is; nothing here decides what the session does.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from woasr.core.audio import SAMPLE_RATE
from woasr.percentiles import percentiles_ms


class ArrivalLog:
    """Arrival time of every received chunk, to date a word by the audio that holds its end."""

    def __init__(self) -> None:
        self._arrivals: list[tuple[int, float]] = []
        """(absolute sample index just past a chunk, arrival time); pruned as words commit."""

    def record(self, samples_received: int, now: float) -> None:
        """Audio up to sample ``samples_received`` (counted from the stream start) arrived at ``now``."""
        self._arrivals.append((samples_received, now))

    def arrival_of(self, seconds: float, prune: bool = True) -> float:
        """Arrival time of the chunk that holds the sample at ``seconds``.

        Committed words come in time order, so entries before one are pruned
        (``prune``); partials, which may be revised backwards, do not prune.
        """
        sample = round(seconds * SAMPLE_RATE)
        index = bisect.bisect_left(self._arrivals, (sample, float("-inf")))
        index = min(index, len(self._arrivals) - 1)
        arrived = self._arrivals[index][1]
        if prune:
            del self._arrivals[: max(0, index - 1)]
        return arrived


@dataclass(slots=True)
class SessionStats:
    """What a session log line and latency monitoring report."""

    audio_s: float = 0.0
    committed_words: int = 0
    updates: int = 0
    latencies: list[float] = field(default_factory=list)
    """Committed word latency: emission time - arrival time of the audio holding its end."""
    partial_latencies: list[float] = field(default_factory=list)
    """Per non-empty partial sent: emission time - arrival time of the audio holding its end."""
    last_chunk_s: float = 0.0
    """Seconds of new audio the latest update covered (the effective chunk)."""

    def percentile_ms(self, key: str) -> float | None:
        """``p50``, ``p95`` or ``max`` of the committed latencies, in whole milliseconds."""
        return percentiles_ms(self.latencies, (key,), ndigits=None)[key]
