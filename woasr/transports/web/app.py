"""The FastAPI application on port 43008: WebSocket streaming, the page, health, REST.

It runs in the ``woasr serve`` process on the same model and engine as the
TCP server (:class:`woasr.server.service.StreamingService`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from woasr import __version__
from woasr.server.access import Tokens
from woasr.server.service import StreamingService
from woasr.transports.web.compat import serve_deepgram, serve_realtime
from woasr.transports.web.transcriptions import transcription_router
from woasr.transports.web.websocket import serve_websocket

STATIC = Path(__file__).parent / "static"


class Unauthorized(Exception):
    """A REST request without a valid token, when the server requires one."""


def require_token(service: StreamingService) -> Callable[[Request], Awaitable[None]]:
    """A dependency for the REST routes: ``Authorization: Bearer <token>`` (what OpenAI's SDKs send
    as their ``api_key``) or ``?token=``, checked before the upload is read."""

    async def check(request: Request) -> None:
        tokens = service.tokens
        presented = Tokens.presented(request.headers.get("authorization"), request.query_params.get("token"))
        if tokens.required and not tokens.accepts(presented):
            service.refuse_unauthorized("http", request.client.host if request.client else None)
            raise Unauthorized

    return check


_QUERY_TOKEN = re.compile(r"([?&]token=)[^&\s\"]*")


def redact_query_tokens(record: logging.LogRecord) -> bool:
    """A logging filter for ``uvicorn.error``, which logs every WebSocket handshake's path with its
    query string: a ``?token=`` value is replaced by ``***`` (tokens are never logged)."""
    if isinstance(record.msg, str) and "token=" in record.msg:
        record.msg = _QUERY_TOKEN.sub(r"\1***", record.msg)
    if isinstance(record.args, tuple) and any(isinstance(a, str) and "token=" in a for a in record.args):
        record.args = tuple(_QUERY_TOKEN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
    return True


async def unauthorized(request: Request, exc: Exception) -> JSONResponse:
    """401 in OpenAI's error shape, so its SDKs report a bad API key as such."""
    body = {"error": {"message": "a valid token is required: Authorization: Bearer <token> (see docs/protocol.md, "
                                 "'Auth')", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def create_app(service: StreamingService) -> FastAPI:
    app = FastAPI(title="woasr", version=__version__, summary="Real-time speech recognition on Whisper")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive (the model may still be loading)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once the model is loaded and sessions are served; 503 before and while draining."""
        if not service.ready or service.draining:
            status = "draining" if service.draining else "loading"
            return JSONResponse({"status": status}, status_code=503, headers={"Retry-After": "1"})
        assert service.asr is not None
        return JSONResponse({"status": "ready", "model": service.asr.choice.name,
                             "active_sessions": service.active_sessions})

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics: latency histograms, active and refused sessions (text exposition format)."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/")
    async def stream_root(websocket: WebSocket) -> None:
        await serve_websocket(websocket, service)

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket) -> None:
        await serve_websocket(websocket, service)

    @app.websocket("/v1/listen")
    async def deepgram_listen(websocket: WebSocket) -> None:
        await serve_deepgram(websocket, service)

    @app.websocket("/v1/realtime")
    async def openai_realtime(websocket: WebSocket) -> None:
        await serve_realtime(websocket, service)

    # Only REST needs a token here: the WebSocket checks its own in serve_session, and the page,
    # /healthz, /readyz and /metrics stay open (probes and scrapers; they reveal no audio or text).
    app.include_router(transcription_router(service), dependencies=[Depends(require_token(service))])
    app.add_exception_handler(Unauthorized, unauthorized)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
