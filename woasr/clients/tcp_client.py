"""TCP streaming client with reconnect and an outage ring buffer.

Audio is captured into an :class:`AudioRing` and sent from there, so a broken
connection does not stop capture: blocks wait in the ring (30 s by default)
and are sent after the reconnect. TCP carries no acknowledgement, so audio
that was written to a connection just before it broke may be lost, and a
reconnect starts a new server session (timestamps restart at 0). The
WebSocket protocol's resume is the lossless path.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from woasr.clients.ring import AudioRing

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: initial * factor**n, capped, +-jitter fraction."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 10.0
    jitter: float = 0.2
    attempts: int = 20
    """Failed connection attempts in a row before giving up (0: never give up)."""

    def delay(self, attempt: int) -> float:
        base = min(self.cap, self.initial * self.factor ** max(0, attempt - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


class GaveUp(ConnectionError):
    """The server stayed unreachable for every allowed attempt."""


class SourceFailed(RuntimeError):
    """The audio source (microphone, file) stopped with an error."""


async def stream_tcp(
    host: str,
    port: int,
    source: AsyncIterator[bytes],
    on_line: Callable[[str], None],
    backoff: Backoff = Backoff(),
    ring_s: float = 30.0,
) -> AudioRing:
    """Send ``source`` to a TCP server and pass each line it returns to ``on_line``.

    Returns when the source has ended, everything has been sent and the server
    has sent its last lines and closed. Raises :class:`GaveUp` if the server
    cannot be reached.
    """
    ring = AudioRing(ring_s)
    wake = asyncio.Event()
    source_done = asyncio.Event()

    async def capture() -> None:
        try:
            async for block in source:
                ring.push(block)
                wake.set()
        finally:
            source_done.set()
            wake.set()

    capturing = asyncio.create_task(capture())
    failures = 0
    try:
        while True:
            await asyncio.sleep(0)  # let the source start (and fail early, e.g. no microphone)
            _raise_if_failed(capturing)
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                failures += 1
                if backoff.attempts and failures >= backoff.attempts:
                    raise GaveUp(f"{host}:{port} unreachable after {failures} attempts ({exc})") from exc
                delay = backoff.delay(failures)
                log.warning("cannot connect to %s:%d (%s); retry in %.1f s, %.1f s of audio buffered",
                            host, port, exc, delay, ring.seconds)
                await asyncio.sleep(delay)
                continue
            failures = 0
            log.info("connected to %s:%d", host, port)
            if await _run_connection(reader, writer, ring, wake, source_done, on_line):
                _raise_if_failed(capturing)
                return ring
            log.warning("connection lost; reconnecting (%.1f s of audio buffered)", ring.seconds)
    finally:
        capturing.cancel()


def _raise_if_failed(capturing: asyncio.Task[None]) -> None:
    if capturing.done() and not capturing.cancelled() and (error := capturing.exception()):
        raise SourceFailed(f"audio source failed: {error}") from error


async def _run_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ring: AudioRing,
    wake: asyncio.Event,
    source_done: asyncio.Event,
    on_line: Callable[[str], None],
) -> bool:
    """Send until the source ends, then half-close and read to the end. False: connection lost."""

    async def receive() -> bool:
        while line := await reader.readline():
            on_line(line.decode("utf-8", "replace").rstrip("\n"))
        return True

    receiving = asyncio.create_task(receive())
    try:
        while not (source_done.is_set() and not len(ring)):
            while len(ring) and not receiving.done():
                writer.write(ring.peek())
                await writer.drain()
                ring.pop()
            if receiving.done():  # the server closed while we were still sending
                return False
            if source_done.is_set() and not len(ring):
                break
            wake.clear()
            waiting = asyncio.create_task(wake.wait())
            await asyncio.wait({waiting, receiving}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
        writer.write_eof()
        await receiving
        return True
    except (ConnectionError, OSError):
        return False
    finally:
        receiving.cancel()
        writer.close()
