"""The same hosted model for the official ``tritonserver`` container (Triton's Python backend).

``woasr triton serve`` binds the model through PyTriton; a GPU deployment may instead run the
official container with a model repository (``deploy/model_repository``), whose ``model.py``
files only import :class:`TritonPythonModel` from here. The model's ``parameters`` in its
``config.pbtxt`` choose what is loaded (``model``, ``language``, ``backend``, ``device``,
``compute_type``); the tensors are those of :mod:`woasr.engine.wire`, so front-ends cannot tell
the two apart. The repository's ``whisper_info`` model answers the description.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from woasr.asr.loaded import BACKENDS, DecodeSettings, LoadedASR, backend_key
from woasr.asr.models import resolve_model
from woasr.engine.triton_model import HostedModel
from woasr.engine.wire import INFO_MODEL_NAME

INPUTS = ("audio", "prompt", "language", "prefix", "options")


def _backend(parameters: dict[str, str]) -> str:
    return backend_key(parameters.get("backend", BACKENDS[0]))


def load_from_parameters(parameters: dict[str, str]) -> LoadedASR:
    """The backend a ``config.pbtxt``'s parameters describe (defaults: the language's default model,
    faster-whisper, cpu, int8)."""
    model, language = parameters.get("model") or None, parameters.get("language") or None
    device = parameters.get("device", "cpu")
    if _backend(parameters) == "whisper-timestamped":
        from woasr.asr.whisper_timestamped_backend import WhisperTimestampedASR

        return WhisperTimestampedASR(model, language, device=device, decode=DecodeSettings())
    from woasr.asr.faster_whisper_backend import FasterWhisperASR

    return FasterWhisperASR(model, language, device=device, compute_type=parameters.get("compute_type", "int8"))


def describe_parameters(parameters: dict[str, str]) -> dict[str, Any]:
    """What ``whisper_info`` answers, from the parameters alone (no second copy of the weights)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    language = parameters.get("language") or None
    choice = resolve_model(parameters.get("model") or None, language)  # the one the model instance loads
    return {"model": choice.name, "english_only": choice.english_only, "backend": _backend(parameters),
            "language": language or ("en" if choice.english_only else None),
            "languages": ["en"] if choice.english_only else list(_LANGUAGE_CODES)}


class TritonPythonModel:
    """Triton's Python-backend entry points: ``initialize``, ``execute``."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {name: value["string_value"] for name, value in config.get("parameters", {}).items()}
        self.description: bytes | None = None
        if args["model_name"] == INFO_MODEL_NAME:
            self.description = json.dumps(describe_parameters(parameters)).encode()
        else:
            self.hosted = HostedModel(load_from_parameters(parameters))

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils  # only inside tritonserver's Python stub

        responses = []
        for request in requests:
            try:
                if self.description is not None:
                    answer = np.array([self.description], dtype=object)
                else:
                    tensors = {name: tensor.as_numpy() for name in INPUTS
                               if (tensor := pb_utils.get_input_tensor_by_name(request, name)) is not None}
                    answer = self.hosted.infer([tensors])[0]["result"]
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("result", np.asarray(answer, dtype=object))]))
            except Exception as exc:  # noqa: BLE001 - the call fails, the model stays up
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")))
        return responses
