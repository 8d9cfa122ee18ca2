"""The WebSocket transport for the shared reconnect loop, with a lossless reconnect.

Protocol (docs/protocol.md): the server's ``ready`` comes first; an optional
``config`` (e.g. ``partials: true``) goes before any audio; audio goes as
binary PCM16LE messages; ``final``, ``partial`` and ``error`` messages come
back. At the end the client sends ``{"type":"close"}``: the server finishes,
sends the last finals and closes with 1000. Any other close code (1012 when
the server restarts, 1011 on a server error) or a broken socket is a lost
connection.

Lossless reconnect, without server state: a connection keeps the blocks it
sent after the ``end_ms`` of its last final (the audio the server has not
committed yet). When it is lost they go back to the front of the ring, so the
next session gets them again first, then the ring. Every block carries its
offset in the captured stream, so each session knows where in the stream its
0 lies (normally the previous session's start plus its last final's
``end_ms``) and the printed times are offset by it: times continue across
sessions instead of restarting at 0. What the old session had already
committed is never sent again; a word cut at the boundary may show up twice
or lose a syllable. If the ring overflowed during an outage, the oldest audio
is lost and the times jump over it.

Resume, when the server still holds the session (``--resume-window``): the
next connection's first message is ``resume`` with the session id, its
``resume_token`` and the ``seq`` of the last final received. The server answers
(after the new session's ``ready``) ``resumed`` with the sample it holds audio
up to, then replays the finals the client missed; only the audio after that
sample is sent again, and the transcript goes on as if nothing had happened.
On ``resume_failed`` (server restarted, window passed) the connection goes on
as the new session, losslessly as above.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.uri import parse_uri

from woasr.clients.reconnect import Connection, Listener, Rejected
from woasr.clients.ring import BYTES_PER_SECOND, Block
from woasr.core.audio import SAMPLE_RATE
from woasr.protocol.commands import Close, Configure, Resume
from woasr.protocol.events import RESUME_FAILED, Error, Final, Partial, Ready, Resumed
from woasr.protocol.websocket import CloseCode, decode_server_message, encode_command

log = logging.getLogger(__name__)

BYTES_PER_MS = BYTES_PER_SECOND / 1000
CLOSE_MESSAGE = encode_command(Close())


class WsTransport:
    """Connections to a WebSocket ``url``; ``config`` fields (e.g. ``partials``) are sent first if any.

    A ``token`` goes in every handshake as ``Authorization: Bearer`` (never in the URL, where
    proxies log it). A ``wss://`` URL verifies the server's certificate against the system's
    authorities (``SSL_CERT_FILE`` names another bundle, e.g. a self-signed certificate).
    After a lost connection the next one first tries to resume the server session (``resume``).
    """

    def __init__(self, url: str, listener: Listener, config: dict[str, Any] | None = None,
                 open_timeout: float = 10.0, token: str | None = None) -> None:
        parse_uri(url)  # InvalidURI at once rather than on every attempt
        self.url = self.address = url
        self.listener = listener
        self.config = config or {}
        self.open_timeout = open_timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        self._session: _ServerSession | None = None
        """The server session of the last connection, to resume after a drop."""

    async def connect(self, url: str | None = None) -> WsConnection:
        """A connection to ``url`` (default: the client's): the dropped session resumed, or a new one.
        A resume answered with another front-end's port is tried there once."""
        try:
            # Audio does not compress: no permessage-deflate, no CPU spent on it either side.
            ws = await connect(url or self.url, open_timeout=self.open_timeout, close_timeout=2.0,
                               compression=None, additional_headers=self.headers)
        except (InvalidHandshake, TimeoutError) as exc:
            raise ConnectionError(f"handshake failed: {exc}") from exc
        try:
            previous, fresh = self._session, _ServerSession()
            if previous is not None and previous.resumable:
                await ws.send(encode_command(Resume(previous.session_id, previous.resume_token, previous.last_seq)))
                resumed = await asyncio.wait_for(self._resume_answer(ws, fresh), self.open_timeout)
                if isinstance(resumed, Resumed):
                    return WsConnection(ws, self.listener, previous.resumed(resumed.resume_from_sample))
                if resumed is not None and url is None:  # the session lives on another front-end process
                    await ws.close()
                    return await self.connect(with_port(self.url, resumed))
            if self.config:
                await ws.send(encode_command(Configure(self.config)))
        except ConnectionClosed as exc:
            raise _lost(exc) from exc
        except TimeoutError as exc:
            await ws.close()
            raise ConnectionError("no answer to resume") from exc
        self._session = fresh
        return WsConnection(ws, self.listener, fresh)

    async def _resume_answer(self, ws: ClientConnection, fresh: _ServerSession) -> Resumed | int | None:
        """Read the new session's ``ready``, then ``resumed`` (returned) or ``resume_failed`` (None:
        the connection goes on as that new session; the port it names, if it names one)."""
        while True:
            text = await ws.recv()
            event = decode_server_message(text) if isinstance(text, str) else None
            if isinstance(event, Ready):
                fresh.start(event)
            elif isinstance(event, Resumed):
                log.warning("resumed session %s: the server holds %.2f s of its audio, %d final(s) replayed",
                         event.session_id, event.resume_from_sample / SAMPLE_RATE, event.replayed)
                return event
            elif isinstance(event, Error):
                if event.code == RESUME_FAILED:
                    log.warning("could not resume the session: %s", event.message)
                    return event.resume_port
                self.listener.error(event.code, event.message)


def with_port(url: str, port: int) -> str:
    """``url`` with another port (a front-end process's own, for a resume)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@dataclass(slots=True)
class _ServerSession:
    """What the client knows of one server session, across the connections that serve it.

    Positions are in bytes of the session's audio; ``shifts`` map them onto the captured stream
    (one entry unless the ring dropped audio during an outage).
    """

    session_id: str = ""
    resume_token: str | None = None
    last_seq: int = -1
    position: int = 0
    """Bytes sent in this session."""
    shifts: list[tuple[int, int]] = field(default_factory=list)
    """(session byte, stream offset - session byte from there on)."""

    @property
    def resumable(self) -> bool:
        return bool(self.session_id) and self.resume_token is not None

    def start(self, ready: Ready) -> None:
        self.session_id, self.resume_token = ready.session_id, ready.resume_token

    def sent(self, offset: int, size: int) -> int:
        """Record a block of ``size`` bytes at stream ``offset``; its session byte."""
        shift = offset - self.position
        if not self.shifts or self.shifts[-1][1] != shift:
            self.shifts.append((self.position, shift))
        start, self.position = self.position, self.position + size
        return start

    def shift_at(self, session_byte: int) -> int:
        """Stream offset minus session byte, at ``session_byte``."""
        index = bisect.bisect_right(self.shifts, session_byte, key=lambda s: s[0]) - 1
        return self.shifts[max(index, 0)][1] if self.shifts else 0

    def resumed(self, from_sample: int) -> _ServerSession:
        """This session as resumed: the server holds its audio up to ``from_sample``; sending goes on there."""
        self.position = min(from_sample * 2, self.position)
        self.shifts = [s for s in self.shifts if s[0] < self.position]
        return self


class WsConnection(Connection):
    """One WebSocket connection to a server session; maps its times onto the captured stream."""

    def __init__(self, ws: ClientConnection, listener: Listener, session: _ServerSession | None = None) -> None:
        self.ws, self.listener = ws, listener
        self.session = session = session or _ServerSession()
        self._sent: deque[tuple[int, Block]] = deque()
        """(session byte, block) of the blocks sent and not yet covered by a final."""
        self._partial_shown = False
        if session.position:  # resumed: the stream offset just after the last byte the server holds
            self.resumed_at = session.position + session.shift_at(session.position - 1)

    def held(self, blocks: list[Block]) -> None:
        end = self.session.position
        for offset, block in reversed(blocks):
            end -= len(block)
            self._sent.appendleft((end, (offset, block)))

    async def send(self, offset: int, block: bytes) -> None:
        try:
            await self.ws.send(block)
        except ConnectionClosed as exc:
            raise _lost(exc) from exc
        self._sent.append((self.session.sent(offset, len(block)), (offset, block)))

    async def end(self) -> None:
        try:
            await self.ws.send(CLOSE_MESSAGE)
        except ConnectionClosed as exc:
            raise _lost(exc) from exc

    async def receive(self) -> None:
        """Until the server closes; only a 1000 close after its last message is a finished session."""
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    self._dispatch(message)
        except ConnectionClosed as exc:
            raise _lost(exc) from exc
        if self.ws.close_code == CloseCode.POLICY_VIOLATION:
            raise Rejected(f"the server refused this client: {self.ws.close_reason}")
        if self.ws.close_code != CloseCode.NORMAL_CLOSURE:
            raise ConnectionError(f"the server closed with {self.ws.close_code} {self.ws.close_reason or ''}".strip())

    def _dispatch(self, text: str) -> None:
        try:
            event = decode_server_message(text)
        except (ValueError, KeyError, TypeError, AttributeError):  # not the protocol: say so, go on
            log.warning("unexpected message from the server: %r", text[:200])
            return
        match event:
            case Final():
                if not self._in_order(event.seq):
                    return
                self.progressed = True
                self._partial_shown = False
                self.listener.final(self._stream_ms(event.beg_ms), self._stream_ms(event.end_ms), event.text)
                self._acknowledge(event.end_ms)
            case Partial():
                self._partial_shown = bool(event.text)
                self.listener.partial(event.text, self._stream_ms(event.beg_ms), self._stream_ms(event.end_ms))
            case Error():
                self.listener.error(event.code, event.message)
            case Ready():
                self.session.start(event)
                if event.sample_rate != SAMPLE_RATE:
                    log.warning("the server expects %s Hz audio; this client sends %d Hz",
                                event.sample_rate, SAMPLE_RATE)
                log.info("session %s (model %s)", event.session_id, event.model)
        # configured, flushed and unknown types: nothing to show

    def _in_order(self, seq: int) -> bool:
        """Whether a final with ``seq`` is new (one received twice is dropped); a gap is logged."""
        if seq < 0:  # a server that does not number its finals
            return True
        last, self.session.last_seq = self.session.last_seq, max(seq, self.session.last_seq)
        if seq <= last:
            log.warning("final seq %d of session %s received again: dropped", seq, self.session.session_id)
            return False
        if seq != last + 1:
            log.warning("finals seq %d-%d of session %s are missing", last + 1, seq - 1, self.session.session_id)
        return True

    def _acknowledge(self, end_ms: int) -> None:
        """The server committed everything up to ``end_ms``: stop keeping that audio."""
        cut = round(end_ms * BYTES_PER_MS) & ~1  # a whole PCM16 sample
        while self._sent:
            start, (offset, block) = self._sent[0]
            if start + len(block) <= cut:
                self._sent.popleft()
                continue
            if start < cut:
                self._sent[0] = (cut, (offset + cut - start, block[cut - start:]))
            break

    def _stream_ms(self, session_ms: int) -> int:
        """A time of this session as a time of the captured stream."""
        return round(session_ms + self.session.shift_at(round(session_ms * BYTES_PER_MS)) / BYTES_PER_MS)

    def unacknowledged(self) -> list[Block]:
        return [block for _, block in self._sent]

    async def close(self) -> None:
        if self._partial_shown:  # a partial of a session that is gone is stale
            self._partial_shown = False
            self.listener.partial("", 0, 0)
        await self.ws.close()


def _lost(exc: ConnectionClosed) -> ConnectionError | Rejected:
    """A closed connection as the reconnect loop's error, saying why (1008: refused for good)."""
    if exc.rcvd is not None and exc.rcvd.code == CloseCode.POLICY_VIOLATION:
        return Rejected(f"the server refused this client: {exc.rcvd.reason}")
    if exc.rcvd is not None:
        return ConnectionError(f"the server closed with {exc.rcvd.code} {exc.rcvd.reason}".strip())
    return ConnectionError("the connection broke")
