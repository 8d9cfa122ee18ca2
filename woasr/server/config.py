"""The server's settings: one frozen record, filled from flags and ``STREAM_*`` variables by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from woasr.core.processor import ProcessorSettings
from woasr.core.vad import VadSettings


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
