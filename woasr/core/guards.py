"""Hallucination guards: keep silence and repetition loops out of the hypotheses.

Whisper invents text for silence and noise, and sometimes repeats a phrase
until its token limit. Both would otherwise be committed, because consecutive
hypotheses of the same audio tend to agree on the same invention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from woasr.core.hypothesis import normalize_token
from woasr.core.records import Segment, Word


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Thresholds, as in Whisper's own decoding fallbacks."""

    no_speech_prob: float = 0.6
    """A segment this likely to be silence ..."""
    low_logprob: float = -1.0
    """... whose average token log-probability is also below this is dropped."""
    max_compression_ratio: float = 2.4
    """gzip ratio of a segment's text above which it is a repetition loop."""
    max_loop_repeats: int = 2
    """A two-word phrase may occur this many times in a row before the rest is cut ("no way, no way")."""
    max_phrase_repeats: int = 1
    """A phrase of three or more words may occur this many times in a row: Whisper repeats the
    buffer's last clause when it runs out of audio ("Not so much. Not so much."), people
    rarely say a whole clause twice back to back (and the next hypothesis would hear it again)."""
    max_word_repeats: int = 4
    """A single word may repeat this many times in a row before the rest is cut."""
    min_word_probability: float = 0.15
    """Below this a word is improbable (one sign of an invented word)."""
    min_unconfirmed_probability: float = 0.35
    """At the end of a stream, trailing words no second hypothesis confirmed need this much."""
    max_instant_run: int = 3
    """This many words in a row that take no time ("voice. I am recording the sound" all at
    one instant) are words the model did not hear: the hypothesis is cut before them."""
    instant_s: float = 0.03
    """A word shorter than this takes no time (Whisper's timestamps have 20 ms steps)."""
    min_speech_probability: float = 0.0
    """A word during which (give or take ``speech_margin_s``) no 32 ms frame reached this speech
    probability of the voice-activity detector was said in silence: dropped (0: off)."""
    speech_margin_s: float = 0.2


def is_hallucination(segment: Segment, settings: GuardSettings) -> bool:
    """True when the segment looks like silence transcribed or a repetition loop."""
    silent = segment.no_speech_prob > settings.no_speech_prob and segment.avg_logprob < settings.low_logprob
    looping = segment.compression_ratio > settings.max_compression_ratio
    return silent or looping


def is_anomalous_word(word: Word, settings: GuardSettings) -> bool:
    """Improbable, or implausibly short or long (the scoring of faster-whisper's hallucination check).

    Words Whisper adds to trailing silence typically get almost no duration
    ("which are an exact imitation" all at one instant) or a tiny probability.
    """
    duration = word.end - word.start
    score = 1.0 if word.probability < settings.min_word_probability else 0.0
    score += max(0.0, 0.133 - duration) * 15 + max(0.0, duration - 2.0)
    return score >= 1.0


def drop_trailing_anomalies(words: tuple[Word, ...], settings: GuardSettings) -> tuple[Word, ...]:
    """The words without the improbable ones at the end.

    Whisper likes to add a stray "Hope." or "Thank you." to the silence at the
    end of a buffer; consecutive hypotheses may even agree on it.
    """
    end = len(words)
    while end and is_anomalous_word(words[end - 1], settings):
        end -= 1
    return words[:end]


def drop_unconfirmed_tail(words: tuple[Word, ...], settings: GuardSettings) -> tuple[Word, ...]:
    """The last hypothesis of a stream without its improbable trailing words.

    When the stream ends, the words no later hypothesis could confirm are
    committed on the model's word alone; a stray low-probability word in the
    final silence ("themselves. helps.") is left out.
    """
    words = drop_trailing_anomalies(words, settings)
    end = len(words)
    while end and words[end - 1].probability < settings.min_unconfirmed_probability:
        end -= 1
    return words[:end]


def cut_repetition_loop(words: list[Word], settings: GuardSettings) -> list[Word]:
    """Keep words up to the point where a phrase starts repeating itself too often.

    "the the" and "no, no, no" are speech; "in being modern. in being modern."
    is a decoder loop. The first occurrences are kept, the loop is cut.
    """
    tokens = [normalize_token(w.text) for w in words]
    for start in range(len(tokens)):
        for size in range(1, (len(tokens) - start) // 2 + 1):
            allowed = (settings.max_word_repeats if size == 1 else
                       settings.max_loop_repeats if size == 2 else settings.max_phrase_repeats)
            phrase = tokens[start : start + size]
            repeats = 1
            at = start + size
            while tokens[at : at + size] == phrase:
                repeats += 1
                at += size
            if repeats > allowed:
                return words[: start + size * allowed]
    return words


def cut_instant_run(words: list[Word], settings: GuardSettings) -> list[Word]:
    """Keep words up to a run of words that all take no time.

    When Whisper runs out of audio it sometimes repeats the buffer's last phrase
    squeezed into one instant before the final word; two hypotheses can agree on
    it, and it would be committed as a phrase said twice.
    """
    run = 0
    for i, word in enumerate(words):
        run = run + 1 if word.end - word.start < settings.instant_s else 0
        if run >= settings.max_instant_run:
            return words[: i + 1 - run]
    return words


def clean_segments(segments: tuple[Segment, ...], settings: GuardSettings) -> list[Word]:
    """The hypothesis' words without hallucinated segments, loops, instant runs and an invented tail."""
    words = [w for s in segments if not is_hallucination(s, settings) for w in s.words]
    words = cut_instant_run(cut_repetition_loop(words, settings), settings)
    return list(drop_trailing_anomalies(tuple(words), settings))


def drop_words_in_silence(words: list[Word], peak: Callable[[float, float], float | None],
                          settings: GuardSettings) -> list[Word]:
    """The words without those the voice-activity detector heard no speech in.

    ``peak(start, end)`` is the highest speech probability of that span (None: not
    heard yet, the word is kept). Whisper fills pauses with "Thank you." and
    similar; consecutive hypotheses of the same pause may agree on it.
    """
    margin = settings.speech_margin_s
    kept = []
    for word in words:
        probability = peak(word.start - margin, word.end + margin)
        if probability is None or probability >= settings.min_speech_probability:
            kept.append(word)
    return kept
