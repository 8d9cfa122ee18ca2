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
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.uri import parse_uri

from woasr.clients.reconnect import Connection, Listener
from woasr.clients.ring import BYTES_PER_SECOND, Block
from woasr.core.audio import SAMPLE_RATE
from woasr.protocol.commands import Close, Configure
from woasr.protocol.events import Error, Final, Partial, Ready
from woasr.protocol.websocket import CloseCode, decode_server_message, encode_command

log = logging.getLogger(__name__)

BYTES_PER_MS = BYTES_PER_SECOND / 1000
CLOSE_MESSAGE = encode_command(Close())


class WsTransport:
    """Connections to a WebSocket ``url``; ``config`` fields (e.g. ``partials``) are sent first if any.

    A ``token`` goes in every handshake as ``Authorization: Bearer`` (never in the URL, where
    proxies log it). A ``wss://`` URL verifies the server's certificate against the system's
    authorities (``SSL_CERT_FILE`` names another bundle, e.g. a self-signed certificate).
    """

    def __init__(self, url: str, listener: Listener, config: dict[str, Any] | None = None,
                 open_timeout: float = 10.0, token: str | None = None) -> None:
        parse_uri(url)  # InvalidURI at once rather than on every attempt
        self.url = self.address = url
        self.listener = listener
        self.config = config or {}
        self.open_timeout = open_timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token is not None else {}

    async def connect(self) -> WsConnection:
        try:
            # Audio does not compress: no permessage-deflate, no CPU spent on it either side.
            ws = await connect(self.url, open_timeout=self.open_timeout, close_timeout=2.0, compression=None,
                               additional_headers=self.headers)
        except (InvalidHandshake, TimeoutError) as exc:
            raise ConnectionError(f"handshake failed: {exc}") from exc
        if self.config:
            try:
                await ws.send(encode_command(Configure(self.config)))
            except ConnectionClosed as exc:
                raise ConnectionError(_closed(exc)) from exc
        return WsConnection(ws, self.listener)


class WsConnection(Connection):
    """One WebSocket session; maps its times onto the captured stream."""

    def __init__(self, ws: ClientConnection, listener: Listener) -> None:
        self.ws, self.listener = ws, listener
        self._position = 0
        """Bytes sent in this session."""
        self._sent: deque[tuple[int, Block]] = deque()
        """(session byte, block) of the blocks sent and not yet covered by a final."""
        self._shifts: list[tuple[int, int]] = []
        """(session byte, stream offset - session byte from there on); one entry unless the ring dropped audio."""
        self._partial_shown = False

    async def send(self, offset: int, block: bytes) -> None:
        try:
            await self.ws.send(block)
        except ConnectionClosed as exc:
            raise ConnectionError(_closed(exc)) from exc
        shift = offset - self._position
        if not self._shifts or self._shifts[-1][1] != shift:
            self._shifts.append((self._position, shift))
        self._sent.append((self._position, (offset, block)))
        self._position += len(block)

    async def end(self) -> None:
        try:
            await self.ws.send(CLOSE_MESSAGE)
        except ConnectionClosed as exc:
            raise ConnectionError(_closed(exc)) from exc

    async def receive(self) -> None:
        """Until the server closes; only a 1000 close after its last message is a finished session."""
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    self._dispatch(message)
        except ConnectionClosed as exc:
            raise ConnectionError(_closed(exc)) from exc
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
                if event.sample_rate != SAMPLE_RATE:
                    log.warning("the server expects %s Hz audio; this client sends %d Hz",
                                event.sample_rate, SAMPLE_RATE)
                log.info("session %s (model %s)", event.session_id, event.model)
        # configured, flushed and unknown types: nothing to show

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
        index = bisect.bisect_right(self._shifts, session_ms * BYTES_PER_MS, key=lambda s: s[0]) - 1
        shift = self._shifts[max(index, 0)][1] if self._shifts else 0
        return round(session_ms + shift / BYTES_PER_MS)

    def unacknowledged(self) -> list[Block]:
        return [block for _, block in self._sent]

    async def close(self) -> None:
        if self._partial_shown:  # a partial of a session that is gone is stale
            self._partial_shown = False
            self.listener.partial("", 0, 0)
        await self.ws.close()


def _closed(exc: ConnectionClosed) -> str:
    """Why a connection closed, for the reconnect log line."""
    if exc.rcvd is not None:
        return f"the server closed with {exc.rcvd.code} {exc.rcvd.reason}".strip()
    return "the connection broke"
