"""WebSocket endpoints: one connection class for every WebSocket protocol the server speaks.

Each protocol is a sans-I/O codec (:class:`~woasr.protocol.websocket.NativeCodec` for this
product's own, :class:`~woasr.protocol.deepgram.DeepgramCodec`,
:class:`~woasr.protocol.openai_realtime.RealtimeCodec`): it turns messages into the session's
inputs and events into messages. The session is served by
:func:`woasr.server.lifecycle.serve_session`. Here: accepting, reading Starlette's messages,
writing text, closing with the code the protocol names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from woasr.protocol.ending import Ending
from woasr.protocol.events import Event, echo
from woasr.protocol.websocket import CloseCode, NativeCodec, close_frame
from woasr.server.access import Tokens, origin_allowed
from woasr.server.lifecycle import Input, PeerGone, serve_session
from woasr.server.service import StreamingService

DELIBERATE_CLOSES = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)
"""Close codes of a client that ended its connection on purpose: its session is not kept for a resume."""


class WireCodec(Protocol):
    """One WebSocket protocol's wire format, for one connection."""

    resumable: bool
    """Whether its clients can resume a session after a drop."""

    def opening(self) -> Sequence[Input]:
        """Inputs to feed before the client's first message (e.g. options from the handshake)."""
        ...

    def decode_binary(self, data: bytes) -> Sequence[Input]: ...

    def decode_text(self, text: str) -> Sequence[Input]: ...

    def encode(self, events: list[Event]) -> list[str]: ...

    def closing(self, ending: Ending) -> list[str]:
        """Messages sent last, before the close frame."""
        ...


class WebSocketConnection:
    """One accepted WebSocket as a :class:`~woasr.server.lifecycle.Connection`, in ``codec``'s protocol."""

    def __init__(self, websocket: WebSocket, codec: WireCodec, transport: str = "ws") -> None:
        self.websocket = websocket
        self.codec = codec
        self.transport = transport
        self.resumable = codec.resumable
        client = websocket.client
        self.peer = f"{client.host}:{client.port}" if client else None
        self.address = client.host if client else None
        self._opening: Sequence[Input] = codec.opening()

    async def token(self) -> str | None:
        """``Authorization: Bearer <token>`` (or Deepgram's ``Token <token>``) from the handshake,
        else ``?token=`` (all a browser can send)."""
        return Tokens.presented(self.websocket.headers.get("authorization"),
                                self.websocket.query_params.get("token"))

    async def receive(self) -> Sequence[Input]:
        if self._opening:
            opening, self._opening = self._opening, ()
            return opening
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                # A close frame is answered at once (RFC 6455): nothing more can be sent. 1000 and
                # 1001 (a page going away) are meant; 1006 (no close frame, a reset) is a drop.
                code = message.get("code")
                raise PeerGone(f"client closed the connection ({code})", deliberate=code in DELIBERATE_CLOSES)
            data = message.get("bytes")
            inputs = self.codec.decode_binary(data) if data is not None else self.codec.decode_text(
                message.get("text") or "")
            if inputs:
                return inputs

    async def send(self, events: list[Event]) -> None:
        try:
            for text in self.codec.encode(events):
                await self.websocket.send_text(text)
        except (WebSocketDisconnect, OSError, RuntimeError) as exc:  # Starlette's ways of saying "gone"
            raise PeerGone(f"{type(exc).__name__} while sending") from exc

    async def close(self, ending: Ending, reason: str) -> None:
        frame = close_frame(ending, reason)
        if frame is None:
            return
        try:
            for text in self.codec.closing(ending):
                await self.websocket.send_text(text)
            await self.websocket.close(*frame)
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # already closed by the peer


async def accept(websocket: WebSocket, service: StreamingService, subprotocols: Sequence[str] = ()) -> bool:
    """Accept the handshake, unless a browser page from an origin that is not allowed opened it
    (refused with HTTP 403, so that any web page open in a local browser cannot use the server).
    The first of the client's subprotocols that is in ``subprotocols`` is chosen."""
    origin = websocket.headers.get("origin")
    frontend = service.config.frontend
    if not origin_allowed(origin, websocket.headers.get("host"), service.config.allowed_origins,
                          frontend.ws_port if frontend is not None else None):
        service.refuse_origin("ws", echo(origin))
        await websocket.close(CloseCode.POLICY_VIOLATION, "origin not allowed")
        return False
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=next((name for name in offered if name in subprotocols), None))
    return True


async def serve_websocket(websocket: WebSocket, service: StreamingService) -> None:
    """This product's protocol: ``ready`` first, then events until the session ends."""
    if await accept(websocket, service):
        await serve_session(service, WebSocketConnection(websocket, NativeCodec(service.config.ws_max_frame)))

