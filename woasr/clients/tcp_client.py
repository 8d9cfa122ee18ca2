"""The TCP transport for the shared reconnect loop (:mod:`woasr.clients.reconnect`).

Raw PCM16LE goes out, ``<beg_ms> <end_ms> <text>`` lines (and ``ERROR <code>
<message>`` lines) come back; a half-close asks the server to finish. TCP
carries no acknowledgement, so audio written to a connection just before it
broke may be lost, and a reconnect starts a new server session whose
timestamps restart at 0. The WebSocket transport (:mod:`woasr.clients.ws_client`)
is the lossless one. A server that requires a token gets the line ``AUTH <token>`` first.
"""

from __future__ import annotations

import asyncio

from woasr.clients.reconnect import Connection, Listener, Rejected
from woasr.protocol.events import Error, Final
from woasr.protocol.tcp import LineDecoder, encode_auth


class TcpTransport:
    """Connections to ``host:port``; every line they receive goes to ``listener``.

    With a ``token``, each connection (every reconnect too) starts with the line ``AUTH <token>``;
    ``ValueError`` at once for a token that line cannot carry.
    """

    def __init__(self, host: str, port: int, listener: Listener, token: str | None = None) -> None:
        self.host, self.port = host, port
        self.address = f"{host}:{port}"
        self.listener = listener
        self.auth = encode_auth(token) if token is not None else b""

    async def connect(self) -> TcpConnection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        if self.auth:
            writer.write(self.auth)  # goes out with the first audio block
        return TcpConnection(reader, writer, self.listener)


class TcpConnection(Connection):
    """One TCP connection: one server session, times relative to its start."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: Listener) -> None:
        self.reader, self.writer, self.listener = reader, writer, listener
        self.decoder = LineDecoder()

    async def send(self, offset: int, block: bytes) -> None:
        self.writer.write(block)
        await self.writer.drain()

    async def end(self) -> None:
        self.writer.write_eof()

    async def receive(self) -> None:
        while data := await self.reader.read(64 * 1024):
            for event in self.decoder.receive_data(data):
                self._dispatch(event)

    def _dispatch(self, event: Final | Error) -> None:
        if isinstance(event, Error):
            self.listener.error(event.code, event.message)
            if event.code == "unauthorized":
                raise Rejected(f"the server refused the token: {event.message}")
            return
        self.progressed = True
        self.listener.final(event.beg_ms, event.end_ms, event.text)

    async def close(self) -> None:
        self.writer.close()
