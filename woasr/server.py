"""``woasr serve``: one process, one model, every transport on top of it.

The listening sockets open at once and the model loads in the background, so
``/healthz`` answers while a large model loads and ``/readyz`` says when it is
ready. Connections that arrive before that wait; their audio is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from woasr.asr.faster_whisper_backend import FasterWhisperASR
from woasr.core.processor import OnlineASRProcessor, ProcessorSettings
from woasr.engine import LocalEngine
from woasr.protocol.session import StreamSession
from woasr.transports.tcp import TCPServer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    tcp_port: int
    min_chunk: float
    idle_timeout: float
    workers: int
    settings: ProcessorSettings
    ws_port: int = 0
    """WebSocket/HTTP port; 0 disables it."""
    ws_max_frame: int = 1 << 20
    """Largest WebSocket message accepted, in bytes; a larger one closes with 1009."""
    ws_ping_interval: float = 20.0


class ModelLoadFailed(RuntimeError):
    """The model could not be loaded; the server stops."""


class StreamingService:
    """The shared parts: the model, the engine, session ids and how a new session is made."""

    def __init__(self, load_asr: Callable[[], FasterWhisperASR], config: ServerConfig) -> None:
        self.load_asr = load_asr
        self.config = config
        self.engine = LocalEngine(config.workers)
        self.asr: FasterWhisperASR | None = None
        self.active_sessions = 0
        self._loaded = asyncio.Event()
        self._ids = itertools.count(1)

    # -- model ---------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.asr is not None

    async def wait_ready(self) -> FasterWhisperASR:
        await self._loaded.wait()
        assert self.asr is not None
        return self.asr

    async def load(self) -> None:
        """Load the model off the event loop; raises :class:`ModelLoadFailed`."""
        try:
            self.asr = await asyncio.to_thread(self.load_asr)
        except Exception as exc:  # noqa: BLE001 - any load failure stops the server
            raise ModelLoadFailed(str(exc)) from exc
        self._loaded.set()
        log.info("ready: model %s loaded", self.asr.choice.name)
        print(f"ready model={self.asr.choice.name}", flush=True)

    # -- sessions ------------------------------------------------------------
    def next_session_id(self, transport: str) -> str:
        return f"{transport}-{next(self._ids)}"

    def new_session(self) -> StreamSession:
        asr = self.asr
        assert asr is not None, "new_session() before the model is ready"
        processor = OnlineASRProcessor(asr, asr.language, self.config.settings)
        return StreamSession(processor, self.config.min_chunk, languages=asr.supported_languages)

    @contextlib.contextmanager
    def track_session(self) -> Iterator[None]:
        self.active_sessions += 1
        try:
            yield
        finally:
            self.active_sessions -= 1

    def describe(self) -> dict[str, Any]:
        """Effective server-wide settings, as the WebSocket ``ready`` message reports them."""
        asr = self.asr
        assert asr is not None
        return {
            "beam_size": asr.decode.beam_size,
            "encoder_window": asr.decode.encoder_window,
            "task": asr.decode.task,
            "agreement": self.config.settings.agreement,
            "max_buffer_s": self.config.settings.max_buffer_s,
        }

    # -- listening -----------------------------------------------------------
    async def serve_forever(self) -> None:
        """Open every listener, load the model, serve until stopped (or the load fails)."""
        tasks = [asyncio.create_task(self.load(), name="load-model")]
        try:
            if self.config.tcp_port > 0:
                server = await TCPServer(self, self.config.idle_timeout).start(self.config.host, self.config.tcp_port)
                port = server.sockets[0].getsockname()[1]
                log.info("TCP  listening on %s:%d (raw PCM16LE mono 16 kHz in, '<beg_ms> <end_ms> <text>' lines out)",
                         self.config.host, port)
                print(f"listening tcp://{self.config.host}:{port}", flush=True)
                tasks.append(asyncio.create_task(server.serve_forever(), name="tcp"))
            if self.config.ws_port > 0:
                tasks.append(asyncio.create_task(self._serve_web(), name="web"))
            # Any task ending ends the server: the web server on a signal, the load on failure.
            while tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    tasks.remove(task)
                    task.result()  # raises what the task raised
                    if task.get_name() != "load-model":
                        return
        finally:
            for task in tasks:
                task.cancel()
            self.engine.close()

    async def _serve_web(self) -> None:
        import uvicorn

        from woasr.transports.web.app import create_app

        sock = socket.create_server((self.config.host, self.config.ws_port), reuse_port=False)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self), log_config=None, access_log=False, ws="websockets-sansio",
            ws_max_size=max(self.config.ws_max_frame * 4, 1 << 24), ws_ping_interval=self.config.ws_ping_interval,
            ws_ping_timeout=self.config.ws_ping_interval, lifespan="off",
        )
        web = uvicorn.Server(config)
        host = self.config.host
        log.info("HTTP listening on %s:%d (WebSocket ws://%s:%d/ and /v1/listen, page, REST)", host, port, host, port)
        print(f"listening ws://{host}:{port}/", flush=True)
        print(f"page http://{host}:{port}/", flush=True)
        await web.serve(sockets=[sock])
