"""Session resume: a WebSocket session outlives a dropped connection for ``--resume-window``.

A session's events go out through its :class:`Outlet`, which sends them to the connection
attached now and keeps the last :data:`KEEP_FINALS` finals. When the connection drops
without the client's ``close``, the session is *detached*: it goes on transcribing what it
received (its events are only kept), and :class:`ResumableSessions` holds it for the window.
A new connection whose first message is ``resume`` (the session id, the secret
``resume_token`` of its ``ready``, the ``seq`` of the last final the client got) is attached
to it: it is told from which sample to resend (the server holds everything before) and gets
the finals it missed. Past the window, with a wrong token, or after a server restart the
session is gone, and the client is told ``resume_failed``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections import OrderedDict, deque
from typing import Protocol

from woasr.protocol.commands import Resume
from woasr.protocol.ending import Ending
from woasr.protocol.events import RESUME_FAILED, Error, Event, Final, Resumed, echo
from woasr.server.runner import SessionRunner

log = logging.getLogger("woasr.session")

KEEP_FINALS = 512
"""Finals a session keeps for a resumed connection (a few words each: memory stays small)."""
MAX_DETACHED = 32
"""Detached sessions kept at once; past it the one detached longest is given up at once, so that
connecting and dropping in a loop cannot pile up sessions (each holds up to a buffer of audio)."""


class Sink(Protocol):
    """A connection as the outlet uses it (:class:`woasr.server.lifecycle.Connection`)."""

    async def send(self, events: list[Event]) -> None: ...

    async def close(self, ending: Ending, reason: str) -> None: ...


class Outlet:
    """A session's way out: the connection attached now (None while detached) and its last finals.

    When ``resumable`` is false (TCP, ``--resume-window 0``) a failed send raises, as it would
    without an outlet; otherwise the connection is only let go of and its finals stay kept.
    """

    def __init__(self, resumable: bool, keep: int = KEEP_FINALS) -> None:
        self.resumable = resumable
        self.sink: Sink | None = None
        self.attached = asyncio.Event()
        self._finals: deque[Final] = deque(maxlen=keep if resumable else 0)
        self._lock = asyncio.Lock()
        """Held while sending, so that a resumed connection's replay and new events never interleave."""

    def connect(self, sink: Sink) -> None:
        """The session's first connection."""
        self.sink = sink
        self.attached.set()

    def detach(self) -> Sink | None:
        """Let go of the attached connection (returned, if any)."""
        sink, self.sink = self.sink, None
        self.attached.clear()
        return sink

    async def send(self, events: list[Event]) -> None:
        """The runner's way to send (a :data:`~woasr.server.runner.Send`)."""
        async with self._lock:
            self._finals.extend(event for event in events if isinstance(event, Final))
            sink = self.sink
            if sink is None:
                return
            try:
                await sink.send(events)
            except ConnectionError:
                if not self.resumable:
                    raise
                if self.sink is sink:
                    self.detach()

    def missed(self, last_seq: int, next_seq: int) -> list[Final] | None:
        """The finals after ``last_seq``; None if some of them are no longer kept, or were never sent."""
        if last_seq >= next_seq:
            return None
        kept = [final for final in self._finals if final.seq > last_seq]
        return kept if len(kept) == next_seq - 1 - last_seq else None

    async def attach(self, sink: Sink, resumed: Resumed, missed: list[Final]) -> None:
        """Attach a resuming connection: ``resumed``, then the finals it missed, then what comes."""
        async with self._lock:
            await sink.send([resumed, *missed])
            self.sink = sink
            self.attached.set()


class Resumable(Protocol):
    """What the registry needs of a live session."""

    runner: SessionRunner
    outlet: Outlet
    resume_token: str | None
    address: str | None
    """The client address the session is counted for."""
    lost: str
    """Why its connection was lost (for the log)."""


class ResumableSessions:
    """The server's resumable sessions, by id; detached ones are given up after ``window`` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._sessions: dict[str, Resumable] = {}
        self._detached: OrderedDict[str, asyncio.TimerHandle] = OrderedDict()

    @property
    def detached(self) -> int:
        """Sessions without a connection, waiting for a resume."""
        return len(self._detached)

    def detached_from(self, address: str | None) -> int:
        """Detached sessions counted for ``address``."""
        return sum(1 for session_id in self._detached if self._sessions[session_id].address == address)

    def open(self, live: Resumable) -> str | None:
        """Register a session that may be resumed; its secret token (None when resume is off)."""
        if self.window <= 0:
            return None
        self._sessions[live.runner.session_id] = live
        return secrets.token_urlsafe(18)

    def forget(self, live: Resumable) -> None:
        """The session ended for good."""
        session_id = live.runner.session_id
        self._sessions.pop(session_id, None)
        if (timer := self._detached.pop(session_id, None)) is not None:
            timer.cancel()

    def detach(self, live: Resumable) -> bool:
        """Its connection dropped: keep it for the window, then abort it. False if it is not kept."""
        session_id = live.runner.session_id
        if session_id not in self._sessions:
            return False
        if session_id in self._detached:
            return True
        while len(self._detached) >= MAX_DETACHED:
            oldest = next(iter(self._detached))
            log.warning("session %s: given up before its resume window ended (%d sessions detached)",
                        oldest, MAX_DETACHED)
            self._expire(oldest)
        loop = asyncio.get_running_loop()
        self._detached[session_id] = loop.call_later(self.window, self._expire, session_id)
        return True

    def give_up_all(self) -> None:
        """Shutdown: no detached session waits for a resume any longer."""
        for session_id in list(self._detached):
            self._expire(session_id, "server shutting down")

    def _expire(self, session_id: str, why: str | None = None) -> None:
        if (timer := self._detached.pop(session_id, None)) is not None:
            timer.cancel()
        if (live := self._sessions.pop(session_id, None)) is not None:
            live.lost = f"{why or f'not resumed within {self.window:g} s'}: {live.lost}"
            live.runner.abort()

    def claim(self, request: Resume) -> tuple[Resumable, list[Final]] | Error:
        """The session ``request`` resumes and the finals to replay, or why it cannot be resumed.

        A session still attached to a connection (one the server has not yet seen drop) is taken
        over: the token proves the client is its owner."""
        live = self._sessions.get(request.session_id)
        token = live.resume_token if live is not None else None
        if live is None or token is None or not hmac.compare_digest(token.encode(), request.token.encode()):
            return Error(RESUME_FAILED, f"no session {echo(request.session_id)} to resume with this token (it "
                                        f"ended, its {self.window:g} s window passed, or the server restarted); "
                                        "this connection goes on as the new session of its ready")
        session = live.runner.session
        missed = live.outlet.missed(request.last_seq, session.next_seq)
        if missed is None:
            return Error(RESUME_FAILED, f"last_seq {request.last_seq} does not fit session {request.session_id}: "
                                        f"its finals run to seq {session.next_seq - 1}, the server keeps the last "
                                        f"{KEEP_FINALS}; this connection goes on as the new session of its ready")
        if (timer := self._detached.pop(request.session_id, None)) is not None:
            timer.cancel()
        return live, missed
