"""What every command needs of a loaded backend, whichever library runs the model.

The core sees only :class:`~woasr.core.backend.ASRBackend` (``transcribe``). The server, the
REST endpoint, ``eval`` and ``bench`` also read the model's name, its languages and decoding
settings, and ask for the whole-file variant: that wider surface is :class:`LoadedASR`, and
both adapters (:mod:`~woasr.asr.faster_whisper_backend`, :mod:`~woasr.asr.whisper_timestamped_backend`)
provide it with the same :class:`DecodeSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from woasr.asr.models import ModelChoice
from woasr.core.audio import FloatAudio
from woasr.core.records import Transcription

BACKENDS = ("faster-whisper", "whisper-timestamped")
"""The backend names ``--backend`` / ``STREAM_BACKEND`` take (``_`` is accepted for ``-``)."""


def backend_key(name: str) -> str:
    """A backend name as :data:`BACKENDS` spells it (any case, ``_`` for ``-``)."""
    return name.strip().lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class DecodeSettings:
    """Decoding options gathered in one place; every update uses the same ones.

    ``beam_size`` and ``task`` apply to both backends; the others shape faster-whisper's
    decoding (:mod:`~woasr.asr.whisper_timestamped_backend` says what it does without them)."""

    beam_size: int = 5
    task: Literal["transcribe", "translate"] = "transcribe"
    vad_filter: bool = False
    encoder_window: Literal["full", "auto"] = "auto"
    """``full`` pads every buffer to 30 s as faster-whisper does; ``auto`` encodes
    the buffer plus one second, at least ``encoder_floor_s`` (see docs/eval.md)."""
    encoder_floor_s: float = 10.0
    single_pass: bool = True
    """Decode a buffer of up to 30 s once. faster-whisper drops a last segment that has
    no end timestamp and decodes the audio from its start again (a second encoder and
    decoder pass, in most streaming updates, since a live buffer ends mid-speech); with
    this on, that segment is kept, ending at the buffer end (docs/eval.md). Whole files
    (the offline baseline, REST) keep faster-whisper's behaviour."""
    incremental: bool = True
    """Streaming buffers (up to 30 s) are decoded by :class:`~woasr.asr.buffer_decoder.BufferDecoder`: one encoder
    pass, the committed words forced as the decoder's prefix, the tail greedy first and
    with the beam only when unsure (docs/eval.md, "Cheaper updates"). Off: faster-whisper's
    ``transcribe`` decodes the whole buffer every update."""
    greedy_first: bool = False
    """With ``incremental``: greedy decoding, the beam search only as the fallback. Off by
    default: it saved about a third of the decoder time and cost about a WER point (docs/eval.md)."""
    fallback_logprob: float = -0.5
    """With ``greedy_first``: a greedy tail less probable than this per token is decoded again with the beam."""
    silence_pad_s: float = 0.0
    """Real silence appended to each buffer before the model sees it. Off by default: with
    the ``auto`` window it made Whisper loop in about one update in ten (docs/eval.md); the
    processor pads the last buffer of a stream instead (``ProcessorSettings.finish_pad_s``)."""


class LoadedASR(Protocol):
    """A loaded model behind the backend contract, with what the commands read of it."""

    backend: str
    """One of :data:`BACKENDS`."""
    choice: ModelChoice
    language: str | None
    """The language every call uses unless told otherwise (None: detect)."""
    decode: DecodeSettings

    @property
    def supported_languages(self) -> tuple[str, ...]:
        """Language codes the model accepts (``("en",)`` for an English-only model)."""
        ...

    def with_decode(self, **changes: object) -> LoadedASR:
        """The same loaded weights with other decoding settings."""
        ...

    def offline(self) -> LoadedASR:
        """The variant that decodes a whole file (the offline baseline, REST)."""
        ...

    def transcribe(self, audio: FloatAudio, prompt: str = "", language: str | None = None,
                   prefix: str = "") -> Transcription:
        """Words of one buffer, times relative to its start (:class:`~woasr.core.backend.ASRBackend`)."""
        ...
