"""``woasr serve``: one process, one model, every transport on top of it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

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


class StreamingService:
    """The shared parts: the model, the engine and how a new session is made."""

    def __init__(self, asr, config: ServerConfig) -> None:
        self.asr = asr
        self.config = config
        self.engine = LocalEngine(config.workers)

    def new_session(self) -> StreamSession:
        processor = OnlineASRProcessor(self.asr, self.asr.language, self.config.settings)
        return StreamSession(processor, self.config.min_chunk)

    async def start(self) -> list[asyncio.Server]:
        """Open the listening sockets; returns them (their ports, when 0 was asked)."""
        servers = []
        if self.config.tcp_port > 0:
            tcp = TCPServer(self.new_session, self.engine, self.config.idle_timeout)
            server = await tcp.start(self.config.host, self.config.tcp_port)
            port = server.sockets[0].getsockname()[1]
            log.info("TCP  listening on %s:%d (raw PCM16LE mono 16 kHz in, '<beg_ms> <end_ms> <text>' lines out)",
                     self.config.host, port)
            print(f"listening tcp://{self.config.host}:{port}", flush=True)
            servers.append(server)
        return servers

    async def serve_forever(self) -> None:
        servers = await self.start()
        try:
            await asyncio.gather(*(s.serve_forever() for s in servers))
        finally:
            self.engine.close()
