"""The capture / ring / reconnect loop, written once for every transport.

A capture task pushes source blocks into an :class:`AudioRing`, so a broken
connection never stops capture. The loop connects through a
:class:`Transport` and, per :class:`Connection` (one server session), sends
from the ring while a receive task hands the server's messages to a
:class:`Listener`. A block leaves the ring only once its send returned. When
the source has ended and the ring is empty it calls :meth:`Connection.end`
(TCP half-close, WebSocket ``close`` message) and reads until the server
closes.

If the server closes first, or a send or the receive fails, the connection is
lost: the audio the connection calls :meth:`~Connection.unacknowledged` goes
back to the front of the ring, and the loop reconnects and goes on sending
from the ring. TCP acknowledges nothing (audio in flight is lost); the
WebSocket connection keeps what it sent after its last final, which makes its
reconnect lossless, and resumes the server session when the server still
holds it (then only the audio the server did not receive is sent again).
A server that refuses the client for good (a wrong token) raises :class:`Rejected`.

A failed connect, and a connection lost before the server committed anything
on it, count as failures in a row: each waits :meth:`Backoff.delay`, and after
``Backoff.attempts`` of them the loop raises :class:`GaveUp`. A connection that
produced a final resets the count, so a restarted server is reconnected at
once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from woasr.clients.ring import AudioRing, Block

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
    """The server stayed unreachable (or kept dropping us) for every allowed attempt."""


class Rejected(RuntimeError):
    """The server refused this client for good (a missing or wrong token): retrying cannot help."""


class SourceFailed(RuntimeError):
    """The audio source (microphone, file) stopped with an error."""


class Listener(Protocol):
    """Where a connection delivers what the server says, already parsed."""

    def final(self, beg_ms: int, end_ms: int, text: str) -> None: ...

    def partial(self, text: str, beg_ms: int, end_ms: int) -> None: ...

    def error(self, code: str, message: str) -> None: ...


class Connection(ABC):
    """One connection to the server, i.e. one server session.

    Failures are raised as :class:`ConnectionError` (or another ``OSError``),
    whatever the library underneath raises, so the loop handles one kind.
    """

    progressed = False
    """The server committed something on this connection (a final arrived)."""
    resumed_at: int | None = None
    """Set on a connection that resumed the previous one's server session: the stream offset
    (bytes) before which the server already holds the audio, so it is not sent again."""

    @abstractmethod
    async def send(self, offset: int, block: bytes) -> None:
        """Send one block; ``offset`` is its position in the captured stream, in bytes."""

    @abstractmethod
    async def end(self) -> None:
        """No more audio: ask the server to finish the session."""

    @abstractmethod
    async def receive(self) -> None:
        """Hand messages to the listener; return when the server has finished and closed."""

    def unacknowledged(self) -> list[Block]:
        """Blocks sent that the server's output does not cover yet: sent again after a reconnect."""
        return []

    def held(self, blocks: list[Block]) -> None:
        """Blocks before :attr:`resumed_at`: the server holds them, but they stay unacknowledged."""
        return None

    @abstractmethod
    async def close(self) -> None:
        """Release the connection (after :meth:`receive` returned, or on loss)."""


class Transport(Protocol):
    """Makes connections to one server."""

    address: str

    async def connect(self) -> Connection:
        """A new connection; ``OSError`` if the server cannot be reached."""
        ...


