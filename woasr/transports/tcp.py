"""TCP transport (port 43007): raw PCM16LE mono 16 kHz in, committed lines out.

Each line is ``<beg_ms> <end_ms> <text>\\n`` (UTF-8). When the client shuts
down its writing side the server finishes the session, sends the remaining
lines and closes. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

from woasr.engine import LocalEngine
from woasr.protocol.events import Error, Event, Final
from woasr.protocol.session import StreamSession

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
_session_ids = itertools.count(1)


def format_line(event: Event) -> bytes | None:
    """The wire form of an event on TCP: finals as lines, errors as ``ERROR`` lines."""
    if isinstance(event, Final):
        return f"{event.beg_ms} {event.end_ms} {event.text}\n".encode()
    if isinstance(event, Error):
        return f"ERROR {event.code} {event.message}\n".encode()
    return None


class TCPServer:
    """Accepts any number of clients; each gets its own :class:`StreamSession`."""

    def __init__(
        self, new_session: Callable[[], StreamSession], engine: LocalEngine, idle_timeout: float = 60.0
    ) -> None:
        self.new_session = new_session
        self.engine = engine
        self.idle_timeout = idle_timeout
        self.active = 0

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self.handle, host, port)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sid = f"tcp-{next(_session_ids)}"
        peer = writer.get_extra_info("peername")
        session = self.new_session()
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()
        ending = "finished"
        aborted = False
        self.active += 1
        log.info("session %s start peer=%s active=%d", sid, peer, self.active)

        async def read_audio() -> None:
            nonlocal ending, aborted
            try:
                while data := await asyncio.wait_for(reader.read(READ_SIZE), self.idle_timeout):
                    session.receive_audio(data, loop.time())
                    arrived.set()
            except TimeoutError:
                ending = f"idle for {self.idle_timeout:g} s"
            except ConnectionError as exc:
                ending = f"disconnected ({type(exc).__name__})"
                aborted = True  # nobody to send the last lines to
            finally:
                session.close()
                arrived.set()

        reading = asyncio.create_task(read_audio())
        try:
            while not session.finished and not aborted:
                await arrived.wait()
                arrived.clear()
                while session.due() and not aborted:
                    update = await self.engine.run(session.start_update())
                    await self._send(writer, session.complete_update(update, loop.time()))
        except ConnectionError as exc:
            ending = f"disconnected while sending ({type(exc).__name__})"
        except Exception:
            ending = "server error"
            log.exception("session %s failed", sid)
        finally:
            reading.cancel()
            self.active -= 1
            stats = session.stats
            log.info(
                "session %s end peer=%s (%s) audio=%.1fs words=%d updates=%d latency_p50=%sms p95=%sms",
                sid, peer, ending, stats.audio_s, stats.committed_words, stats.updates,
                stats.percentile_ms(50), stats.percentile_ms(95),
            )
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, events: list[Event]) -> None:
        lines = [line for line in map(format_line, events) if line]
        if lines and not writer.is_closing():
            writer.write(b"".join(lines))
            await writer.drain()
