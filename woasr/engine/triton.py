"""The remote inference engine: model calls on one or more Triton servers (``woasr serve --engine triton``).

Each call goes to the least busy healthy instance (fewest calls out, then the lowest recent
latency), with a deadline: a server whose process was killed can keep its ports open and
answer nothing (``../shared/notes/triton-cpu.md``), so a call without one could wait for
ever. A call that fails or times out marks its instance down and is retried once on another;
the session goes on. A background check brings instances back (and finds those that were down
at start). Calls, errors, failovers and per-instance latency are Prometheus metrics.

The front-end loads no weights: :class:`RemoteModel` stands for the served model (what
``whisper_info`` says it is) wherever a command needs a loaded one, and sends whole-file
jobs (REST) through the same routing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from woasr.asr.loaded import DecodeSettings
from woasr.asr.models import ModelChoice
from woasr.core.audio import FloatAudio
from woasr.core.records import Transcription, TranscriptionRequest
from woasr.engine.admission import Admission
from woasr.engine.base import InferenceResult
from woasr.engine.wire import INFO_MODEL_NAME, MODEL_NAME, CallOptions, request_tensors, transcription_from_json

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CALL_TIMEOUT_S = 10.0
HEALTH_INTERVAL_S = 1.0
DOWN_FOR_S = 3.0
"""After a failed call an instance gets no calls for this long, even if it says it is ready (a killed
PyTriton server's Triton process reports ready for about two seconds while it stops)."""
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


class NoInstanceError(RuntimeError):
    """No Triton instance is up to take a call."""


class RemoteMetrics:
    """The remote engine's figures, on the server's registry (``/metrics``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.calls = Counter("woasr_triton_calls", "Model calls sent to a Triton instance.", ["instance"], registry=r)
        self.errors = Counter("woasr_triton_errors", "Calls that failed or timed out, by instance.", ["instance"],
                              registry=r)
        self.failovers = Counter("woasr_triton_failovers", "Calls retried on another instance after a failure.",
                                 registry=r)
        self.latency = Histogram("woasr_triton_call_seconds", "Round trip of one call, by instance.", ["instance"],
                                 buckets=LATENCY_BUCKETS, registry=r)


@dataclass(slots=True)
class Instance:
    """One Triton server, as the router sees it."""

    url: str
    client: Any = None
    healthy: bool = False
    down_until: float = 0.0
    in_flight: int = 0
    latency_s: float = 0.0
    """Moving average of recent round trips."""

    def usable(self, now: float) -> bool:
        return self.healthy and now >= self.down_until


def parse_urls(text: str) -> tuple[str, ...]:
    """``host:port[,host:port...]`` (gRPC ports) -> the addresses, in order; a clear error otherwise."""
    urls = tuple(u.strip() for u in text.split(",") if u.strip())
    for url in urls:
        host, _, port = url.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{url!r} is not host:port")
    if not urls:
        raise ValueError("no Triton address given")
    return urls


class TritonEngine:
    """Model calls for every session of this front-end, routed over the Triton instances."""

    def __init__(self, urls: Sequence[str], decode: DecodeSettings, admission: Admission | None = None, *,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT_S, registry: CollectorRegistry | None = None) -> None:
        self.instances = [Instance(url) for url in urls]
        self.decode = decode
        self.live_options = CallOptions.of(decode)
        self.admission = admission or Admission(workers=len(self.instances))
        self.call_timeout = call_timeout
        self.metrics = RemoteMetrics(registry)
        self._health: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the engine interface ---------------------------------------------------
    async def transcribe(self, request: TranscriptionRequest, *, since: float | None = None) -> InferenceResult:
        """One streaming call (``since`` is not needed: each instance queues its own calls in order)."""
        result = await self.call(request, self.live_options)
        self.admission.observe(result.inference_s)
        return result

    async def run(self, job: Callable[[], T], *, since: float | None = None) -> T:
        """A whole-file job: it runs here in a thread and sends its model call through :meth:`call`
        (:class:`RemoteModel`), so it takes no local worker."""
        return await asyncio.to_thread(job)

    def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
        for instance in self.instances:
            if instance.client is not None:
                asyncio.ensure_future(instance.client.close())

    # -- routing ----------------------------------------------------------------
    async def call(self, request: TranscriptionRequest, options: CallOptions) -> InferenceResult:
        """The call on the least busy instance; on failure, once more on another one."""
        self._start_health_checks()
        tried: set[str] = set()
        while True:
            instance = self._pick(tried)
            if instance is None:
                raise NoInstanceError(f"no Triton instance is up ({', '.join(i.url for i in self.instances)})")
            try:
                return await self._infer(instance, request, options)
            except Exception as exc:  # noqa: BLE001 - any failure: this instance is suspect, try another
                self._mark_down(instance, exc)
                tried.add(instance.url)
                if len(tried) > 1 or self._pick(tried) is None:
                    raise NoInstanceError(f"model call failed on {', '.join(sorted(tried))}: {exc}") from exc
                self.metrics.failovers.inc()
                log.warning("triton %s failed (%s): retrying the call on another instance", instance.url,
                            _short(exc))

    def _pick(self, tried: set[str]) -> Instance | None:
        now = time.monotonic()
        usable = [i for i in self.instances if i.url not in tried and i.usable(now)]
        return min(usable, key=lambda i: (i.in_flight, i.latency_s), default=None)

    async def _infer(self, instance: Instance, request: TranscriptionRequest, options: CallOptions) -> InferenceResult:
        from tritonclient.grpc import InferInput, InferRequestedOutput

        inputs = []
        for name, array in request_tensors(request, options).items():
            tensor = InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "BYTES")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        instance.in_flight += 1
        self.metrics.calls.labels(instance.url).inc()
        started = time.perf_counter()
        try:
            answer = await instance.client.infer(MODEL_NAME, inputs, outputs=[InferRequestedOutput("result")],
                                                 client_timeout=self.call_timeout)
        finally:
            instance.in_flight -= 1
        elapsed = time.perf_counter() - started
        self.metrics.latency.labels(instance.url).observe(elapsed)
        instance.latency_s = elapsed if instance.latency_s == 0 else 0.8 * instance.latency_s + 0.2 * elapsed
        transcription = transcription_from_json(answer.as_numpy("result").reshape(-1)[0])
        return InferenceResult(transcription, 0.0, elapsed)

    def _mark_down(self, instance: Instance, exc: BaseException) -> None:
        self.metrics.errors.labels(instance.url).inc()
        instance.down_until = time.monotonic() + DOWN_FOR_S
        if instance.healthy:
            log.warning("triton %s is down: %s", instance.url, _short(exc))
        instance.healthy = False

    # -- health -----------------------------------------------------------------
    async def connect(self) -> dict[str, Any]:
        """Open the clients, check every instance (those down are skipped, with a log line) and
        wait until one answers ``whisper_info``: what the instances serve."""
        from tritonclient.grpc.aio import InferenceServerClient

        self._loop = asyncio.get_running_loop()
        for instance in self.instances:
            instance.client = InferenceServerClient(instance.url)
        await self._check_all(first=True)
        self._start_health_checks()
        while True:
            for instance in self.instances:
                if instance.healthy:
                    try:
                        return await self._describe(instance)
                    except Exception as exc:  # noqa: BLE001
                        self._mark_down(instance, exc)
            await asyncio.sleep(HEALTH_INTERVAL_S)

    async def _describe(self, instance: Instance) -> dict[str, Any]:
        from tritonclient.grpc import InferRequestedOutput

        answer = await instance.client.infer(INFO_MODEL_NAME, [], outputs=[InferRequestedOutput("result")],
                                             client_timeout=self.call_timeout)
        return dict(json.loads(answer.as_numpy("result").reshape(-1)[0]))

    def _start_health_checks(self) -> None:
        if self._health is None and self._loop is not None:
            self._health = self._loop.create_task(self._health_loop(), name="triton-health")

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            await self._check_all()

    async def _check_all(self, first: bool = False) -> None:
        results = await asyncio.gather(*(self._ready(i) for i in self.instances))
        for instance, (ready, why) in zip(self.instances, results, strict=True):
            if ready and not instance.healthy:
                log.info("triton %s is up", instance.url)
            elif not ready and (instance.healthy or first):
                log.warning("triton %s is %s: %s", instance.url, "not reachable, skipped" if first else "down", why)
            instance.healthy = ready
        self.admission.workers = max(1, sum(i.healthy for i in self.instances))

    async def _ready(self, instance: Instance) -> tuple[bool, str]:
        try:
            timeout = min(self.call_timeout, 2.0)
            ready = (await instance.client.is_server_ready(client_timeout=timeout)
                     and await instance.client.is_model_ready(MODEL_NAME, client_timeout=timeout))
            return bool(ready), "" if ready else "not ready"
        except Exception as exc:  # noqa: BLE001
            return False, _short(exc)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class RemoteModel:
    """The model the Triton instances serve, standing in for a loaded one (:class:`~woasr.asr.loaded.LoadedASR`).

    ``transcribe`` is blocking, for whole-file jobs run in a thread (REST): it sends the call
    through the engine on the event loop.
    """

    def __init__(self, engine: TritonEngine, description: dict[str, Any], language: str | None,
                 decode: DecodeSettings | None = None, whole_file: bool = False) -> None:
        self.engine = engine
        self.description = description
        self.backend = str(description["backend"])
        self.choice = ModelChoice(str(description["model"]), "triton:" + ",".join(i.url for i in engine.instances),
                                  bool(description["english_only"]))
        self.language = language if language is not None else description.get("language")
        self.decode = decode or engine.decode
        self.whole_file = whole_file

    @property
    def supported_languages(self) -> tuple[str, ...]:
        return tuple(self.description["languages"])

    def with_decode(self, **changes: object) -> RemoteModel:
        decode = dataclasses.replace(self.decode, **changes)  # type: ignore[arg-type]
        return RemoteModel(self.engine, self.description, self.language, decode, self.whole_file)

    def offline(self) -> RemoteModel:
        return RemoteModel(self.engine, self.description, self.language, self.decode, whole_file=True)

    def transcribe(self, audio: FloatAudio, prompt: str = "", language: str | None = None,
                   prefix: str = "") -> Transcription:
        loop = self.engine._loop
        if loop is None:
            raise RuntimeError("the Triton engine is not connected")
        options = CallOptions.of(self.decode, self.whole_file)
        request = TranscriptionRequest(np.asarray(audio, dtype=np.float32), prompt, language or self.language, prefix)
        future = asyncio.run_coroutine_threadsafe(self.engine.call(request, options), loop)
        return future.result().transcription
