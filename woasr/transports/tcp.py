"""TCP transport (port 43007): moves raw PCM16LE in and committed lines out.

The wire format is :mod:`woasr.protocol.tcp`; the session is served by
:func:`woasr.server.lifecycle.serve_session` (which also times out idle
clients). Here: reading, a half-close as the end of the audio, writing lines.
"""

from __future__ import annotations

import asyncio

from woasr.protocol.ending import Ending, InputEnded
from woasr.protocol.events import Event
from woasr.protocol.tcp import encode_events
from woasr.server.lifecycle import Input, serve_session
from woasr.server.service import StreamingService

READ_SIZE = 64 * 1024


class TcpConnection:
    """One client socket as a :class:`~woasr.server.lifecycle.Connection`."""

    transport = "tcp"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        peer = writer.get_extra_info("peername")
        self.peer = str(peer)
        self.address = str(peer[0]) if isinstance(peer, tuple) else None

    async def token(self) -> str | None:
        raise NotImplementedError("TCP authentication: a first line AUTH <token>")

    async def receive(self) -> tuple[Input]:
        data = await self.reader.read(READ_SIZE)
        return (data or InputEnded(Ending.FINISHED, "finished"),)

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


async def start_tcp_server(service: StreamingService, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port``; every client gets its own session on the shared service."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_session(service, TcpConnection(reader, writer))

    return await asyncio.start_server(handle, host, port)
