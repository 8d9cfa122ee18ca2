"""``woasr triton serve``: one loaded backend as a model on a Triton Inference Server (PyTriton).

Front-ends (``woasr serve --engine triton``, :mod:`woasr.engine.triton`) send each model call as
the tensors of :mod:`woasr.engine.wire`; this process decodes it with the same adapter and the
same settings the in-process engine would use, so a transcript does not depend on where the
model runs. A second model, ``whisper_info``, describes what is served (model, backend,
languages) so that front-ends need not be told.

Batching is off: a Whisper call here transcribes one buffer (its own length, prompt and
prefix); Triton's dynamic batcher could only group calls and answer them together, later
(``../shared/notes/triton-cpu.md``; docs/deployment.md). Concurrency comes from instances: on a
CPU one per core, each call on one thread, as the in-process engine's workers (measured fastest).
PyTriton needs numpy < 2, so it runs from its own environment (``scripts/bootstrap_triton.sh``).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from woasr.asr.loaded import LoadedASR
from woasr.engine.wire import INFO_MODEL_NAME, MODEL_NAME, CallOptions, request_from_tensors, transcription_to_json

log = logging.getLogger(__name__)

LOAD_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class TritonPorts:
    """Where one model server listens (HTTP, gRPC, metrics: each instance needs its own three)."""

    host: str = "127.0.0.1"
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


class HostedModel:
    """The served backend, with a variant per decoding the front-ends ask for (made once each)."""

    def __init__(self, asr: LoadedASR) -> None:
        self.asr = asr
        self._variants: dict[CallOptions, LoadedASR] = {}
        self._lock = threading.Lock()

    def variant(self, options: CallOptions) -> LoadedASR:
        with self._lock:
            if options not in self._variants:
                # The front-end's settings first, then the whole-file decoding over them (as its own
                # ``offline()`` would do with a local model).
                asr = self.asr.with_decode(**dict(options.decode)) if options.decode else self.asr
                self._variants[options] = asr.offline() if options.whole_file else asr
            return self._variants[options]

    def describe(self) -> dict[str, Any]:
        """What ``whisper_info`` answers."""
        return {"model": self.asr.choice.name, "english_only": self.asr.choice.english_only,
                "backend": self.asr.backend, "language": self.asr.language,
                "languages": list(self.asr.supported_languages)}

    def infer(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """PyTriton's callback: each request's tensors in, its transcription out."""
        answers = []
        for tensors in requests:
            request, options = request_from_tensors(dict(tensors.items()))
            transcription = self.variant(options).transcribe(request.audio, request.prompt, request.language,
                                                             request.prefix)
            answers.append({"result": np.array([transcription_to_json(transcription)], dtype=object)})
        return answers

    def info(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        description = json.dumps(self.describe()).encode()
        return [{"result": np.array([description], dtype=object)} for _ in requests]


def serve_model(asr: LoadedASR, ports: TritonPorts, log_file: str | None = None, instances: int = 1) -> None:
    """Serve until SIGINT or SIGTERM (both stop Triton cleanly: in-flight calls finish, its workspace goes).

    ``instances``: model instances, each taking one call at a time on the same loaded weights (load
    ``asr`` with as many workers)."""
    from pytriton.triton import Triton, TritonConfig

    hosted = HostedModel(asr)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt  # what Triton.serve() stops on; a script started with & ignores SIGINT otherwise

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    config = TritonConfig(http_address=ports.host, http_port=ports.http, grpc_address=ports.host,
                          grpc_port=ports.grpc, metrics_port=ports.metrics, log_file=log_file,
                          exit_timeout_secs=10)  # an orphaned tritonserver (its parent killed) goes after 10 s
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        with Triton(config=config) as triton:
            try:
                _bind(triton, hosted, instances)
            except Exception as exc:  # noqa: BLE001 - PyTriton's load errors come in several kinds
                if attempt == LOAD_ATTEMPTS:
                    raise
                # PyTriton 0.7.0: the instances of a model start in parallel, and all but the first
                # fetch their configuration from the first's handshake socket; one that asks before
                # the socket exists fails the load ("Connection refused"). Start Triton again.
                log.warning("triton: the model failed to load (%s); starting again (%d/%d)",
                            " ".join(str(exc).split())[:200], attempt + 1, LOAD_ATTEMPTS)
                continue
            log.info("triton: model %s (%s), %d instance(s), on grpc %s:%d, http %d, metrics %d", asr.choice.name,
                     asr.backend, instances, ports.host, ports.grpc, ports.http, ports.metrics)
            print(f"ready triton model={asr.choice.name} grpc={ports.host}:{ports.grpc}", flush=True)
            triton.serve()
            return


def _bind(triton: Any, hosted: HostedModel, instances: int) -> None:
    """The two models on a started Triton: ``whisper`` with ``instances`` instances, ``whisper_info``."""
    from pytriton.model_config import ModelConfig, Tensor

    text = {"dtype": bytes, "shape": (1,), "optional": True}
    triton.bind(
        model_name=MODEL_NAME, infer_func=[hosted.infer] * instances,
        inputs=[Tensor(name="audio", dtype=np.float32, shape=(-1,)),
                *(Tensor(name=name, **text) for name in ("prompt", "language", "prefix", "options"))],
        outputs=[Tensor(name="result", dtype=bytes, shape=(1,))],
        config=ModelConfig(batching=False),
    )
    triton.bind(
        model_name=INFO_MODEL_NAME, infer_func=hosted.info,
        inputs=[Tensor(name="query", dtype=bytes, shape=(1,), optional=True)],
        outputs=[Tensor(name="result", dtype=bytes, shape=(1,))],
        config=ModelConfig(batching=False),
    )
