"""Whisper through faster-whisper / CTranslate2, as an :class:`ASRBackend`."""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading

import numpy as np
from faster_whisper import WhisperModel

from woasr.asr.buffer_decoder import BufferDecoder, TailPolicy
from woasr.asr.loaded import DecodeSettings
from woasr.asr.models import ModelChoice, ModelUnavailableError, offline_hint, resolve_model
from woasr.core.audio import SAMPLE_RATE, FloatAudio
from woasr.core.records import Segment, Transcription, Word

log = logging.getLogger(__name__)

FULL_WINDOW_FRAMES = 3000
"""Whisper's 30 s encoder input, in 10 ms mel frames."""

FULL_WINDOW_SAMPLES = FULL_WINDOW_FRAMES * SAMPLE_RATE // 100


class _WindowedWhisperModel(WhisperModel):
    """WhisperModel whose encoder can skip the padding past the audio, and that can keep an unfinished last segment.

    faster-whisper pads every window to 3000 frames; CTranslate2 accepts fewer.
    It also decodes again from the start of a last segment that lacks its end
    timestamp; ``keep_tail`` ends that segment at the window end instead. Both
    settings are per thread, so concurrent calls on one model each use their own.
    """

    _limit = threading.local()

    def encode(self, features: np.ndarray):  # type: ignore[override]
        frames = getattr(self._limit, "frames", None)
        if frames is not None and features.shape[-1] > frames:
            features = features[..., :frames]
        return super().encode(features)

    def _split_segments_by_timestamps(  # type: ignore[override]
        self, tokenizer, tokens, time_offset, segment_size, segment_duration, seek
    ):
        if getattr(self._limit, "keep_tail", False) and tokens and tokens[-1] < tokenizer.timestamp_begin:
            # An end timestamp at the window end: faster-whisper then takes the segment
            # as finished and moves past the window.
            end = tokenizer.timestamp_begin + min(FULL_WINDOW_FRAMES // 2, round(segment_duration / self.time_precision))
            tokens = [*tokens, end]
        return super()._split_segments_by_timestamps(
            tokenizer, tokens, time_offset, segment_size, segment_duration, seek
        )


def load_whisper(
    choice: ModelChoice,
    device: str = "cpu",
    compute_type: str = "int8",
    cpu_threads: int = 0,
    workers: int = 1,
    language: str | None = None,
) -> WhisperModel:
    """Load the weights once; offline, a hub name fails fast with the offline names.

    ``workers`` is how many transcriptions may run on the model at once.
    """
    kwargs = dict(device=device, compute_type=compute_type, cpu_threads=cpu_threads, num_workers=workers)
    try:
        return _WindowedWhisperModel(choice.source, local_files_only=True, **kwargs)
    except Exception as cached_error:  # noqa: BLE001 - faster-whisper raises many kinds
        if choice.source != choice.name:  # a local folder: nothing to download
            raise ModelUnavailableError(f"cannot load {choice.source}: {cached_error}") from cached_error
    try:
        return _WindowedWhisperModel(choice.source, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailableError(
            f"model {choice.name!r} is not on this machine and could not be downloaded "
            f"({type(exc).__name__}); {offline_hint(language)}"
        ) from exc


class FasterWhisperASR:
    """The seed's backend adapter: one buffer in, timed words and segment figures out."""

    backend = "faster-whisper"

    def __init__(
        self,
        model: str | None = None,
        language: str | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        workers: int = 1,
        decode: DecodeSettings | None = None,
        whisper: WhisperModel | None = None,
    ) -> None:
        self.choice = resolve_model(model, language)
        self.language = "en" if self.choice.english_only and language is None else language
        self.device = device
        self.compute_type = compute_type
        self.decode = decode or DecodeSettings()
        self.whisper = whisper or load_whisper(self.choice, device, compute_type, cpu_threads, workers, language)
        self.buffer_decoder = self._buffer_decoder()
        log.info(
            "model %s (%s) language=%s device=%s compute_type=%s beam=%d encoder_window=%s",
            self.choice.name, self.choice.source, self.language or "auto", device, compute_type,
            self.decode.beam_size, self.decode.encoder_window,
        )

    @property
    def supported_languages(self) -> tuple[str, ...]:
        """Language codes the loaded model accepts (``("en",)`` for an English-only model)."""
        return tuple(self.whisper.supported_languages)

    def with_decode(self, **changes: object) -> FasterWhisperASR:
        """The same loaded model with other decoding settings (e.g. a full-window baseline)."""
        variant = copy.copy(self)
        variant.decode = dataclasses.replace(self.decode, **changes)
        variant.buffer_decoder = variant._buffer_decoder()
        return variant

    def offline(self) -> FasterWhisperASR:
        """The same model decoding as plain faster-whisper does a file (the offline baseline, REST)."""
        return self.with_decode(encoder_window="full", silence_pad_s=0.0, single_pass=False, incremental=False)

    def _buffer_decoder(self) -> BufferDecoder:
        policy = TailPolicy(self.decode.beam_size, self.decode.greedy_first, self.decode.fallback_logprob)
        return BufferDecoder(self.whisper, policy, self.decode.task)

    def encoder_frames(self, samples: int) -> int | None:
        """How many mel frames the encoder sees for a buffer (None: faster-whisper's 3000)."""
        if self.decode.encoder_window == "full":
            return None
        seconds = int(np.ceil(samples / SAMPLE_RATE)) + 1
        return min(FULL_WINDOW_FRAMES, 100 * max(seconds, int(np.ceil(self.decode.encoder_floor_s))))

    def transcribe(self, audio: FloatAudio, prompt: str = "", language: str | None = None,
                   prefix: str = "") -> Transcription:
        """Transcribe one buffer; word and segment times are relative to its start.

        ``prefix`` is committed text the buffer begins with. The incremental decoder
        forces it and returns only the words after it; plain decoding ignores it and
        returns every word (the processor drops what it already committed).
        """
        duration = len(audio) / SAMPLE_RATE
        if self.decode.silence_pad_s > 0:
            audio = np.concatenate([audio, np.zeros(round(self.decode.silence_pad_s * SAMPLE_RATE), np.float32)])
        if self.decode.incremental and not self.decode.vad_filter and len(audio) <= FULL_WINDOW_SAMPLES:
            frames = self.encoder_frames(len(audio))
            transcription = self.buffer_decoder.transcribe(audio, prompt, language or self.language, prefix, frames)
        else:
            transcription = self._transcribe_plain(audio, prompt, language)
        return transcription.clipped(duration) if self.decode.silence_pad_s > 0 else transcription

    def _transcribe_plain(self, audio: FloatAudio, prompt: str, language: str | None) -> Transcription:
        """faster-whisper's ``transcribe`` (a whole file, or a buffer decoded from scratch)."""
        # The window is sized on the padded audio: Whisper needs padding frames after
        # the last sound to know where the audio ends, or it loops in the silence.
        limit = _WindowedWhisperModel._limit
        limit.frames = self.encoder_frames(len(audio))
        limit.keep_tail = self.decode.single_pass and len(audio) <= FULL_WINDOW_SAMPLES
        try:
            segments, info = self.whisper.transcribe(
                audio,
                language=language or self.language,
                task=self.decode.task,
                initial_prompt=prompt or None,
                beam_size=self.decode.beam_size,
                temperature=0.0,
                word_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=self.decode.vad_filter,
            )
            result = tuple(
                Segment(
                    start=float(s.start),
                    end=float(s.end),
                    words=tuple(Word(float(w.start), float(w.end), w.word, float(w.probability)) for w in s.words or ()),
                    no_speech_prob=s.no_speech_prob,
                    avg_logprob=s.avg_logprob,
                    compression_ratio=s.compression_ratio,
                )
                for s in segments
            )
        finally:
            limit.frames, limit.keep_tail = None, False
        return Transcription(result, info.language)
