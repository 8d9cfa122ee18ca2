"""Admission control: refuse a session the engine cannot carry, instead of slowing everyone.

With one-in-flight-per-session scheduling, N sessions on W workers each wait
for about N / W model calls between their own, and their audio piles up
meanwhile: the effective chunk is about ``N * compute_per_update / W``. A
session is admitted while that estimate, with it counted, stays within
``max_chunk``; compute per update is measured (a moving average of recent
calls). Until anything is measured, sessions are admitted. ``max_sessions``
is a hard limit on top (0: none).

Whole-file jobs (the REST endpoint's transcriptions) take the same workers,
so while one is admitted and not finished it counts like a session
(:meth:`Admission.job`): two uploads at capacity would otherwise stall every
live stream.

The compute average misses what users feel: updates that wait behind others,
long buffers, bursts. So the latency the admitted sessions actually get is
watched too: while the 95th percentile of recently committed words' latency
is above ``latency_target``, the admitted ones already miss it and one more
would only make it worse, so a new session is refused. Those latencies
describe the load they were measured under: when a session ends they are
forgotten, and the lighter load is measured afresh.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from woasr.percentiles import percentiles

LATENCY_WINDOW = 200
"""Committed words whose latency the admission rule looks at (the most recent ones)."""

MIN_LATENCY_SAMPLES = 20
"""Fewer recent words than this say nothing about the p95."""


@dataclass(slots=True)
class Admission:
    """Decides whether one more session fits (sans-I/O: fed measurements, asked questions)."""

    workers: int = 1
    max_chunk: float = 2.0
    """Seconds of audio per update the server may grow to under load."""
    max_sessions: int = 0
    """Hard limit of concurrent sessions; 0 = only the estimate decides."""
    smoothing: float = 0.1
    compute_per_update: float | None = None
    """Moving average of the seconds one model call takes (None until measured)."""
    latency_target: float = 2.0
    """Committed-word latency p95 (seconds) the admitted sessions must keep; 0: not watched."""
    recent_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    jobs: int = 0
    """Whole-file jobs admitted and not finished (waiting for the upload, a worker, or running)."""

    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        """Count a whole-file job as load while it is in flight (from its admission to its answer).

        Entered right after :meth:`refusal` admitted it, with no await between, so
        two requests arriving together cannot both take the last place.
        """
        self.jobs += 1
        try:
            yield
        finally:
            self.jobs -= 1
            self.load_fell()

    def observe_committed(self, latencies: Iterable[float]) -> None:
        """Words were committed this long (seconds) after they were spoken."""
        self.recent_latencies.extend(latencies)

    def load_fell(self) -> None:
        """A session ended: the latencies seen under the heavier load no longer apply."""
        self.recent_latencies.clear()

    @property
    def latency_p95(self) -> float | None:
        """The 95th percentile of the recent committed latencies (None: too few yet)."""
        if len(self.recent_latencies) < MIN_LATENCY_SAMPLES:
            return None
        (p95,) = percentiles(self.recent_latencies, (95,)) or (None,)
        return p95

    def observe(self, inference_s: float) -> None:
        """One model call took this long."""
        if self.compute_per_update is None:
            self.compute_per_update = inference_s
        else:
            self.compute_per_update += self.smoothing * (inference_s - self.compute_per_update)

    def expected_chunk(self, sessions: int) -> float | None:
        """The effective chunk ``sessions`` concurrent streams would see (None: not measured yet)."""
        if self.compute_per_update is None:
            return None
        return sessions * self.compute_per_update / self.workers

    @property
    def capacity(self) -> int | None:
        """Sessions the server carries within ``max_chunk`` (and ``max_sessions``), as measured now."""
        limit = self.max_sessions or None
        if self.compute_per_update:
            estimate = max(1, int(self.max_chunk * self.workers / self.compute_per_update))
            limit = min(limit, estimate) if limit else estimate
        return limit

    def refusal(self, active: int) -> str | None:
        """Why one more session (or whole-file job) beside ``active`` sessions is refused, or None.

        The whole-file jobs in flight (:attr:`jobs`) count like sessions: they use the same workers.
        """
        load = active + self.jobs
        if self.max_sessions and load >= self.max_sessions:
            return f"the server is at its limit of {self.max_sessions} concurrent sessions{self._jobs_note()}"
        p95 = self.latency_p95 if load and self.latency_target > 0 else None
        if p95 is not None and p95 > self.latency_target:
            return (f"the server is at capacity: the {load} sessions it serves{self._jobs_note()} get their "
                    f"words {p95:.1f} s after speech (p95; target {self.latency_target:g} s)")
        expected = self.expected_chunk(load + 1)
        if load and expected is not None and expected > self.max_chunk:
            return (f"the server is at capacity: {load} sessions{self._jobs_note()}, each update would wait "
                    f"for {expected:.1f} s of audio (limit {self.max_chunk:g} s)")
        return None

    def _jobs_note(self) -> str:
        """How many of the counted sessions are whole-file jobs (empty when none)."""
        return f" ({self.jobs} of them file transcriptions)" if self.jobs else ""
