"""The server's settings: one frozen record, filled from flags and ``STREAM_*`` variables by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from woasr.core.processor import ProcessorSettings
from woasr.core.vad import VadSettings
from woasr.server.frontends import Frontend


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    tcp_port: int
    min_chunk: float
    idle_timeout: float
    """A session whose received audio falls this many seconds behind the wall clock is finished
    (both transports; bytes, pings or commands without audio do not count)."""
    workers: int
    settings: ProcessorSettings
    ws_port: int = 0
    """WebSocket/HTTP port; 0 disables it."""
    vac: bool = False
    """Voice-activity control for every session (a WebSocket client may also ask for it)."""
    vad: VadSettings = field(default_factory=VadSettings)
    """The voice-activity detector's settings, wherever it runs."""
    max_backlog_s: float = 5.0
    """Seconds of received audio a session may hold unprocessed; past it the server stops reading
    that connection (backpressure) until updates catch up. Nothing is dropped."""
    max_sessions_per_address: int = 0
    """Concurrent sessions one client address may hold; 0 = no limit."""
    allowed_origins: tuple[str, ...] = ()
    """Web origins (``https://app.example``) whose pages may open WebSocket sessions besides the
    server's own page; ``*`` allows any. Clients that send no ``Origin`` (not browsers) are not affected."""
    tokens: tuple[str, ...] = ()
    """Tokens a client must present (WebSocket/HTTP ``Authorization: Bearer`` or ``?token=``, TCP a first
    line ``AUTH <token>``); empty = no authentication."""
    ssl_certfile: str | None = None
    """TLS certificate (PEM) for the WebSocket/HTTP port (then ``wss://``, ``https://``); None = plain.
    TCP stays plain: put a TLS terminator in front of it."""
    ssl_keyfile: str | None = None
    """The certificate's private key (PEM), if it is not in ``ssl_certfile``."""
    frontend: Frontend | None = None
    """This process's place among several front-ends on the same ports (``--processes``), or None."""
    resume_window: float = 30.0
    """Seconds a WebSocket session whose connection dropped is kept for the client to resume it
    (its received audio is transcribed meanwhile); 0 = no resume."""
    ws_max_frame: int = 1 << 20
    """Largest WebSocket message accepted, in bytes; a larger one closes with 1009."""
    ws_ping_interval: float = 20.0
    drain_timeout: float = 10.0
    """On shutdown, seconds open sessions get to finish and send their last finals."""
    max_sessions: int = 0
    """Hard limit of concurrent sessions; 0 = decided by measured capacity alone."""
    rest_max_seconds: float = 1800.0
    """Longest audio a REST upload may decode to, in seconds (413 past it); 0 = no cap. A 25 MB
    Opus file holds hours of speech: decoding it is bounded by this, and so is one job's worker time."""
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
