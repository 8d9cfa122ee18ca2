"""TCP transport (port 43007): moves raw PCM16LE in and committed lines out.

The wire format is :mod:`woasr.protocol.tcp`; the session is served by
:func:`woasr.server.lifecycle.serve_session`. Here: reading with an idle
timeout, a half-close as the end of the audio, writing lines.
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

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle_timeout: float) -> None:
        self.reader, self.writer = reader, writer
        self.idle_timeout = idle_timeout
        self.peer = str(writer.get_extra_info("peername"))

    async def receive(self) -> Input:
        try:
            data = await asyncio.wait_for(self.reader.read(READ_SIZE), self.idle_timeout)
        except TimeoutError:
            return InputEnded(Ending.IDLE, f"idle for {self.idle_timeout:g} s")
        return data or InputEnded(Ending.FINISHED, "finished")

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


async def start_tcp_server(service: StreamingService, host: str, port: int, idle_timeout: float) -> asyncio.Server:
    """Listen on ``host:port``; every client gets its own session on the shared service."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_session(service, TcpConnection(reader, writer, idle_timeout))

    return await asyncio.start_server(handle, host, port)
