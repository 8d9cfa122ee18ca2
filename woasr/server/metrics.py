"""Latency monitoring: Prometheus metrics and a periodic log line for ``woasr serve``.

The session runner and the service call the ``ServerMetrics`` hooks; the
metrics are exposed at ``GET /metrics`` of the web app (and on
``--metrics-port``), and the server logs :meth:`ServerMetrics.summary` every
``--metrics-log-interval`` seconds.

Each service owns its own :class:`~prometheus_client.CollectorRegistry` rather
than the process-wide default one, so tests and several services in one
process do not collide on metric names.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from woasr.percentiles import percentiles

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
"""Committed and partial latency: a good stream sits at 0.5-3 s; tens of seconds means overload."""
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Waiting for a worker: ~0 when idle, up to several model calls under load."""
INFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""One model call: tens of ms (tiny on a short buffer) to seconds (large models, long buffers)."""
CHUNK_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
"""Seconds of new audio per model call: min_chunk when idle, growing as updates queue."""
RTF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
"""Inference time / new audio; above 1 a session cannot keep up alone."""

WINDOW = 10_000
"""Raw values kept per metric for the log line's percentiles (the newest win if more arrive)."""
SESSION_WINDOW = 1_000
"""Committed latencies kept per session for its p50/p95 gauges."""
DEFAULT_TRANSPORTS = ("tcp", "ws")
"""Transports whose active-session series exist from the start (at 0), so dashboards see them."""


class _Window:
    """The raw values of one metric since the last summary, bounded."""

    def __init__(self, maxlen: int = WINDOW) -> None:
        self.values: deque[float] = deque(maxlen=maxlen)

    def add(self, value: float) -> None:
        self.values.append(value)

    def extend(self, values: Iterable[float]) -> None:
        self.values.extend(values)

    def take(self) -> list[float]:
        """The values, and start a new interval."""
        values = list(self.values)
        self.values.clear()
        return values


class _SessionState:
    """Per-session raw committed latencies (percentiles need raw values, not buckets)."""

    def __init__(self) -> None:
        self.committed: deque[float] = deque(maxlen=SESSION_WINDOW)


