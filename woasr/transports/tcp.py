"""TCP transport (port 43007): moves raw PCM16LE in and committed lines out.

The wire format is :mod:`woasr.protocol.tcp`; the session is served by
:func:`woasr.server.lifecycle.serve_session` (which also times out idle
clients). Here: reading, a half-close as the end of the audio, writing lines.
"""

from __future__ import annotations

import asyncio
import logging

from woasr.protocol.ending import Ending, InputEnded
from woasr.protocol.events import Event
from woasr.protocol.tcp import MAX_AUTH_LINE, decode_auth, encode_events
from woasr.server.lifecycle import Input, serve_session
from woasr.server.service import StreamingService

log = logging.getLogger("woasr.session")

READ_SIZE = 64 * 1024
AUTH_TIMEOUT_S = 5.0
"""How long a client that must authenticate has to send its ``AUTH <token>`` line."""


class TcpConnection:
    """One client socket as a :class:`~woasr.server.lifecycle.Connection`."""

    transport = "tcp"
    resumable = False

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        peer = writer.get_extra_info("peername")
        self.peer = str(peer)
        self.address = str(peer[0]) if isinstance(peer, tuple) else None

    async def token(self) -> str | None:
        """The token of the first line, ``AUTH <token>``; None if the client sends something else,
        nothing within :data:`AUTH_TIMEOUT_S`, or no newline within :data:`MAX_AUTH_LINE` bytes.

        Bytes read past the line are the client's first audio: kept for :meth:`receive`.
        """
        buffer = b""
        try:
            async with asyncio.timeout(AUTH_TIMEOUT_S):
                while b"\n" not in buffer and len(buffer) <= MAX_AUTH_LINE:
                    if not (data := await self.reader.read(READ_SIZE)):
                        break
                    buffer += data
        except (TimeoutError, ConnectionError):
            pass
        self._first_read = False
        line, newline, self._pending = buffer.partition(b"\n")
        return decode_auth(line) if newline else None

    _pending = b""
    """Audio that arrived with the AUTH line, returned by the first :meth:`receive`."""
    _first_read = True
    """No byte read yet (and no token asked for): an AUTH line may still come."""

    async def receive(self) -> tuple[Input]:
        if self._pending:
            data, self._pending = self._pending, b""
            return (data,)
        data = await self.reader.read(READ_SIZE)
        if self._first_read:
            self._first_read = False
            data = self._without_auth_line(data)
            if not data:
                return await self.receive()
        return (data or InputEnded(Ending.FINISHED, "finished"),)

    def _without_auth_line(self, data: bytes) -> bytes:
        """The first read without a leading ``AUTH <token>`` line: a client configured with a token
        talking to a server without authentication must not have that line taken for audio."""
        line, newline, rest = data.partition(b"\n")
        if newline and decode_auth(line) is not None:
            log.info("tcp %s: ignored its AUTH line (this server requires no token)", self.peer)
            return rest
        return data

    async def send(self, events: list[Event]) -> None:
        data = encode_events(events)
        if data and not self.writer.is_closing():
            self.writer.write(data)
            await self.writer.drain()

    async def close(self, ending: Ending, reason: str) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def start_tcp_server(service: StreamingService, host: str, port: int,
                           reuse_port: bool = False) -> asyncio.Server:
    """Listen on ``host:port``; every client gets its own session on the shared service. ``reuse_port``:
    other processes listen on the same port too (``woasr serve --processes``)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_session(service, TcpConnection(reader, writer))

    return await asyncio.start_server(handle, host, port, reuse_port=reuse_port or None)
