"""The one session lifecycle every streaming transport goes through.

A transport wraps its connection in a :class:`Connection` (read one input,
write events, close) and calls :func:`serve_session`, which does the rest in
the same order for all of them:

1. wait for the model (the client's audio waits in its socket meanwhile);
2. refuse (shutting down, at capacity) or admit: a session and its runner;
3. greet (:class:`~woasr.protocol.events.Ready`; TCP writes nothing for it);
4. read inputs in one task, feeding the session, while the runner runs the
   updates and sends the events;
5. end: finish or abort, log one line, close the connection as the ending says.

A WebSocket session outlives a dropped connection (:mod:`woasr.server.resume`):
it is detached, and a new connection whose first message is ``resume`` is
attached to it instead of its own new session, and feeds it from then on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from woasr.protocol.commands import Command, Resume
from woasr.protocol.ending import Ending, InputEnded
from woasr.protocol.events import CAPACITY, Error, Event, Final, Resumed
from woasr.server.config import ServerConfig
from woasr.server.resume import Outlet, Resumable, Sink
from woasr.server.runner import SessionRunner
from woasr.server.service import StreamingService

log = logging.getLogger("woasr.session")

Input = bytes | Command | Error | InputEnded
"""What a connection reads: audio, a client command, bad input to answer, or the end of its input."""


class PeerGone(ConnectionError):
    """The peer went away (a close frame, a reset): nothing more can be sent.

    ``deliberate``: the client closed on purpose (a close frame saying so), so its session is not
    kept for a resume; a reset or a missing close frame is a drop, and it is."""

    def __init__(self, reason: str, deliberate: bool = False) -> None:
        super().__init__(reason)
        self.deliberate = deliberate


class Connection(Protocol):
    """What a transport provides for one client connection."""

    transport: str
    """Short name for session ids, metrics and logs (``tcp``, ``ws``)."""
    peer: str | None
    """Address and port, for the logs."""
    resumable: bool
    """Whether a session of this transport may be resumed on another connection after a drop."""
    address: str | None
    """The client's address alone, for the per-address session limit."""

    async def token(self) -> str | None:
        """The client's credentials, when the server requires a token (None: none given).

        Only called when authentication is on, before anything else is read."""
        ...

    async def receive(self) -> Sequence[Input]:
        """The inputs of the next read (at least one); raises :class:`PeerGone` (or another
        ``ConnectionError``) when the peer left. Must be safe to cancel (the idle timeout does)."""
        ...

    async def send(self, events: list[Event]) -> None:
        """Write events in the transport's wire format (skipping those it does not carry)."""
        ...

    async def close(self, ending: Ending, reason: str) -> None:
        """Close the connection as ``ending`` says (``reason``: for the peer, where the transport can
        tell it); must not raise if the peer is already gone."""
        ...


