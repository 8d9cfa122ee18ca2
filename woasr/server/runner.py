"""Drives one session: its model calls on the engine, its events out, in order.

:func:`woasr.server.lifecycle.serve_session` feeds the session from the
transport's input (``post`` the events feeding returns, ``wake`` the runner);
:meth:`SessionRunner.run` does the rest: an update whenever one is due, its
result applied, every event sent, until the session is finished or aborted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from woasr.engine.base import InferenceEngine, InferenceResult
from woasr.protocol.events import Event
from woasr.protocol.session import StreamSession
from woasr.server.metrics import ServerMetrics

Send = Callable[[list[Event]], Awaitable[None]]
"""How a transport writes events to its peer (in order; may raise ConnectionError)."""


class SessionRunner:
    """Runs a session's updates as they fall due and sends every event, in order.

    Every committed word's latency goes to the engine's admission (to refuse
    sessions the server cannot serve in time) and, with ``metrics``, to Prometheus.
    """

    def __init__(
        self,
        session_id: str,
        session: StreamSession,
        engine: InferenceEngine,
        send: Send,
        metrics: ServerMetrics | None = None,
        transport: str = "",
    ) -> None:
        self.session_id = session_id
        self.session = session
        self.engine = engine
        self.send = send
        self.metrics = metrics
        self.transport = transport
        self._aborted = asyncio.Event()
        self._outbox: list[Event] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        """Set whenever an update completes (or the session stops): the backlog may have shrunk."""
        self._call: asyncio.Future[InferenceResult] | None = None
        """The model call in flight, cancelled if the peer leaves."""

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    async def wait_aborted(self) -> None:
        await self._aborted.wait()

    def post(self, events: list[Event]) -> None:
        """Queue events for the peer (e.g. errors about its input), after those already queued."""
        if events:
            self._outbox += events
            self._wake.set()

    def wake(self) -> None:
        """Input arrived: an update may be due."""
        self._wake.set()

    def finish(self) -> None:
        """End the session from the server's side (shutdown): commit and send what was received."""
        self.session.close()
        self._wake.set()

    def abort(self) -> None:
        """The peer is gone: stop without finishing or sending anything more.

        A model call still waiting for a worker is withdrawn at once; one already running
        finishes on its worker (the engine keeps its slot until then) and its result is dropped.
        """
        self._aborted.set()
        if self._call is not None:
            self._call.cancel()
        self._wake.set()
        self._progress.set()

    async def backlog_below(self, seconds: float) -> None:
        """Return once the session holds at most ``seconds`` of unprocessed audio (0: at once).

        The transport does not read while this waits: its flow control then slows the sender.
        """
        while seconds > 0 and self.session.pending_s > seconds and not (self.aborted or self.session.finished):
            self._progress.clear()
            await self._progress.wait()

    async def run(self) -> None:
        """Until the session is finished (every received sample transcribed) or aborted."""
        session = self.session
        while not self.aborted:
            if self._outbox:
                events, self._outbox = self._outbox, []
                await self.send(events)
            elif session.finished:
                return
            elif session.due():
                await self._update()
            else:
                await self._wake.wait()
                self._wake.clear()

    async def _update(self) -> None:
        """One update: the model call (if the session needs one), then its events queued."""
        session = self.session
        request = session.start_update()
        self._progress.set()  # the inbox went to the processor: reading may go on
        result = None
        if request is not None:
            self._call = asyncio.ensure_future(self.engine.transcribe(request, since=session.update_since))
            try:
                result = await self._call
            except asyncio.CancelledError:
                if self.aborted and self._call.cancelled():
                    return  # withdrawn by abort(): nobody wants the result
                raise
            finally:
                self._call = None
        if self.aborted:
            return
        committed, partial = len(session.stats.latencies), len(session.stats.partial_latencies)
        now = asyncio.get_running_loop().time()
        self.post(session.complete_update(result.transcription if result else None, now))
        self._observe(result, committed, partial)
        self._progress.set()

    def _observe(self, result: InferenceResult | None, committed: int, partial: int) -> None:
        """Report one completed update (and the latencies it added) to admission and the metrics."""
        stats, sid = self.session.stats, self.session_id
        self.engine.admission.observe_committed(stats.latencies[committed:])
        if self.metrics is None:
            return
        if result is not None:
            self.metrics.observe_update(sid, result.queued_s, result.inference_s, stats.last_chunk_s)
        self.metrics.observe_committed(sid, stats.latencies[committed:])
        for latency in stats.partial_latencies[partial:]:
            self.metrics.observe_partial(sid, latency)
