"""One model call as Triton tensors, both ways: written once for the front-end and the model server.

A call (:class:`~woasr.core.records.TranscriptionRequest` plus how to decode it) travels as
named tensors: ``audio`` (float32 samples), and one-element byte tensors ``prompt``,
``language`` (empty: detect), ``prefix`` and ``options`` (JSON: ``whole_file`` and the
:class:`~woasr.asr.loaded.DecodeSettings` fields the front-end sets). The answer is one byte
tensor ``result``: the :class:`~woasr.core.records.Transcription` as JSON, with every figure the
processor and the guards read.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from woasr.core.records import Segment, Transcription, TranscriptionRequest, Word

if TYPE_CHECKING:
    from woasr.asr.loaded import DecodeSettings

MODEL_NAME = "whisper"
"""The name the model has on the Triton server."""
INFO_MODEL_NAME = "whisper_info"
"""A second model that answers what is served: ``{"model", "english_only", "backend", "language", "languages"}``."""


@dataclass(frozen=True, slots=True)
class CallOptions:
    """How the model server decodes one call: as a live buffer or a whole file, with which settings."""

    whole_file: bool = False
    decode: tuple[tuple[str, Any], ...] = ()
    """``DecodeSettings`` fields to change on the server's model (sorted pairs, so the value can key a cache)."""

    @classmethod
    def of(cls, decode: DecodeSettings, whole_file: bool = False) -> CallOptions:
        """The options that carry a front-end's decoding settings."""
        return cls(whole_file, tuple(sorted(dataclasses.asdict(decode).items())))

    def to_json(self) -> bytes:
        return json.dumps({"whole_file": self.whole_file, "decode": dict(self.decode)}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CallOptions:
        fields = json.loads(data or b"{}")
        return cls(bool(fields.get("whole_file", False)), tuple(sorted(dict(fields.get("decode", {})).items())))


def request_tensors(request: TranscriptionRequest, options: CallOptions) -> dict[str, npt.NDArray[Any]]:
    """The named tensors of one call."""
    texts = {"prompt": request.prompt, "language": request.language or "", "prefix": request.prefix}
    tensors: dict[str, npt.NDArray[Any]] = {"audio": np.ascontiguousarray(request.audio, dtype=np.float32)}
    tensors.update({name: np.array([value.encode()], dtype=object) for name, value in texts.items()})
    tensors["options"] = np.array([options.to_json()], dtype=object)
    return tensors


def request_from_tensors(tensors: dict[str, npt.NDArray[Any]]) -> tuple[TranscriptionRequest, CallOptions]:
    """The call the front-end sent (a missing text tensor is empty)."""
    def text(name: str) -> str:
        value = tensors.get(name)
        if value is None or value.size == 0:
            return ""
        item = value.reshape(-1)[0]
        return item.decode() if isinstance(item, bytes) else str(item)

    audio = np.asarray(tensors["audio"], dtype=np.float32).reshape(-1)
    request = TranscriptionRequest(audio, text("prompt"), text("language") or None, text("prefix"))
    return request, CallOptions.from_json(text("options").encode())


def transcription_to_json(transcription: Transcription) -> bytes:
    """The answer tensor's bytes."""
    return json.dumps({
        "language": transcription.language,
        "after_prefix": transcription.after_prefix,
        "segments": [{
            "start": s.start, "end": s.end, "no_speech_prob": s.no_speech_prob, "avg_logprob": s.avg_logprob,
            "compression_ratio": s.compression_ratio,
            "words": [[w.start, w.end, w.text, w.probability] for w in s.words],
        } for s in transcription.segments],
    }, ensure_ascii=False).encode()


def transcription_from_json(data: bytes) -> Transcription:
    """The front-end's reading of the answer."""
    fields = json.loads(data)
    segments = tuple(
        Segment(float(s["start"]), float(s["end"]), tuple(Word(float(a), float(b), str(t), float(p))
                                                         for a, b, t, p in s["words"]),
                float(s["no_speech_prob"]), float(s["avg_logprob"]), float(s["compression_ratio"]))
        for s in fields["segments"]
    )
    return Transcription(segments, fields.get("language"), bool(fields.get("after_prefix", False)))
