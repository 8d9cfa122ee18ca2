"""The streaming service: one model, one engine, the open sessions; no transport in sight.

Transports reach it only through :func:`woasr.server.lifecycle.serve_session`
(and the REST endpoint through :attr:`StreamingService.engine`). The model
loads in the background (:meth:`StreamingService.load`) so that listeners can
open at once; sessions that arrive earlier wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from woasr.asr.loaded import LoadedASR
from woasr.core.processor import OnlineASRProcessor
from woasr.engine import InferenceEngine, LocalEngine
from woasr.engine.admission import Admission
from woasr.protocol.commands import Resume
from woasr.protocol.events import CAPACITY, RESUME_FAILED, Error, Final, Ready
from woasr.protocol.session import StreamSession
from woasr.server.access import AddressLimit, Tokens
from woasr.server.config import ServerConfig
from woasr.server.metrics import ServerMetrics
from woasr.server.resume import Resumable, ResumableSessions
from woasr.server.runner import Send, SessionRunner

log = logging.getLogger(__name__)


class ModelLoadFailed(RuntimeError):
    """The model could not be loaded; the server stops."""


class StreamingService:
    """The shared parts: the model, the engine, session ids, admission and draining."""

    def __init__(self, load_asr: Callable[[], LoadedASR] | Callable[[], Awaitable[LoadedASR]], config: ServerConfig,
                 engine: InferenceEngine | None = None,
                 make_engine: Callable[[Admission, ServerMetrics], InferenceEngine] | None = None) -> None:
        """``load_asr`` loads the model (blocking, run in a thread) or, for a remote engine, is a
        coroutine that waits until the remote model answers; ``make_engine`` builds an engine on
        this service's admission and metrics (default: the local engine)."""
        self.load_asr = load_asr
        self.config = config
        self.metrics = ServerMetrics()
        admission = Admission(config.workers, config.admission_chunk, config.max_sessions,
                              latency_target=config.latency_target)
        if engine is None and make_engine is not None:
            engine = make_engine(admission, self.metrics)
        self.engine: InferenceEngine = engine or LocalEngine(lambda: self.asr, config.workers, admission)
        self.asr: LoadedASR | None = None
        self.draining = False
        self._runners: set[SessionRunner] = set()
        self._per_address = AddressLimit(config.max_sessions_per_address)
        self.tokens = Tokens(config.tokens)
        self.resumable = ResumableSessions(config.resume_window)
        self._loaded = asyncio.Event()
        self._ids = itertools.count(1)

    # -- model ---------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.asr is not None

    async def wait_ready(self) -> LoadedASR:
        await self._loaded.wait()
        assert self.asr is not None
        return self.asr

    async def load(self) -> None:
        """Load the model off the event loop; raises :class:`ModelLoadFailed`."""
        try:
            if asyncio.iscoroutinefunction(self.load_asr):
                self.asr = await self.load_asr()
            else:
                self.asr = await asyncio.to_thread(self.load_asr)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - any load failure stops the server
            raise ModelLoadFailed(str(exc)) from exc
        self._loaded.set()
        log.info("ready: model %s loaded", self.asr.choice.name)
        print(f"ready model={self.asr.choice.name}", flush=True)

    # -- sessions ------------------------------------------------------------
    @property
    def active_sessions(self) -> int:
        return len(self._runners)

    @property
    def attached_sessions(self) -> int:
        """Sessions with a connection: those that may send audio (a detached one only finishes what it holds)."""
        return len(self._runners) - self.resumable.detached

    def refusal(self, transport: str, address: str | None = None) -> Error | None:
        """Why a new session is refused now (shutting down, at capacity, too many from ``address``),
        or None to admit it.

        A refusal is counted in the metrics and logged; the transport tells the client.
        """
        if self.draining:
            refusal = Error("shutting_down", "the server is shutting down; connect again later")
        elif reason := self.engine.admission.refusal(self.attached_sessions):
            refusal = Error(CAPACITY, f"{reason}; try again later")
        elif reason := self._per_address.refusal(address, self.resumable.detached_from(address)):
            refusal = Error(CAPACITY, f"{reason}; try again later")
        else:
            return None
        self.metrics.session_refused(transport, refusal.code)
        log.warning("refused a %s session from %s: %s", transport, address or "?", refusal.message)
        return refusal

    def refuse_unauthorized(self, transport: str, address: str | None) -> None:
        """Count and log a client without a valid token (the token itself is never logged)."""
        self.metrics.session_refused(transport, "unauthorized")
        log.warning("refused a %s session from %s: missing or wrong token", transport, address or "?")

    def refuse_origin(self, transport: str, origin: str) -> None:
        """Count and log a browser page whose origin may not open sessions."""
        self.metrics.session_refused(transport, "origin")
        log.warning("refused a %s session: origin %s is not allowed (--allowed-origins)", transport, origin)

    def new_runner(self, transport: str, send: Send) -> SessionRunner:
        """A new session (id ``<transport>-N``) with its runner on the shared engine."""
        asr = self.asr
        assert asr is not None, "new_runner() before the model is ready"
        processor = OnlineASRProcessor(asr, asr.language, self.config.settings)
        session = StreamSession(processor, self.config.min_chunk, languages=asr.supported_languages,
                                vac=self.config.vac, vad=self.config.vad)
        prefix = self.config.frontend.session_prefix if self.config.frontend is not None else ""  # f1. ...
        session_id = f"{prefix}{transport}-{next(self._ids)}"
        return SessionRunner(session_id, session, self.engine, send, self.metrics, transport)

    def ready_event(self, runner: SessionRunner, resume_token: str | None = None) -> Ready:
        """The greeting of a new session: its id, the model, the effective settings and its resume token."""
        asr = self.asr
        assert asr is not None
        settings: dict[str, Any] = {
            "backend": asr.backend,
            "beam_size": asr.decode.beam_size,
            "encoder_window": asr.decode.encoder_window,
            "task": asr.decode.task,
            "agreement": self.config.settings.agreement,
            "max_buffer_s": self.config.settings.max_buffer_s,
        }
        return Ready(runner.session_id, asr.choice.name, runner.session.options, settings,
                     resume_token=resume_token)

    def claim(self, request: Resume) -> tuple[Resumable, list[Final]] | Error:
        """The dropped session ``request`` resumes, or why not; a session of another front-end process
        (``--processes``) is not here: the answer names that process's own port."""
        claimed = self.resumable.claim(request)
        frontend = self.config.frontend
        if isinstance(claimed, Error) and frontend is not None:
            owner = frontend.owner_of(request.session_id)
            if owner is not None and owner != frontend.index:
                port = frontend.own_port(owner)
                return Error(RESUME_FAILED, f"session {request.session_id} lives on front-end {owner}: resume it "
                                            f"on port {port}; this connection goes on as the new session of its "
                                            "ready", resume_port=port)
        return claimed

    @contextlib.contextmanager
    def track_session(self, runner: SessionRunner, address: str | None = None) -> Iterator[None]:
        """Count the session as active (in the metrics and for its address), and let a drain finish it."""
        self._runners.add(runner)
        self._per_address.opened(address)
        self.metrics.session_started(runner.transport)
        try:
            yield
        finally:
            self._runners.discard(runner)
            self._per_address.closed(address)
            self.engine.admission.load_fell()
            self.metrics.session_ended(runner.transport)
            self.metrics.forget_session(runner.session_id)

    async def drain(self, timeout: float, force: asyncio.Event) -> None:
        """Finish every open session; wait until they are done, ``timeout`` passes or ``force`` is set."""
        self.draining = True
        self.resumable.give_up_all()
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

    def close(self) -> None:
        self.engine.close()