async def stream(
    transport: Transport,
    source: AsyncIterator[bytes],
    backoff: Backoff = Backoff(),
    ring_s: float | None = 30.0,
) -> AudioRing:
    """Send ``source`` through ``transport``, reconnecting as needed.

    Returns the ring (for its ``dropped_bytes``) once the source has ended,
    everything has been sent and the server has sent its last messages and
    closed. Raises :class:`GaveUp` or :class:`SourceFailed`.
    """
    ring = AudioRing(ring_s)
    wake = asyncio.Event()
    source_done = asyncio.Event()
    capturing = asyncio.create_task(_capture(source, ring, wake, source_done))
    failures = _FailuresInARow(transport.address, backoff, ring)
    try:
        while True:
            await asyncio.sleep(0)  # let the source start (and fail early, e.g. no microphone)
            _raise_if_failed(capturing)
            try:
                connection = await transport.connect()
            except OSError as exc:
                await failures.fail(f"cannot connect ({exc})")
                continue
            log.info("connected to %s", transport.address)
            if connection.resumed_at is not None:
                connection.held(ring.take_before(connection.resumed_at))
            lost = await _run_connection(connection, ring, wake, source_done)
            if lost is None:
                _raise_if_failed(capturing)
                return ring
            await _recover(connection, lost, ring, failures)
    finally:
        capturing.cancel()


async def _capture(source: AsyncIterator[bytes], ring: AudioRing, wake: asyncio.Event,
                   source_done: asyncio.Event) -> None:
    """Move the source's blocks into the ring, in a task of its own so an outage never stops capture.

    ``wake`` tells the sender there is audio (or the end); ``source_done`` is set
    however the source stops, an error included (the loop raises that one).
    """
    try:
        async for block in source:
            ring.push(block)
            wake.set()
    finally:
        source_done.set()
        wake.set()


@dataclass(slots=True)
class _FailuresInARow:
    """Counts failed attempts since the last productive connection, to back off and eventually give up."""

    address: str
    backoff: Backoff
    ring: AudioRing
    count: int = 0

    async def fail(self, reason: str) -> None:
        """One more failure in a row: give up, or wait before the next attempt."""
        self.count += 1
        if self.backoff.attempts and self.count >= self.backoff.attempts:
            raise GaveUp(f"{self.address}: {reason} ({self.count} attempts in a row)")
        delay = self.backoff.delay(self.count)
        log.warning("%s: %s; retry in %.1f s, %.1f s of audio buffered", self.address, reason, delay,
                    self.ring.seconds)
        await asyncio.sleep(delay)

    def reset(self) -> None:
        """The server committed something: it works, so the next reconnect is immediate."""
        self.count = 0


async def _recover(connection: Connection, lost: str, ring: AudioRing, failures: _FailuresInARow) -> None:
    """After a lost connection: put its unacknowledged audio back, and reconnect at once or back off.

    A connection that produced a final proves the server works (reconnect now);
    one lost before any transcript counts as a failure in a row.
    """
    ring.requeue(connection.unacknowledged())
    if connection.progressed:
        failures.reset()
        log.warning("%s: connection lost (%s); reconnecting, %.1f s of audio buffered",
                    failures.address, lost, ring.seconds)
    else:
        await failures.fail(f"connection lost before any transcript ({lost})")


def _raise_if_failed(capturing: asyncio.Task[None]) -> None:
    if capturing.done() and not capturing.cancelled() and (error := capturing.exception()):
        raise SourceFailed(f"audio source failed: {error}") from error


async def _run_connection(
    connection: Connection, ring: AudioRing, wake: asyncio.Event, source_done: asyncio.Event
) -> str | None:
    """Send until the source ends, then end the session and read to the end.

    Returns None when the session finished, else why the connection was lost.
    """
    receiving = asyncio.create_task(connection.receive())
    try:
        while True:
            while len(ring) and not receiving.done():
                await connection.send(*ring.peek())
                ring.pop()
            if receiving.done():  # the server closed (or the receive failed) while we were still sending
                return _why(receiving)
            if source_done.is_set() and not len(ring):
                break
            wake.clear()
            waiting = asyncio.create_task(wake.wait())
            await asyncio.wait({waiting, receiving}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
        await connection.end()
        await receiving
        return None
    except OSError as exc:  # ConnectionError included
        return str(exc) or type(exc).__name__
    finally:
        receiving.cancel()
        await connection.close()


def _why(receiving: asyncio.Task[None]) -> str:
    """Why the connection was lost; raises :class:`Rejected` if the server refused the client."""
    error = receiving.exception()
    if isinstance(error, Rejected):
        raise error
    return str(error) if error else "the server closed the connection"