class ServerMetrics:
    """Every latency metric of one server, with the hooks that feed them.

    Hooks run on the event loop (and are cheap); the lock guards the raw windows
    because the Prometheus HTTP server thread and a summary may run meanwhile.
    """

    def __init__(self, transports: Sequence[str] = DEFAULT_TRANSPORTS) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.committed_latency = Histogram(
            "woasr_committed_latency_seconds",
            "Committed word latency: emission time minus arrival time of the audio holding the word's end.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.partial_latency = Histogram(
            "woasr_partial_latency_seconds",
            "Partial latency: emission time of a partial minus arrival time of the audio its newest word ends in.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "woasr_queue_wait_seconds", "Time a model call waited for a worker.",
            buckets=QUEUE_WAIT_BUCKETS, registry=r)
        self.inference = Histogram(
            "woasr_inference_seconds", "Time of one model call.", buckets=INFERENCE_BUCKETS, registry=r)
        self.effective_chunk = Histogram(
            "woasr_effective_chunk_seconds", "Seconds of new audio one model call covered.",
            buckets=CHUNK_BUCKETS, registry=r)
        self.rtf = Histogram(
            "woasr_realtime_factor", "Inference time divided by the new audio it covered (calls with new audio).",
            buckets=RTF_BUCKETS, registry=r)
        self.active = Gauge("woasr_active_sessions", "Open streaming sessions.", ["transport"], registry=r)
        self.refused = Counter(
            "woasr_refused_sessions", "Sessions refused (e.g. draining, overload).", ["transport", "reason"],
            registry=r)
        self.updates = Counter("woasr_updates", "Model calls completed.", registry=r)
        self.committed_words = Counter("woasr_committed_words", "Words committed (sent as finals).", registry=r)
        self.session_p50 = Gauge(
            "woasr_session_committed_latency_p50_seconds", "A session's committed latency p50 (its last "
            f"{SESSION_WINDOW} words).", ["session"], registry=r)
        self.session_p95 = Gauge(
            "woasr_session_committed_latency_p95_seconds", "A session's committed latency p95 (its last "
            f"{SESSION_WINDOW} words).", ["session"], registry=r)
        self.session_lag = Gauge(
            "woasr_session_lag_seconds", "A session's current lag: latency of its newest committed word.",
            ["session"], registry=r)
        self.session_chunk = Gauge(
            "woasr_session_effective_chunk_seconds", "A session's effective chunk: new audio its latest model "
            "call covered (min_chunk when idle, more while it waits for a worker).", ["session"], registry=r)

        self._lock = threading.Lock()
        names = ("committed", "partial", "queue_wait", "inference", "chunk", "rtf")
        self._windows = {name: _Window() for name in names}
        self._updates_in_interval = 0
        self._active: dict[str, int] = {}
        self._refused_total = 0
        self._refused_in_interval = 0
        self._sessions: dict[str, _SessionState] = {}
        self._interval_start = time.monotonic()
        for transport in transports:
            self.active.labels(transport=transport).set(0)
            self._active[transport] = 0

    # -- sessions ------------------------------------------------------------
    def session_started(self, transport: str) -> None:
        """A session opened on ``transport`` ("tcp", "ws")."""
        self.active.labels(transport=transport).inc()
        with self._lock:
            self._active[transport] = self._active.get(transport, 0) + 1

    def session_ended(self, transport: str) -> None:
        """A session started with :meth:`session_started` ended, however it ended."""
        self.active.labels(transport=transport).dec()
        with self._lock:
            self._active[transport] = self._active.get(transport, 0) - 1

    def session_refused(self, transport: str, reason: str) -> None:
        """A connection was turned away (``reason``: e.g. "draining", "overloaded"); it never started."""
        self.refused.labels(transport=transport, reason=reason).inc()
        with self._lock:
            self._refused_total += 1
            self._refused_in_interval += 1

    def forget_session(self, session_id: str) -> None:
        """Drop the session's series, so their number stays bounded by the open sessions."""
        with self._lock:
            self._sessions.pop(session_id, None)
        for gauge in (self.session_p50, self.session_p95, self.session_lag, self.session_chunk):
            gauge.remove(session_id)

    # -- observations --------------------------------------------------------
    def observe_update(self, session_id: str, queue_wait_s: float, inference_s: float, chunk_s: float) -> None:
        """One model call: its wait for a worker, its time in the model, the new audio it covered.

        The real-time factor is ``inference_s / chunk_s``; a call without new audio
        (a flush or the closing call right after one) has none and is not counted in it.
        """
        self.updates.inc()
        self.queue_wait.observe(queue_wait_s)
        self.inference.observe(inference_s)
        self.effective_chunk.observe(chunk_s)
        rtf = inference_s / chunk_s if chunk_s > 0 else None
        if rtf is not None:
            self.rtf.observe(rtf)
            self.session_chunk.labels(session=session_id).set(chunk_s)
        with self._lock:
            self._updates_in_interval += 1
            self._windows["queue_wait"].add(queue_wait_s)
            self._windows["inference"].add(inference_s)
            self._windows["chunk"].add(chunk_s)
            if rtf is not None:
                self._windows["rtf"].add(rtf)

    def observe_committed(self, session_id: str, latencies_s: Sequence[float]) -> None:
        """One update's committed words, one latency each, in stream order (the last is the newest)."""
        if not latencies_s:
            return
        for latency in latencies_s:
            self.committed_latency.observe(latency)
        self.committed_words.inc(len(latencies_s))
        with self._lock:
            self._windows["committed"].extend(latencies_s)
            state = self._sessions.setdefault(session_id, _SessionState())
            state.committed.extend(latencies_s)
            p50, p95 = percentiles(state.committed, (50, 95)) or (0.0, 0.0)
        self.session_p50.labels(session=session_id).set(p50)
        self.session_p95.labels(session=session_id).set(p95)
        self.session_lag.labels(session=session_id).set(latencies_s[-1])

    def observe_partial(self, session_id: str, latency_s: float) -> None:
        """One partial sent; ``latency_s`` as the caller measures it (emission minus arrival of its audio)."""
        self.partial_latency.observe(latency_s)
        with self._lock:
            self._windows["partial"].add(latency_s)

    # -- the log line --------------------------------------------------------
    def summary(self) -> str:
        """p50/p95 of everything observed since the previous summary, and the session counts.

        Histogram buckets only bound percentiles, so these come from the raw windows.
        """
        now = time.monotonic()
        with self._lock:
            interval, self._interval_start = now - self._interval_start, now
            values = {name: window.take() for name, window in self._windows.items()}
            updates, self._updates_in_interval = self._updates_in_interval, 0
            refused, self._refused_in_interval = self._refused_in_interval, 0
            refused_total = self._refused_total
            active = dict(self._active)
        by_transport = " ".join(f"{t}={n}" for t, n in sorted(active.items()))
        sessions = (f"active={sum(active.values())} ({by_transport}) "
                    f"refused={refused} (total {refused_total})")
        if not updates and not values["committed"] and not values["partial"]:
            return f"last {interval:.0f}s: no updates; {sessions}"
        parts = [
            f"last {interval:.0f}s: updates={updates} words={len(values['committed'])}",
            "committed " + _percentiles_ms(values["committed"]),
            "partial " + _percentiles_ms(values["partial"]),
            "queue_wait " + _percentiles_ms(values["queue_wait"]),
            "inference " + _percentiles_ms(values["inference"]),
            "chunk " + _percentiles(values["chunk"], "{:.2f}s"),
            "rtf " + _percentiles(values["rtf"], "{:.2f}"),
            sessions,
        ]
        return "; ".join(parts)


def _percentiles(values: Sequence[float], fmt: str) -> str:
    found = percentiles(values, (50, 95))
    if found is None:
        return "p50=- p95=-"
    p50, p95 = found
    return f"p50={fmt.format(p50)} p95={fmt.format(p95)}"


def _percentiles_ms(values: Sequence[float]) -> str:
    return _percentiles([v * 1000 for v in values], "{:.0f}ms")
