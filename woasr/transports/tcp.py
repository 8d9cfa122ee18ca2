"""TCP transport (port 43007): raw PCM16LE mono 16 kHz in, committed lines out.

Each line is ``<beg_ms> <end_ms> <text>\\n`` (UTF-8). When the client shuts
down its writing side the server finishes the session, sends the remaining
lines and closes. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from woasr.protocol.events import Error, Event, Final
from woasr.transports.runner import log_session_end, log_session_start

if TYPE_CHECKING:
    from woasr.server import StreamingService

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


def format_line(event: Event) -> bytes | None:
    """The wire form of an event on TCP: finals as lines, errors as ``ERROR`` lines."""
    if isinstance(event, Final):
        return f"{event.beg_ms} {event.end_ms} {event.text}\n".encode()
    if isinstance(event, Error):
        return f"ERROR {event.code} {event.message}\n".encode()
    return None


class TCPServer:
    """Accepts any number of clients; each gets its own session on the shared service."""

    def __init__(self, service: StreamingService, idle_timeout: float = 60.0) -> None:
        self.service = service
        self.idle_timeout = idle_timeout

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self.handle, host, port)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        await self.service.wait_ready()  # until then the client's audio waits in the socket
        if refusal := self.service.refusal("tcp"):
            writer.write(format_line(refusal) or b"")
            writer.close()
            return
        loop = asyncio.get_running_loop()
        ending = "finished"

        async def send(events: list[Event]) -> None:
            lines = [line for line in map(format_line, events) if line]
            if lines and not writer.is_closing():
                writer.write(b"".join(lines))
                await writer.drain()

        runner = self.service.new_runner("tcp", send)
        sid, session = runner.session_id, runner.session

        async def read_audio() -> None:
            nonlocal ending
            try:
                while data := await asyncio.wait_for(reader.read(READ_SIZE), self.idle_timeout):
                    runner.post(session.receive_audio(data, loop.time()))
                    runner.wake()
            except TimeoutError:
                ending = f"idle for {self.idle_timeout:g} s"
            except ConnectionError as exc:
                ending = f"disconnected ({type(exc).__name__})"
                runner.abort()  # nobody to send the last lines to
            finally:
                session.close()
                runner.wake()

        with self.service.track_session(runner):
            log_session_start(sid, peer, self.service.active_sessions)
            reading = asyncio.create_task(read_audio())
            try:
                await runner.run()
            except ConnectionError as exc:
                ending = f"disconnected while sending ({type(exc).__name__})"
            except Exception:
                ending = "server error"
                log.exception("session %s failed", sid)
            finally:
                reading.cancel()
                log_session_end(sid, peer, ending, session)
                writer.close()
                try:
                    await writer.wait_closed()
                except ConnectionError:
                    pass
