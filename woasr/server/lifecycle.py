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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Protocol

from woasr.protocol.commands import Command
from woasr.protocol.ending import Ending, InputEnded
from woasr.protocol.events import CAPACITY, Error, Event
from woasr.server.config import ServerConfig
from woasr.server.runner import SessionRunner
from woasr.server.service import StreamingService

log = logging.getLogger("woasr.session")

Input = bytes | Command | Error | InputEnded
"""What a connection reads: audio, a client command, bad input to answer, or the end of its input."""


class PeerGone(ConnectionError):
    """The peer went away (a close frame, a reset): nothing more can be sent."""


class Connection(Protocol):
    """What a transport provides for one client connection."""

    transport: str
    """Short name for session ids, metrics and logs (``tcp``, ``ws``)."""
    peer: str | None
    """Address and port, for the logs."""
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


async def serve_session(service: StreamingService, connection: Connection) -> None:
    """Serve one connection as one session, from admission to close."""
    await service.wait_ready()
    if service.tokens.required and not service.tokens.accepts(await connection.token()):
        service.refuse_unauthorized(connection.transport, connection.address)
        await connection.send([Error("unauthorized", "a valid token is required (see docs/protocol.md, 'Auth')")])
        await connection.close(Ending.UNAUTHORIZED, "unauthorized: a valid token is required")
        return
    if refusal := service.refusal(connection.transport, connection.address):
        await connection.send([refusal])
        ending = Ending.REFUSED if refusal.code == CAPACITY else Ending.SHUTDOWN
        await connection.close(ending, "try again later" if ending is Ending.REFUSED else "server shutting down")
        return
    runner = service.new_runner(connection.transport, connection.send)
    with service.track_session(runner, connection.address):
        log.info("session %s start peer=%s active=%d", runner.session_id, connection.peer, service.active_sessions)
        runner.post([service.ready_event(runner)])
        reading = asyncio.create_task(_read_inputs(connection, runner, service.config),
                                      name=f"read-{runner.session_id}")
        ending, reason = Ending.FINISHED, "finished"
        try:
            await runner.run()
            if reading.done() and not reading.cancelled():
                ending, reason = reading.result()
            if runner.aborted:
                ending = Ending.GONE
            elif service.draining and ending is Ending.FINISHED:
                ending, reason = Ending.SHUTDOWN, "server shutting down"
        except ConnectionError as exc:
            ending, reason = Ending.GONE, f"disconnected while sending ({exc or type(exc).__name__})"
        except Exception as exc:  # noqa: BLE001 - a failed session must not take the server with it
            ending, reason = Ending.FAILED, f"server error ({type(exc).__name__})"
            log.exception("session %s failed", runner.session_id)
            await _tell_quietly(connection, Error("server_error", "the server failed to transcribe this session; "
                                                  "it was logged. Audio sent after the last final was not processed"))
        finally:
            reading.cancel()
            _log_end(runner, connection.peer, reason)
            await connection.close(ending, reason)


async def _read_inputs(connection: Connection, runner: SessionRunner, config: ServerConfig) -> tuple[Ending, str]:
    """Feed the session until its input ends; how it ended, for the close and the log.

    Backpressure: while the session holds ``max_backlog_s`` of unprocessed audio the
    connection is not read, so the sender's own flow control slows it and nothing is
    dropped. Idle: the wait for input is bounded by :class:`_IdleClock`.
    """
    session = runner.session
    idle = _IdleClock(config.idle_timeout)
    try:
        while True:
            await runner.backlog_below(config.max_backlog_s)
            try:
                inputs = await idle.wait_for(connection.receive(), session.stats.audio_s)
            except TimeoutError:
                return Ending.IDLE, f"idle for {config.idle_timeout:g} s (no audio)"
            for item in inputs:
                if isinstance(item, InputEnded):
                    runner.post([item.error] if item.error else [])
                    return item.ending, item.reason
                _feed(runner, item)
            runner.wake()
    except ConnectionError as exc:
        if not session.closed:  # nobody to send the last finals to
            runner.abort()
        return Ending.GONE, str(exc) if isinstance(exc, PeerGone) else f"disconnected ({type(exc).__name__})"
    finally:
        session.close()
        runner.wake()


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


async def _tell_quietly(connection: Connection, error: Error) -> None:
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
