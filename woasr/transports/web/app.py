"""The FastAPI application on port 43008: WebSocket streaming, the page, health, REST.

It runs in the ``woasr serve`` process on the same model and engine as the
TCP server (:class:`woasr.server.service.StreamingService`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from woasr import __version__
from woasr.server.service import StreamingService
from woasr.transports.web.transcriptions import transcription_router
from woasr.transports.web.websocket import serve_websocket

STATIC = Path(__file__).parent / "static"


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

    @app.websocket("/v1/listen")
    async def stream(websocket: WebSocket) -> None:
        await serve_websocket(websocket, service)

    app.include_router(transcription_router(service))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