@dataclass(eq=False)
class _LiveSession:
    """A session across the connections that serve it: one, unless a WebSocket client resumed it."""

    runner: SessionRunner
    outlet: Outlet
    idle: _IdleClock
    peer: str | None
    address: str | None
    resume_token: str | None = None
    reading: asyncio.Task[_ReadOutcome] | None = None
    """The task reading the attached connection."""
    input_ending: tuple[Ending, str] | None = None
    """How the client ended its input (None: it sent ``close``, or has not ended it)."""
    lost: str = "disconnected"
    """Why the last connection was lost: the log's reason if the session ends without a resume."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class _Lost:
    """The connection is gone: dropped (resumable), or closed on purpose by the client."""

    reason: str
    deliberate: bool = False


_ReadOutcome = tuple[Ending, str] | Resume | _Lost


async def serve_session(service: StreamingService, connection: Connection) -> None:
    """Serve one connection: as a new session, or as the resumption of a dropped one."""
    await service.wait_ready()
    if not await _admitted(service, connection):
        return
    config = service.config
    outlet = Outlet(connection.resumable and config.resume_window > 0)
    live = _LiveSession(service.new_runner(connection.transport, outlet.send), outlet,
                        _IdleClock(config.idle_timeout), connection.peer, connection.address)
    runner = live.runner
    with service.track_session(runner, connection.address):
        log.info("session %s start peer=%s active=%d", runner.session_id, connection.peer, service.active_sessions)
        live.resume_token = service.resumable.open(live) if outlet.resumable else None
        outlet.connect(connection)
        runner.post([service.ready_event(runner, live.resume_token)])
        running = asyncio.create_task(_run(service, live), name=f"session-{runner.session_id}")
        try:
            resumed = await _attend(service, live, connection, fresh=True)
            if resumed is not None:  # the new session received nothing: give it up
                live.lost = f"the client resumed {resumed.runner.session_id} instead"
                outlet.detach()
                runner.abort()
            await running
        finally:
            running.cancel()
    if resumed is not None:
        await _attend(service, resumed, connection, fresh=False)


async def _admitted(service: StreamingService, connection: Connection) -> bool:
    """Whether the connection may open a session; if not, it has been told why and closed."""
    if service.tokens.required and not service.tokens.accepts(await connection.token()):
        service.refuse_unauthorized(connection.transport, connection.address)
        await connection.send([Error("unauthorized", "a valid token is required (see docs/protocol.md, 'Auth')")])
        await connection.close(Ending.UNAUTHORIZED, "unauthorized: a valid token is required")
        return False
    if refusal := service.refusal(connection.transport, connection.address):
        await connection.send([refusal])
        ending = Ending.REFUSED if refusal.code == CAPACITY else Ending.SHUTDOWN
        await connection.close(ending, "try again later" if ending is Ending.REFUSED else "server shutting down")
        return False
    return True


async def _run(service: StreamingService, live: _LiveSession) -> None:
    """Run the session's updates until it is finished or given up, then close its connection."""
    runner, outlet = live.runner, live.outlet
    ending, reason = Ending.FINISHED, "finished"
    try:
        await runner.run()
        while outlet.resumable and outlet.sink is None and not runner.aborted:
            # Finished while detached: the client may come back for its last finals.
            await _first_of(outlet.attached.wait(), runner.wait_aborted())
        ending, reason = live.input_ending or (ending, reason)
        if runner.aborted:
            ending, reason = Ending.GONE, live.lost
        elif service.draining and ending is Ending.FINISHED:
            ending, reason = Ending.SHUTDOWN, "server shutting down"
    except ConnectionError as exc:
        ending, reason = Ending.GONE, f"disconnected while sending ({exc or type(exc).__name__})"
    except Exception as exc:  # noqa: BLE001 - a failed session must not take the server with it
        ending, reason = Ending.FAILED, f"server error ({type(exc).__name__})"
        log.exception("session %s failed", runner.session_id)
        if outlet.sink is not None:
            await _tell_quietly(outlet.sink, Error("server_error", "the server failed to transcribe this session; "
                                                   "it was logged. Audio sent after the last final was not processed"))
    finally:
        service.resumable.forget(live)
        if live.reading is not None:
            live.reading.cancel()
        _log_end(runner, live.peer, reason)
        if (sink := outlet.detach()) is not None:
            await sink.close(ending, reason)
        live.ended.set()


async def _attend(service: StreamingService, live: _LiveSession, connection: Connection,
                  fresh: bool) -> _LiveSession | None:
    """Feed ``live`` from ``connection`` until the input ends (then wait for the session's end, which
    closes the connection) or the connection drops (keep the session for a resume, or give it up).

    On a new session's connection (``fresh``) the first message may resume another session: that
    session is returned, attached to this connection.
    """
    runner = live.runner
    while True:
        live.reading = reading = asyncio.create_task(_read_inputs(connection, live, service.config, fresh),
                                                     name=f"read-{runner.session_id}")
        try:
            await _first_of(reading, live.ended.wait())
        finally:
            if not reading.done():
                reading.cancel()
        if not reading.done() or reading.cancelled():  # the session ended, or a resume took it over
            return None
        outcome = reading.result()
        if not isinstance(outcome, Resume):
            break
        fresh = False
        claimed = service.claim(outcome)
        if isinstance(claimed, Error):
            log.info("session %s: %s", runner.session_id, claimed.message)
            runner.post([claimed])
            continue
        if await _resume(service, *claimed, connection):
            return claimed[0]  # type: ignore[return-value]
        return None
    if live.ended.is_set():
        return None
    if isinstance(outcome, _Lost):
        live.lost = outcome.reason
        if live.outlet.sink is connection:
            live.outlet.detach()
        kept = live.outlet.resumable and not outcome.deliberate and not runner.aborted and not service.draining
        if kept and service.resumable.detach(live):
            log.info("session %s: connection lost (%s); kept %g s for a resume", runner.session_id, outcome.reason,
                     service.config.resume_window)
        elif not runner.session.closed:  # nobody to send the last finals to
            runner.abort()
        else:
            runner.wake()
        return None
    live.input_ending = outcome
    runner.session.close()
    runner.wake()
    await live.ended.wait()
    return None


