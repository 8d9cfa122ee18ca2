"""One streaming update in one encoder pass and one short decoder pass.

faster-whisper's ``transcribe`` is built for files: it decodes timestamp
tokens, may run encoder and decoder twice on one buffer (its seek loop), and
decodes every word of the buffer again on every update, with beam search. In
a stream most of the buffer was already committed by earlier updates. Here
the committed words inside the buffer are forced as the decoder's prefix, so
the search runs only over the uncommitted tail (CTranslate2 still feeds the
prefix token by token, which is cheaper than searching it but not free); the
tail is decoded with beam search, or, with ``greedy_first``, greedily and
again with the beam only when the greedy result looks unsure (low
log-probability, a loop, text that compresses too well); words are aligned on
the same encoder output. Measured in docs/eval.md ("Cheaper updates").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

from woasr.core.audio import SAMPLE_RATE, FloatAudio
from woasr.core.records import Segment, Transcription, Word

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
"""faster-whisper's defaults: punctuation merged into the neighbouring word."""

TRAILING_PUNCTUATION = ".。,，!！?？:：;、…"
"""Punctuation not forced at the end of a prefix (the decoder may put it back)."""

MAX_COMPRESSION_RATIO = 2.4
"""Text that gzip shrinks more than this is a loop (Whisper's own threshold)."""


@dataclass(frozen=True, slots=True)
class TailPolicy:
    """How the uncommitted tail is decoded."""

    beam_size: int = 5
    """Beam of the fallback search (1: greedy only)."""
    greedy_first: bool = False
    """Decode greedily first and search with the beam only when unsure."""
    fallback_logprob: float = -0.5
    """Greedy tails whose mean token log-probability is below this are decoded again with the beam."""
    tokens_per_second: float = 8.0
    """At most this many new tokens per second of audio (plus ``min_new_tokens``): fluent
    speech needs about 4, so a decoder that reaches the cap is looping."""
    min_new_tokens: int = 24


@dataclass(frozen=True, slots=True)
class _Tail:
    tokens: list[int]
    """All result tokens: the forced prefix, then the decoded tail."""
    new: int
    logprob: float
    no_speech_prob: float
    compression_ratio: float
    capped: bool

    def unsure(self, policy: TailPolicy) -> bool:
        return self.capped or self.compression_ratio > MAX_COMPRESSION_RATIO or (
            self.new > 0 and self.logprob < policy.fallback_logprob
        )


class BufferDecoder:
    """Transcribes one live buffer whose first words are already committed."""

    def __init__(self, whisper: WhisperModel, policy: TailPolicy, task: str = "transcribe") -> None:
        self.whisper = whisper
        self.policy = policy
        self.task = task
        self.fallbacks = 0
        """How many decodes needed the beam search (for the profile)."""

    def transcribe(self, audio: FloatAudio, prompt: str, language: str | None, prefix: str,
                   encoder_frames: int | None) -> Transcription:
        """The words heard after ``prefix``, times relative to the buffer start.

        ``encoder_frames`` is the encoder input length (None: Whisper's 30 s).
        """
        whisper = self.whisper
        features = whisper.feature_extractor(audio)[:, :-1]
        content_frames = min(features.shape[-1], 3000)
        encoder_output = whisper.encode(pad_or_trim(features, encoder_frames or 3000))
        if language is None and whisper.model.is_multilingual:
            language = whisper.model.detect_language(encoder_output)[0][0][0][2:-2]
        tokenizer = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual, task=self.task,
                              language=language or "en")
        # The last committed word's punctuation was heard where an older buffer ended; forced,
        # a full stop there makes the decoder end the text instead of going on.
        prefix = prefix.rstrip().rstrip(TRAILING_PUNCTUATION)
        previous = tokenizer.encode(" " + prompt.strip()) if prompt.strip() else []
        prompt_tokens = whisper.get_prompt(tokenizer, previous[-(whisper.max_length // 2 - 1) :],
                                           without_timestamps=True, prefix=prefix or None)
        forced = len(prompt_tokens) - prompt_tokens.index(tokenizer.no_timestamps) - 1
        duration = len(audio) / SAMPLE_RATE
        max_new = self.policy.min_new_tokens + math.ceil(self.policy.tokens_per_second * duration)
        max_length = min(whisper.max_length, len(prompt_tokens) + max_new)

        greedy = self.policy.greedy_first or self.policy.beam_size <= 1
        tail = self._decode(encoder_output, prompt_tokens, tokenizer, forced, max_length, 1 if greedy else None)
        if greedy and self.policy.beam_size > 1 and tail.unsure(self.policy):
            self.fallbacks += 1
            tail = self._decode(encoder_output, prompt_tokens, tokenizer, forced, max_length, None)
        if tail.new == 0:
            return Transcription((), language, bool(prefix))

        segment = {"seek": 0, "start": 0.0, "end": duration, "tokens": tail.tokens}
        whisper.add_word_timestamps([[segment]], tokenizer, encoder_output, content_frames,
                                    PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS, last_speech_timestamp=0.0)
        aligned = segment.get("words") or []
        words = tuple(
            Word(float(w["start"]), float(w["end"]), w["word"], float(w["probability"]))
            for w in aligned[_forced_words(aligned, tokenizer.decode(tail.tokens[:forced])):]
        )
        if not words:
            return Transcription((), language, bool(prefix))
        heard = Segment(words[0].start, words[-1].end, words, no_speech_prob=tail.no_speech_prob,
                        avg_logprob=tail.logprob, compression_ratio=tail.compression_ratio)
        return Transcription((heard,), language, bool(prefix))

    def _decode(self, encoder_output, prompt_tokens: list[int], tokenizer: Tokenizer, forced: int,
                max_length: int, beam: int | None) -> _Tail:
        # ``suppress_blank`` forbids end-of-text as the first decoded token: after a forced
        # prefix that spells the whole buffer, the model must then invent more words.
        result = self.whisper.model.generate(
            encoder_output, [prompt_tokens], beam_size=beam or self.policy.beam_size, patience=1.0,
            length_penalty=1.0, max_length=max_length, return_scores=True, return_no_speech_prob=True,
            suppress_blank=forced == 0, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        new = tokens[forced:]
        return _Tail(
            tokens=tokens,
            new=len(new),
            logprob=float(result.scores[0]) if result.scores else 0.0,
            no_speech_prob=float(result.no_speech_prob),
            compression_ratio=get_compression_ratio(tokenizer.decode(new)) if new else 0.0,
            capped=len(prompt_tokens) + len(new) >= max_length,
        )


def _forced_words(aligned: list[dict], prefix: str) -> int:
    """How many aligned words spell out ``prefix`` (a word straddling its end counts)."""
    target = len("".join(prefix.split()))
    if target == 0:
        return 0
    spelled = 0
    for index, word in enumerate(aligned):
        spelled += len("".join(str(word["word"]).split()))
        if spelled >= target:
            return index + 1
    return len(aligned)
