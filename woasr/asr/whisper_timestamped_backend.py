"""The seed's second backend: whisper-timestamped (PyTorch, on ``openai-whisper``).

It aligns words by dynamic time warping on the decoder's cross-attention (the model's own
alignment heads) and gives each word a confidence. It runs the same offline models as
faster-whisper: their CTranslate2 weights are converted once, without loss, into an
``openai-whisper`` checkpoint (:mod:`woasr.asr.checkpoint`, ``woasr models convert``).

Same surface as :class:`~woasr.asr.faster_whisper_backend.FasterWhisperASR` (the
:class:`~woasr.core.backend.ASRBackend` contract plus ``choice``, ``language``, ``decode``,
``supported_languages``, ``with_decode``, ``offline``), so every command takes either. What does
not apply: the encoder window (``openai-whisper`` always encodes 30 s), the incremental decoder
with a forced prefix (each buffer is decoded from scratch; the processor drops what it already
committed, as with ``--no-incremental``), ``--vad-filter`` (whisper-timestamped's own VAD would
fetch Silero from the network) and int8 (PyTorch runs float32 on CPU).

whisper-timestamped hooks the model's attention layers for the length of a call, so two calls
must never share one model: each concurrent call borrows its own copy of the weights.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import queue
from typing import Any

import numpy as np

from woasr.asr.loaded import DecodeSettings
from woasr.asr.checkpoint import openai_whisper_checkpoint
from woasr.asr.models import ModelUnavailableError, resolve_model
from woasr.core.audio import FloatAudio
from woasr.core.records import Segment, Transcription, Word

log = logging.getLogger(__name__)

UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue", "bo"})
"""Languages whose words Whisper writes without spaces between them."""


def load_openai_whisper(checkpoint_path: str, device: str = "cpu") -> Any:
    """The ``openai-whisper`` model of a converted checkpoint, with the alignment heads it names."""
    try:
        import torch
        import whisper
    except ImportError as exc:
        raise ModelUnavailableError("the whisper-timestamped backend needs the optional extra: "
                                    "pip install 'woasr[timestamped]'") from exc
    # whisper-timestamped needs the attention weights, so it switches scaled-dot-product attention
    # off for each call through a class-wide flag and back on at the end: with calls in parallel,
    # one call's end would switch it on under another (no weights, a crash). Off for good.
    whisper.model.MultiHeadAttention.use_sdpa = False
    checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=False)
    model = whisper.Whisper(whisper.ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict({name: tensor.float() for name, tensor in checkpoint["model_state_dict"].items()})
    heads = checkpoint.get("alignment_heads") or []
    if heads:
        mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.to(device).eval()


def copy_model(model: Any) -> Any:
    """Another model with the same weights and alignment heads, and none of the hooks a running call may
    have put on ``model`` (a deep copy would take those along)."""
    import whisper

    replica = whisper.Whisper(model.dims)
    replica.load_state_dict(model.state_dict())
    replica.register_buffer("alignment_heads", model.alignment_heads.clone(), persistent=False)
    return replica.to(next(model.parameters()).device).eval()


class WhisperTimestampedASR:
    """whisper-timestamped behind the backend contract: one buffer in, DTW-aligned words out."""

    backend = "whisper-timestamped"

    def __init__(
        self,
        model: str | None = None,
        language: str | None = None,
        *,
        device: str = "cpu",
        cpu_threads: int = 0,
        decode: DecodeSettings | None = None,
        whisper_model: Any = None,
    ) -> None:
        self.choice = resolve_model(model, language)
        self.language = "en" if self.choice.english_only and language is None else language
        self.device = device
        self.compute_type = "float32"
        self.decode = decode or DecodeSettings()
        if cpu_threads > 0:
            import torch

            torch.set_num_threads(cpu_threads)
        self.model = whisper_model or load_openai_whisper(str(openai_whisper_checkpoint(self.choice)), device)
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()  # models no call is using (shared by variants)
        self._idle.put(self.model)
        if self.decode.vad_filter:
            log.warning("--vad-filter does not apply to whisper-timestamped: buffers are decoded whole")
        log.info("model %s (openai-whisper checkpoint) language=%s device=%s beam=%d backend=whisper-timestamped",
                 self.choice.name, self.language or "auto", device, self.decode.beam_size)

    @property
    def supported_languages(self) -> tuple[str, ...]:
        """Language codes the model accepts (``("en",)`` for an English-only model)."""
        if self.choice.english_only:
            return ("en",)
        from whisper.tokenizer import LANGUAGES

        return tuple(LANGUAGES)

    def with_decode(self, **changes: object) -> WhisperTimestampedASR:
        """The same loaded weights (and copies) with other decoding settings."""
        variant = copy.copy(self)
        variant.decode = dataclasses.replace(self.decode, **changes)  # type: ignore[arg-type]
        return variant

    def offline(self) -> WhisperTimestampedASR:
        """A file decoded as one whole (the offline baseline, REST): the same here."""
        return self

    def transcribe(self, audio: FloatAudio, prompt: str = "", language: str | None = None,
                   prefix: str = "") -> Transcription:
        """Words of one buffer, times relative to its start. ``prefix`` is not forced: every word
        comes back, and the processor drops those it committed already."""
        import whisper_timestamped

        beam = self.decode.beam_size
        try:
            model = self._idle.get_nowait()
        except queue.Empty:
            log.info("a concurrent call: one more copy of the model's weights")
            model = copy_model(self.model)
        try:
            result = whisper_timestamped.transcribe_timestamped(
                model, np.asarray(audio, dtype=np.float32), language=language or self.language,
                task=self.decode.task, initial_prompt=prompt or None, temperature=0.0,
                beam_size=beam if beam > 1 else None, best_of=None, condition_on_previous_text=False,
                vad=False, fp16=False, compute_word_confidence=True, verbose=None,
            )
        finally:
            self._idle.put(model)
        detected = result.get("language")
        spaced = (language or self.language or detected) not in UNSPACED_LANGUAGES
        segments = tuple(
            Segment(
                start=float(segment["start"]), end=float(segment["end"]),
                words=tuple(Word(float(w["start"]), float(w["end"]), (" " if spaced else "") + w["text"].strip(),
                                 float(w.get("confidence", 1.0))) for w in segment.get("words", ())),
                no_speech_prob=float(segment.get("no_speech_prob", 0.0)),
                avg_logprob=float(segment.get("avg_logprob", 0.0)),
                compression_ratio=float(segment.get("compression_ratio", 1.0)),
            )
            for segment in result.get("segments", ())
        )
        return Transcription(segments, detected)
