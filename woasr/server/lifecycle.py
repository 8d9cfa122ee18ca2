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
from typing import Protocol

from woasr.protocol.commands import Command
from woasr.protocol.ending import Ending, InputEnded
from woasr.protocol.events import CAPACITY, Error, Event
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

    async def receive(self) -> Input:
        """The next input; raises :class:`PeerGone` (or another ``ConnectionError``) when the peer left."""
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
    if refusal := service.refusal(connection.transport):
        await connection.send([refusal])
        ending = Ending.REFUSED if refusal.code == CAPACITY else Ending.SHUTDOWN
        await connection.close(ending, "try again later" if ending is Ending.REFUSED else "server shutting down")
        return
    runner = service.new_runner(connection.transport, connection.send)
    with service.track_session(runner):
        log.info("session %s start peer=%s active=%d", runner.session_id, connection.peer, service.active_sessions)
        runner.post([service.ready_event(runner)])
        reading = asyncio.create_task(_read_inputs(connection, runner), name=f"read-{runner.session_id}")
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
        except Exception:
            ending, reason = Ending.FAILED, Ending.FAILED.value
            log.exception("session %s failed", runner.session_id)
        finally:
            reading.cancel()
            _log_end(runner, connection.peer, reason)
            await connection.close(ending, reason)


async def _read_inputs(connection: Connection, runner: SessionRunner) -> tuple[Ending, str]:
    """Feed the session until its input ends; how it ended, for the close and the log."""
    session = runner.session
    loop = asyncio.get_running_loop()
    try:
        while True:
            item = await connection.receive()
            if isinstance(item, InputEnded):
                runner.post([item.error] if item.error else [])
                return item.ending, item.reason
            if isinstance(item, bytes):
                runner.post(session.receive_audio(item, loop.time()))
            elif isinstance(item, Error):
                log.info("session %s: %s: %s", runner.session_id, item.code, item.message)
                runner.post([item])
            else:
                runner.post(session.receive_command(item))
            runner.wake()
    except ConnectionError as exc:
        if not session.closed:  # nobody to send the last finals to
            runner.abort()
        return Ending.GONE, str(exc) if isinstance(exc, PeerGone) else f"disconnected ({type(exc).__name__})"
    finally:
        session.close()
        runner.wake()


def _log_end(runner: SessionRunner, peer: str | None, reason: str) -> None:
    stats = runner.session.stats
    log.info(
        "session %s end peer=%s (%s) audio=%.1fs words=%d updates=%d latency_p50=%sms p95=%sms",
        runner.session_id, peer, reason, stats.audio_s, stats.committed_words, stats.updates,
        stats.percentile_ms("p50"), stats.percentile_ms("p95"),
    )
