"""A loopback TCP proxy that can cut every connection through it abruptly (fault injection)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

from tests.servers import free_port


class CuttingProxy:
    """Forwards connections on :attr:`port` to ``target``; :meth:`cut` resets them all at once.

    Runs its own event loop in a thread, so sync tests (subprocess clients, a browser) can use it.
    A cut sends a TCP RST both ways: no close frame, no FIN, as when a network drops.
    """

    def __init__(self, target: int, later: int | None = None) -> None:
        """``later``: where connections go after the first cut (a front-end process other than the first's)."""
        self.target = target
        self.later = later
        self.connections = 0
        self.port = free_port()
        self.cuts = 0
        self._open: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, float]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def oldest_age(self) -> float:
        """Seconds the oldest open connection has been up (0: none is open)."""
        now = time.monotonic()
        return max((now - opened for _, _, opened in list(self._open)), default=0.0)

    def cut(self) -> int:
        """Reset every open connection; how many there were."""
        return asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    async def _cut(self) -> int:
        pairs, self._open = self._open, []
        for pair in pairs:
            for writer in pair[:2]:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
        self.cuts += bool(pairs)
        return len(pairs)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        target = self.later if self.cuts and self.later is not None else self.target
        self.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        pair = (client_writer, server_writer, time.monotonic())
        self._open.append(pair)
        try:
            await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))
        finally:
            if pair in self._open:
                self._open.remove(pair)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
