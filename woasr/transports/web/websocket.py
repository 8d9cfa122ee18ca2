"""WebSocket endpoint: moves binary PCM16LE and JSON text in, JSON events out.

The wire format is :mod:`woasr.protocol.websocket`; the session is served by
:func:`woasr.server.lifecycle.serve_session`. Here: accepting, reading
Starlette's messages, writing text, closing with the code the protocol names.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.websockets import WebSocket, WebSocketDisconnect

from woasr.protocol.ending import Ending
from woasr.protocol.events import Event, echo
from woasr.protocol.websocket import CloseCode, close_frame, decode_audio_message, decode_client_text, encode_event
from woasr.server.access import Tokens, origin_allowed
from woasr.server.lifecycle import Input, PeerGone, serve_session
from woasr.server.service import StreamingService


DELIBERATE_CLOSES = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)
"""Close codes of a client that ended its connection on purpose: its session is not kept for a resume."""


class WebSocketConnection:
    """One accepted WebSocket as a :class:`~woasr.server.lifecycle.Connection`."""

    transport = "ws"
    resumable = True

    def __init__(self, websocket: WebSocket, max_message: int) -> None:
        self.websocket = websocket
        self.max_message = max_message
        client = websocket.client
        self.peer = f"{client.host}:{client.port}" if client else None
        self.address = client.host if client else None

    async def token(self) -> str | None:
        """``Authorization: Bearer <token>`` from the handshake, else ``?token=`` (all a browser can send)."""
        return Tokens.presented(self.websocket.headers.get("authorization"),
                                self.websocket.query_params.get("token"))

    async def receive(self) -> Sequence[Input]:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            # A close frame is answered at once (RFC 6455): nothing more can be sent. 1000 and
            # 1001 (a page going away) are meant; 1006 (no close frame, a reset) is a drop.
            code = message.get("code")
            raise PeerGone(f"client closed the connection ({code})", deliberate=code in DELIBERATE_CLOSES)
        data = message.get("bytes")
        if data is not None:
            return decode_audio_message(data, self.max_message)
        return (decode_client_text(message.get("text") or ""),)

    async def send(self, events: list[Event]) -> None:
        try:
            for event in events:
                await self.websocket.send_text(encode_event(event))
        except (WebSocketDisconnect, OSError, RuntimeError) as exc:  # Starlette's ways of saying "gone"
            raise PeerGone(f"{type(exc).__name__} while sending") from exc

    async def close(self, ending: Ending, reason: str) -> None:
        frame = close_frame(ending, reason)
        if frame is None:
            return
        try:
            await self.websocket.close(*frame)
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # already closed by the peer


async def serve_websocket(websocket: WebSocket, service: StreamingService) -> None:
    """One connection = one session: ``ready`` first, then events until the session ends.

    A browser page from an origin that is not allowed is refused before the handshake
    completes (HTTP 403), so that any web page open in a local browser cannot use the server.
    """
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host"), service.config.allowed_origins):
        service.refuse_origin("ws", echo(origin))
        await websocket.close(CloseCode.POLICY_VIOLATION, "origin not allowed")
        return
    await websocket.accept()
    await serve_session(service, WebSocketConnection(websocket, service.config.ws_max_frame))
