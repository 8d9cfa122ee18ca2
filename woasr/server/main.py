"""``woasr serve``: one process, one model, every transport on top of it.

The listening sockets open at once and the model loads in the background, so
``/healthz`` answers while a large model loads and ``/readyz`` says when it is
ready. Connections that arrive before that wait; their audio is kept.

SIGINT/SIGTERM drain the server: new connections are refused, every open session
is finished (its received audio transcribed, its last finals sent) and closed,
then the process exits. A second signal stops at once.

This is the only module that imports the transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Iterator

import prometheus_client
import uvicorn

from woasr.config import UserInputError
from woasr.server.service import StreamingService
from woasr.transports.tcp import start_tcp_server
from woasr.transports.web.app import create_app, redact_query_tokens

log = logging.getLogger(__name__)
metrics_log = logging.getLogger("woasr.metrics")


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside ``woasr serve``: the service owns the signals, so it can drain first."""

    listening: list[socket.socket]

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_forever(service: StreamingService) -> bool:
    """Open every listener, load the model, serve until a signal (then drain) or a failed load.

    Returns whether a second signal forced the stop: then open sessions and HTTP requests
    were abandoned, and a model call may still be running on a worker thread (the caller
    should exit the process at once rather than wait for it).
    """
    stop, force = asyncio.Event(), asyncio.Event()
    async with _signals(stop, force), _metrics_endpoints(service):
        loading = asyncio.create_task(service.load(), name="load-model")
        tcp: asyncio.Server | None = None
        web: _EmbeddedUvicorn | None = None
        serving: list[asyncio.Task[None]] = []
        try:
            config = service.config
            if config.tcp_port > 0:
                with _listening("--tcp-port", config.host, config.tcp_port):
                    tcp = await start_tcp_server(service, config.host, config.tcp_port, config.frontend is not None)
                port = tcp.sockets[0].getsockname()[1]
                log.info("TCP  listening on %s:%d (raw PCM16LE mono 16 kHz in, '<beg_ms> <end_ms> <text>' lines out)",
                         config.host, port)
                print(f"listening tcp://{config.host}:{port}", flush=True)
            if config.ws_port > 0:
                web = _web_server(service)
                serving.append(asyncio.create_task(web.serve(sockets=web.listening), name="web"))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([loading, stopping, *serving], return_when=asyncio.FIRST_COMPLETED)
            if loading.done():
                loading.result()  # raises ModelLoadFailed
                await asyncio.wait([stopping, *serving], return_when=asyncio.FIRST_COMPLETED)
            if tcp is not None:
                tcp.close()
            await service.drain(config.drain_timeout, force)
            log.info("stopped")
        finally:
            loading.cancel()
            if web is not None:
                await _stop_web(web, serving, force)
            service.close()
    return force.is_set()


async def _stop_web(web: _EmbeddedUvicorn, serving: list[asyncio.Task[None]], force: asyncio.Event) -> None:
    """uvicorn's graceful stop (open HTTP requests finish, up to the drain timeout), cut short by ``force``."""
    web.should_exit = True
    forcing = asyncio.create_task(force.wait())
    await asyncio.wait([*serving, forcing], return_when=asyncio.FIRST_COMPLETED)
    if force.is_set():
        web.force_exit = True
    await asyncio.gather(*serving, return_exceptions=True)
    forcing.cancel()


@contextlib.asynccontextmanager
async def _signals(stop: asyncio.Event, force: asyncio.Event) -> AsyncIterator[None]:
    """SIGINT/SIGTERM set ``stop`` (drain), a second one ``force`` (stop at once)."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (force if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def _metrics_endpoints(service: StreamingService) -> AsyncIterator[None]:
    """The separate Prometheus port (for TCP-only servers) and the periodic p50/p95 log line, if configured."""
    config = service.config
    server = None
    if config.metrics_port > 0:
        # prometheus_client's own HTTP server, on a thread.
        with _listening("--metrics-port", config.host, config.metrics_port):
            server, _thread = prometheus_client.start_http_server(
                config.metrics_port, addr=config.host, registry=service.metrics.registry)
        port = server.server_address[1]
        log.info("metrics listening on %s:%d (Prometheus, GET /metrics)", config.host, port)
        print(f"listening metrics http://{config.host}:{port}/metrics", flush=True)
    logging_task = None
    if config.metrics_log_interval > 0:
        logging_task = asyncio.create_task(_log_metrics(service), name="log-metrics")
    try:
        yield
    finally:
        if logging_task is not None:
            logging_task.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()


async def _log_metrics(service: StreamingService) -> None:
    """Every ``metrics_log_interval`` seconds, one line of p50/p95 since the previous one."""
    while True:
        await asyncio.sleep(service.config.metrics_log_interval)
        metrics_log.info("%s", service.metrics.summary())


@contextlib.contextmanager
def _listening(what: str, host: str, port: int) -> Iterator[None]:
    """A port that cannot be bound (in use, not allowed) is for the user to fix: one line, no traceback."""
    try:
        yield
    except OSError as exc:
        raise UserInputError(f"{what}: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _web_server(service: StreamingService) -> _EmbeddedUvicorn:
    """uvicorn on the WebSocket/HTTP port; with a certificate, TLS (``wss://``, ``https://``)."""
    config = service.config
    if config.ssl_keyfile and not config.ssl_certfile:
        raise UserInputError("--ssl-keyfile needs --ssl-certfile")
    uvicorn_config = uvicorn.Config(
        create_app(service), log_config=None, access_log=False, ws="websockets-sansio",
        ws_max_size=max(config.ws_max_frame * 4, 1 << 24), ws_ping_interval=config.ws_ping_interval,
        ws_ping_timeout=config.ws_ping_interval, lifespan="off", timeout_graceful_shutdown=config.drain_timeout,
        ssl_certfile=config.ssl_certfile, ssl_keyfile=config.ssl_keyfile,
    )
    if config.ssl_certfile:
        try:  # now, so that a wrong certificate or key stops the server with one line, not at the first request
            uvicorn_config.load()
        except OSError as exc:  # ssl.SSLError included
            raise UserInputError(f"--ssl-certfile/--ssl-keyfile: cannot load the certificate: {exc}") from exc
    logging.getLogger("uvicorn.error").addFilter(redact_query_tokens)  # it logs ?token= with each handshake
    web = _EmbeddedUvicorn(uvicorn_config)
    frontend = config.frontend
    with _listening("--ws-port", config.host, config.ws_port):
        web.listening = [socket.create_server((config.host, config.ws_port), reuse_port=frontend is not None)]
    if frontend is not None:  # its own port too: resumes of its sessions are sent here
        with _listening(f"front-end {frontend.index}'s own port (--ws-port + {frontend.index + 1})", config.host,
                        frontend.own_ws_port):
            web.listening.append(socket.create_server((config.host, frontend.own_ws_port)))
        log.info("front-end %d of %d: own WebSocket port %d", frontend.index, frontend.count, frontend.own_ws_port)
    host, port = config.host, web.listening[0].getsockname()[1]
    ws, http = ("wss", "https") if config.ssl_certfile else ("ws", "http")
    log.info("HTTP listening on %s:%d (WebSocket %s://%s:%d/ and /v1/stream, Deepgram /v1/listen, "
             "OpenAI /v1/realtime, page, REST%s)", host, port, ws, host, port, ", TLS" if config.ssl_certfile else "")
    print(f"listening {ws}://{host}:{port}/", flush=True)
    print(f"page {http}://{host}:{port}/", flush=True)
    return web