async def _resume(service: StreamingService, live: Resumable, missed: list[Final], connection: Connection) -> bool:
    """Attach ``connection`` to the claimed session ``live``: whether it is attached (False: lost again)."""
    assert isinstance(live, _LiveSession)
    runner = live.runner
    if live.reading is not None:  # still attached to a connection the server has not seen drop
        live.reading.cancel()
    live.outlet.detach()
    resumed = Resumed(runner.session_id, runner.session.received_samples, len(missed))
    try:
        await live.outlet.attach(connection, resumed, missed)
    except ConnectionError as exc:
        live.lost = f"lost again while resuming ({exc})"
        service.resumable.detach(live)
        return False
    log.info("session %s resumed peer=%s from sample %d, %d final(s) replayed", runner.session_id,
             connection.peer, resumed.resume_from_sample, len(missed))
    return True


async def _first_of(*waits: Awaitable[object]) -> None:
    """Wait until one of ``waits`` is done; cancel the others (a task given is left alone)."""
    futures = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future, wait in zip(futures, waits, strict=True):
            if future is not wait:
                future.cancel()


async def _read_inputs(connection: Connection, live: _LiveSession, config: ServerConfig,
                       fresh: bool) -> _ReadOutcome:
    """Feed the session until its input ends or the connection drops; how it ended.

    Backpressure: while the session holds ``max_backlog_s`` of unprocessed audio the
    connection is not read, so the sender's own flow control slows it and nothing is
    dropped. Idle: the wait for input is bounded by the session's :class:`_IdleClock`.
    A ``resume`` is returned if it is a ``fresh`` connection's first message.
    """
    runner = live.runner
    session = runner.session
    try:
        while True:
            await runner.backlog_below(config.max_backlog_s)
            try:
                inputs = await live.idle.wait_for(connection.receive(), session.stats.audio_s)
            except TimeoutError:
                return Ending.IDLE, f"idle for {config.idle_timeout:g} s (no audio)"
            for item in inputs:
                if fresh and isinstance(item, Resume):
                    return item
                fresh = False
                if isinstance(item, InputEnded):
                    runner.post([item.error] if item.error else [])
                    return item.ending, item.reason
                _feed(runner, item)
            runner.wake()
    except ConnectionError as exc:
        if isinstance(exc, PeerGone):
            return _Lost(str(exc), exc.deliberate)
        return _Lost(f"disconnected ({type(exc).__name__})")


def _feed(runner: SessionRunner, item: bytes | Command | Error) -> None:
    """One input into the session; what it answers goes out through the runner."""
    session = runner.session
    if isinstance(item, bytes):
        runner.post(session.receive_audio(item, asyncio.get_running_loop().time()))
    elif isinstance(item, Error):
        log.info("session %s: %s: %s", runner.session_id, item.code, item.message)
        runner.post([item])
    else:
        runner.post(session.receive_command(item))


class _IdleClock:
    """Whether a client keeps sending audio: the time spent waiting for its input may run ahead
    of the audio it sent by at most ``timeout`` seconds.

    Bytes without audio (a sample now and then), commands and pings do not keep a session
    alive; a client that sent audio faster than real time has that much credit. Time the
    server spends not reading (backpressure) is not counted.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.waited_s = 0.0

    async def wait_for(self, receiving: Awaitable[Sequence[Input]], audio_s: float) -> Sequence[Input]:
        """``receiving``, or ``TimeoutError`` once the wait would exceed the client's budget."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget = self.timeout + audio_s - self.waited_s if self.timeout > 0 else None
        try:
            return await asyncio.wait_for(receiving, max(budget, 0.0) if budget is not None else None)
        finally:
            self.waited_s += loop.time() - started


async def _tell_quietly(connection: Sink, error: Error) -> None:
    """Send a last error if the peer can still hear it."""
    try:
        await connection.send([error])
    except Exception:  # noqa: BLE001 - the peer may be gone; the failure is logged already
        pass


def _log_end(runner: SessionRunner, peer: str | None, reason: str) -> None:
    stats = runner.session.stats
    log.info(
        "session %s end peer=%s (%s) audio=%.1fs words=%d updates=%d latency_p50=%sms p95=%sms",
        runner.session_id, peer, reason, stats.audio_s, stats.committed_words, stats.updates,
        stats.percentile_ms("p50"), stats.percentile_ms("p95"),
    )
