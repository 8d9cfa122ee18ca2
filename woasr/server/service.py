"""``woasr serve``: one process, one model, every transport on top of it.

The listening sockets open at once and the model loads in the background, so
``/healthz`` answers while a large model loads and ``/readyz`` says when it is
ready. Connections that arrive before that wait; their audio is kept.

SIGINT/SIGTERM drain the server: new connections are refused, every open session
is finished (its received audio transcribed, its last finals sent) and closed,
then the process exits. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

import prometheus_client
import uvicorn

from woasr.asr.faster_whisper_backend import FasterWhisperASR
from woasr.core.processor import OnlineASRProcessor, ProcessorSettings
from woasr.core.vad import VadSettings
from woasr.engine import LocalEngine
from woasr.engine.admission import Admission
from woasr.metrics import ServerMetrics
from woasr.protocol.events import CAPACITY, Error
from woasr.protocol.session import StreamSession
from woasr.transports.runner import Send, SessionRunner
from woasr.transports.tcp import TCPServer
from woasr.transports.web.app import create_app

log = logging.getLogger(__name__)
metrics_log = logging.getLogger("woasr.metrics")


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
    vac: bool = False
    """Voice-activity control for every session (a WebSocket client may also ask for it)."""
    vad: VadSettings = field(default_factory=VadSettings)
    """The voice-activity detector's settings, wherever it runs."""
    ws_max_frame: int = 1 << 20
    """Largest WebSocket message accepted, in bytes; a larger one closes with 1009."""
    ws_ping_interval: float = 20.0
    drain_timeout: float = 10.0
    """On shutdown, seconds open sessions get to finish and send their last finals."""
    max_sessions: int = 0
    """Hard limit of concurrent sessions; 0 = decided by measured capacity alone."""
    max_chunk: float = 0.0
    """Admission: refuse a session when updates would have to cover more audio than this;
    0 = half of ``latency_target`` (at least ``min_chunk``): a word is committed when two
    updates agree on it, so a longer effective chunk cannot keep the target."""
    latency_target: float = 2.0
    """Admission: refuse a session while recently committed words came later than this (p95, seconds)."""
    metrics_port: int = 0
    """Port of a separate Prometheus endpoint (for TCP-only servers); 0 disables it. GET /metrics always works."""
    metrics_log_interval: float = 30.0
    """Seconds between the ``woasr.metrics`` p50/p95 log lines; 0 disables them."""

    @property
    def admission_chunk(self) -> float:
        """The effective ``max_chunk``."""
        if self.max_chunk:
            return self.max_chunk
        return max(self.min_chunk, self.latency_target / 2) if self.latency_target > 0 else self.min_chunk


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside ``woasr serve``: the service owns the signals, so it can drain first."""

    listening: socket.socket

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ModelLoadFailed(RuntimeError):
    """The model could not be loaded; the server stops."""


class StreamingService:
    """The shared parts: the model, the engine, session ids and how a new session is made."""

    def __init__(self, load_asr: Callable[[], FasterWhisperASR], config: ServerConfig) -> None:
        self.load_asr = load_asr
        self.config = config
        self.engine = LocalEngine(
            lambda: self.asr, config.workers, Admission(config.workers, config.admission_chunk, config.max_sessions,
                                                       latency_target=config.latency_target)
        )
        self.asr: FasterWhisperASR | None = None
        self.draining = False
        self.metrics = ServerMetrics()
        self._runners: set[SessionRunner] = set()
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
        return StreamSession(processor, self.config.min_chunk, languages=asr.supported_languages,
                             vac=self.config.vac, vad=self.config.vad)

    @property
    def active_sessions(self) -> int:
        return len(self._runners)

    def refusal(self, transport: str) -> Error | None:
        """Why a new session is refused now (shutting down, or at capacity), or None to admit it.

        A refusal is counted in the metrics and logged; the transport tells the client.
        """
        if self.draining:
            refusal = Error("shutting_down", "the server is shutting down; connect again later")
        elif reason := self.engine.admission.refusal(self.active_sessions):
            refusal = Error(CAPACITY, f"{reason}; try again later")
        else:
            return None
        self.metrics.session_refused(transport, refusal.code)
        log.warning("refused a %s session: %s", transport, refusal.message)
        return refusal

    def new_runner(self, transport: str, send: Send) -> SessionRunner:
        """A new session (id ``<transport>-N``) with its runner on the shared engine."""
        session_id = self.next_session_id(transport)
        return SessionRunner(session_id, self.new_session(), self.engine, send, self.metrics, transport,
                             self.engine.admission)

    @contextlib.contextmanager
    def track_session(self, runner: SessionRunner) -> Iterator[None]:
        """Count the session as active (and in the metrics), and let a drain finish it."""
        self._runners.add(runner)
        self.metrics.session_started(runner.transport)
        try:
            yield
        finally:
            self._runners.discard(runner)
            self.engine.admission.load_fell()
            self.metrics.session_ended(runner.transport)
            self.metrics.forget_session(runner.session_id)

    async def drain(self, timeout: float, force: asyncio.Event) -> None:
        """Finish every open session; wait until they are done, ``timeout`` passes or ``force`` is set."""
        self.draining = True
        if not self._runners:
            return
        log.info("draining %d session(s): finishing them (up to %g s)", len(self._runners), timeout)
        for runner in list(self._runners):
            runner.finish()
        deadline = asyncio.get_running_loop().time() + timeout
        while self._runners and not force.is_set() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if self._runners:
            log.warning("stopping with %d session(s) unfinished", len(self._runners))

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
        """Open every listener, load the model, serve until a signal (then drain) or a failed load."""
        loop = asyncio.get_running_loop()
        stop, force = asyncio.Event(), asyncio.Event()

        def on_signal() -> None:
            (force if stop.is_set() else stop).set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        loading = asyncio.create_task(self.load(), name="load-model")
        tcp: asyncio.Server | None = None
        web: _EmbeddedUvicorn | None = None
        serving: list[asyncio.Task[None]] = []
        metrics_http: WSGIServer | None = None
        logging_metrics: asyncio.Task[None] | None = None
        try:
            if self.config.metrics_port > 0:
                metrics_http = self._metrics_server()
            if self.config.metrics_log_interval > 0:
                logging_metrics = asyncio.create_task(self._log_metrics(), name="log-metrics")
            if self.config.tcp_port > 0:
                tcp = await TCPServer(self, self.config.idle_timeout).start(self.config.host, self.config.tcp_port)
                port = tcp.sockets[0].getsockname()[1]
                log.info("TCP  listening on %s:%d (raw PCM16LE mono 16 kHz in, '<beg_ms> <end_ms> <text>' lines out)",
                         self.config.host, port)
                print(f"listening tcp://{self.config.host}:{port}", flush=True)
            if self.config.ws_port > 0:
                web = self._web_server()
                serving.append(asyncio.create_task(web.serve(sockets=[web.listening]), name="web"))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([loading, stopping, *serving], return_when=asyncio.FIRST_COMPLETED)
            if loading.done():
                loading.result()  # raises ModelLoadFailed
                await asyncio.wait([stopping, *serving], return_when=asyncio.FIRST_COMPLETED)
            if tcp is not None:
                tcp.close()
            await self.drain(self.config.drain_timeout, force)
            log.info("stopped")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            loading.cancel()
            if logging_metrics is not None:
                logging_metrics.cancel()
            if metrics_http is not None:
                metrics_http.shutdown()
                metrics_http.server_close()
            if web is not None:
                web.should_exit = True
                await asyncio.gather(*serving, return_exceptions=True)
            self.engine.close()

    def _metrics_server(self) -> WSGIServer:
        """prometheus_client's own HTTP server on a thread, for when no web port runs (or a separate one is wanted)."""
        server, _thread = prometheus_client.start_http_server(
            self.config.metrics_port, addr=self.config.host, registry=self.metrics.registry)
        port = server.server_address[1]
        log.info("metrics listening on %s:%d (Prometheus, GET /metrics)", self.config.host, port)
        print(f"listening metrics http://{self.config.host}:{port}/metrics", flush=True)
        return server

    async def _log_metrics(self) -> None:
        """Every ``metrics_log_interval`` seconds, one line of p50/p95 since the previous one."""
        while True:
            await asyncio.sleep(self.config.metrics_log_interval)
            metrics_log.info("%s", self.metrics.summary())

    def _web_server(self) -> _EmbeddedUvicorn:
        config = uvicorn.Config(
            create_app(self), log_config=None, access_log=False, ws="websockets-sansio",
            ws_max_size=max(self.config.ws_max_frame * 4, 1 << 24), ws_ping_interval=self.config.ws_ping_interval,
            ws_ping_timeout=self.config.ws_ping_interval, lifespan="off",
        )
        web = _EmbeddedUvicorn(config)
        web.listening = socket.create_server((self.config.host, self.config.ws_port))
        host, port = self.config.host, web.listening.getsockname()[1]
        log.info("HTTP listening on %s:%d (WebSocket ws://%s:%d/ and /v1/listen, page, REST)", host, port, host, port)
        print(f"listening ws://{host}:{port}/", flush=True)
        print(f"page http://{host}:{port}/", flush=True)
        return web

