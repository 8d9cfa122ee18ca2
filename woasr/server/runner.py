"""Drives one session for any transport: its model calls on the engine, its events out.

A transport reads its socket in one task and feeds the session (``post`` the
events that feeding returns, ``wake`` the runner); :meth:`SessionRunner.run`
does everything else, the same way for TCP and WebSocket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from woasr.engine import InferenceEngine, InferenceResult
from woasr.engine.admission import Admission
from woasr.metrics import ServerMetrics
from woasr.protocol.events import Event
from woasr.protocol.session import StreamSession

log = logging.getLogger("woasr.session")

Send = Callable[[list[Event]], Awaitable[None]]


class SessionRunner:
    """Runs a session's updates as they fall due and sends every event, in order."""

    def __init__(
        self,
        session_id: str,
        session: StreamSession,
        engine: InferenceEngine,
        send: Send,
        metrics: ServerMetrics | None = None,
        transport: str = "",
        admission: Admission | None = None,
    ) -> None:
        self.session_id = session_id
        self.session = session
        self.engine = engine
        self.send = send
        self.metrics = metrics
        self.transport = transport
        self.admission = admission
        """Told every committed word's latency, to refuse sessions the server cannot serve in time."""
        self.aborted = False
        self._outbox: list[Event] = []
        self._wake = asyncio.Event()

    def post(self, events: list[Event]) -> None:
        """Queue events the transport got from the session (e.g. errors about its input)."""
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
        """The peer is gone: stop without finishing or sending anything more."""
        self.aborted = True
        self._wake.set()

    async def run(self) -> None:
        """Until the session is finished (every received sample transcribed) or aborted."""
        loop = asyncio.get_running_loop()
        session = self.session
        while not self.aborted:
            if self._outbox:
                events, self._outbox = self._outbox, []
                await self.send(events)
                continue
            if session.finished:
                return
            if session.due():
                request = session.start_update()
                result = None
                if request is not None:
                    result = await self.engine.transcribe(request, since=session.update_since)
                if not self.aborted:
                    committed, partial = len(session.stats.latencies), len(session.stats.partial_latencies)
                    self.post(session.complete_update(result.transcription if result else None, loop.time()))
                    self._observe(result, committed, partial)
                continue
            await self._wake.wait()
            self._wake.clear()


    def _observe(self, result: InferenceResult | None, committed: int, partial: int) -> None:
        """Report one completed update (and the latencies it added) to admission and the metrics."""
        stats, sid = self.session.stats, self.session_id
        if self.admission is not None:
            self.admission.observe_committed(stats.latencies[committed:])
        if self.metrics is None:
            return
        if result is not None:
            self.metrics.observe_update(sid, result.queued_s, result.inference_s, stats.last_chunk_s)
        self.metrics.observe_committed(sid, stats.latencies[committed:])
        for latency in stats.partial_latencies[partial:]:
            self.metrics.observe_partial(sid, latency)


def log_session_start(session_id: str, peer: object, active: int) -> None:
    log.info("session %s start peer=%s active=%d", session_id, peer, active)


def log_session_end(session_id: str, peer: object, ending: str, session: StreamSession) -> None:
    stats = session.stats
    log.info(
        "session %s end peer=%s (%s) audio=%.1fs words=%d updates=%d latency_p50=%sms p95=%sms",
        session_id, peer, ending, stats.audio_s, stats.committed_words, stats.updates,
        stats.percentile_ms(50), stats.percentile_ms(95),
    )
