"""The streaming protocols of hosted APIs, served by this server: Deepgram's ``/v1/listen`` and
OpenAI's Realtime transcription (``/v1/realtime``).

Each is a codec (:mod:`woasr.protocol.deepgram`, :mod:`woasr.protocol.openai_realtime`) in the
shared :class:`~woasr.transports.web.websocket.WebSocketConnection`, so its sessions live the one
lifecycle (admission, backpressure, idle timeout, auth, drain) like any other.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from woasr.protocol.deepgram import DeepgramCodec, ListenParamsError, parse_listen_params
from woasr.protocol.openai_realtime import RealtimeCodec
from woasr.server.lifecycle import serve_session
from woasr.server.service import StreamingService
from woasr.transports.web.websocket import WebSocketConnection, accept

log = logging.getLogger("woasr.session")


async def serve_deepgram(websocket: WebSocket, service: StreamingService) -> None:
    """``GET /v1/listen``: the query string configures the session; a parameter that cannot be served
    refuses the handshake with HTTP 400 and Deepgram's error body, as Deepgram does."""
    try:
        params = parse_listen_params(websocket.query_params.multi_items())
    except ListenParamsError as exc:
        log.info("refused a Deepgram session: %s", exc)
        body = {"err_code": "Bad Request", "err_msg": str(exc), "request_id": ""}
        await websocket.send_denial_response(JSONResponse(body, status_code=400))
        return
    if params.model:
        log.info("Deepgram model=%s asked for: served by this server's model", params.model[:40])
    if params.ignored:
        log.info("Deepgram parameters accepted without effect: %s", ", ".join(params.ignored))
    if not await accept(websocket, service):
        return
    asr = await service.wait_ready()
    codec = DeepgramCodec(params, asr.choice.name, service.config.ws_max_frame)
    await serve_session(service, WebSocketConnection(websocket, codec, "deepgram"))


async def serve_realtime(websocket: WebSocket, service: StreamingService) -> None:
    """``/v1/realtime``: OpenAI's Realtime API in transcription mode (``session.update`` configures)."""
    if not await accept(websocket, service, subprotocols=("realtime",)):
        return
    asr = await service.wait_ready()
    codec = RealtimeCodec(asr.choice.name, service.config.ws_max_frame)
    await serve_session(service, WebSocketConnection(websocket, codec, "realtime"))
