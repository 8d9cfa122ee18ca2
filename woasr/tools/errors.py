"""Why streaming differs from offline: each difference attributed to the mechanism that made it.

The eval records every update of a stream (:class:`UpdateTrace`: the raw hypothesis
before the guards, what the guards kept, what was committed, the prompt, where the
buffer started) and aligns the committed text with the offline transcription of the
same file. Each aligned difference (a chunk of substitutions, deletions or
insertions) is put under one mechanism, checked in this order:

``end_of_stream``
    committed by the last update (``finish()``), or offline words after the last
    committed word (lost at the end);
``prompt``
    an insertion of two or more words that were in the prompt of the update that
    committed them (Whisper copied its context);
``duplicate``
    an insertion that repeats the words just committed before it;
``guard_drop``
    offline words that a hallucination guard removed from a streaming hypothesis;
``early_commit``
    committed words that a later hypothesis of the same audio contradicted (agreement
    on a short-context guess);
``trim_or_cap``
    within a second of a buffer cut, or committed at the hard cap;
``other``
    none of the above: the model heard the audio differently with streaming's
    context (less right context, another prompt, another buffer start).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jiwer

from woasr.core.audio import SAMPLE_RATE, FloatAudio
from woasr.core.backend import ASRBackend
from woasr.core.hypothesis import normalize_token
from woasr.core.records import Transcription, Word
from woasr.tools.textnorm import normalize_text

MECHANISMS = ("end_of_stream", "prompt", "duplicate", "guard_drop", "early_commit", "trim_or_cap", "other")
CUT_NEIGHBOURHOOD_S = 1.0
"""An error this close to a buffer cut counts as made at the cut."""
GUARD_MATCH_S = 0.3
"""A dropped word explains an offline word of the same text this close in time."""
REPEAT_N = 3
"""Shortest phrase that counts as committed twice."""


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One backend call as the recording backend saw it."""

    prompt: str
    result: Transcription
    audio_s: float


class RecordingBackend:
    """Passes calls to a backend and keeps the last one (prompt and raw result)."""

    def __init__(self, asr: ASRBackend) -> None:
        self.asr = asr
        self.last: ModelCall | None = None

    def transcribe(self, audio: FloatAudio, prompt: str, language: str | None, prefix: str = "") -> Transcription:
        result = self.asr.transcribe(audio, prompt, language, prefix)
        self.last = ModelCall(prompt, result, len(audio) / SAMPLE_RATE)
        return result

    def take(self) -> ModelCall | None:
        """The call made since the previous take (None if the update made none)."""
        call, self.last = self.last, None
        return call


@dataclass(frozen=True, slots=True)
class UpdateTrace:
    """One update of a stream, in absolute seconds."""

    buffer_start: float
    """Where the update's buffer began."""
    buffer_s: float
    """Its length before the update."""
    raw: tuple[Word, ...]
    """The hypothesis before the guards."""
    dropped: tuple[Word, ...]
    """Raw words the guards removed."""
    committed: tuple[Word, ...]
    prompt: str
    final: bool


def trace_update(call: ModelCall | None, buffer_start: float, pad_s: float, committed: tuple[Word, ...],
                 final: bool, heard: Callable[[Transcription, float], list[Word]]) -> UpdateTrace:
    """The trace of one update from the model call it made (if any); ``pad_s`` is the
    silence the processor appended to the buffer for that call, ``heard`` the processor's
    guards (:meth:`~woasr.core.processor.OnlineASRProcessor.heard`)."""
    if call is None:
        return UpdateTrace(buffer_start, 0.0, (), (), committed, "", final)
    buffer_s = call.audio_s - pad_s
    result = call.result.clipped(buffer_s)
    raw = tuple(w.shifted(buffer_start) for w in result.words)
    kept = Counter((w.text, round(w.start, 3)) for w in heard(result, buffer_start))
    dropped = []
    for word in raw:
        key = (word.text, round(word.start, 3))
        if kept[key]:
            kept[key] -= 1
        else:
            dropped.append(word)
    return UpdateTrace(buffer_start, buffer_s, raw, tuple(dropped), committed, call.prompt, final)


@dataclass(slots=True)
class _Token:
    text: str
    word: Word
    update: int  # index of the committing update (-1 for offline words)


def _tokens(words: Iterable[tuple[Word, int]], language: str) -> list[_Token]:
    return [_Token(t, w, u) for w, u in words for t in normalize_text(w.text, language).split()]


def repeated_phrases(stream: Sequence[str], offline: Sequence[str], n: int = REPEAT_N) -> list[str]:
    """Phrases of ``n`` or more tokens that the streaming text has twice where offline has them once.

    An occurrence counts when streaming has the phrase more often than offline
    and most of its words have no counterpart in the offline text (they are
    insertions in the alignment): a speaker who really says something twice
    shows it offline too, and a misheard word that happens to recreate a phrase
    ("policy" for "policies") is a substitution, not a phrase committed twice.
    """
    inserted = _inserted(stream, offline)
    allowed = Counter(tuple(offline[i : i + n]) for i in range(len(offline) - n + 1))
    seen: Counter[tuple[str, ...]] = Counter()
    excess: list[int] = []
    for i in range(len(stream) - n + 1):
        gram = tuple(stream[i : i + n])
        seen[gram] += 1
        if seen[gram] >= 2 and seen[gram] > allowed[gram] and 2 * sum(inserted[i : i + n]) > n:
            excess.append(i)
    runs: list[list[int]] = []
    for i in excess:
        if runs and i <= runs[-1][-1] + n:
            runs[-1].append(i)
        else:
            runs.append([i])
    return [" ".join(stream[run[0] : run[-1] + n]) for run in runs]


def _inserted(stream: Sequence[str], offline: Sequence[str]) -> list[bool]:
    """Per streaming token: whether the alignment with the offline tokens makes it an insertion."""
    if not stream:
        return []
    if not offline:
        return [True] * len(stream)
    mask = [False] * len(stream)
    for chunk in jiwer.process_words(" ".join(offline), " ".join(stream)).alignments[0]:
        if chunk.type == "insert":
            mask[chunk.hyp_start_idx : chunk.hyp_end_idx] = [True] * (chunk.hyp_end_idx - chunk.hyp_start_idx)
    return mask


@dataclass(slots=True)
class Breakdown:
    """Errors of streaming against offline, counted per mechanism, with examples."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def __iadd__(self, other: Breakdown) -> Breakdown:
        self.counts.update(other.counts)
        self.examples += other.examples
        return self

    def as_json(self) -> dict[str, int]:
        return {m: self.counts.get(m, 0) for m in MECHANISMS}


class _Attributor:
    """Explains the differences of one stream against its offline transcription."""

    def __init__(self, trace: list[UpdateTrace], offline: tuple[Word, ...], language: str,
                 max_buffer_s: float) -> None:
        self.trace = trace
        self.language = language
        self.max_buffer_s = max_buffer_s
        committed = [(w, i) for i, u in enumerate(trace) for w in u.committed]
        self.stream = _tokens(committed, language)
        self.offline = _tokens(((w, -1) for w in offline), language)
        self.cuts = [b.buffer_start for a, b in zip(trace, trace[1:]) if b.buffer_start > a.buffer_start and not a.final]
        self.dropped = [w for u in trace for w in u.dropped]
        self.last_end = committed[-1][0].end if committed else 0.0

    def breakdown(self, clip: str) -> Breakdown:
        result = Breakdown()
        if not self.stream and not self.offline:
            return result
        out = jiwer.process_words(
            " ".join(t.text for t in self.offline) or "<empty>", " ".join(t.text for t in self.stream) or "<empty>"
        )
        for chunk in out.alignments[0]:
            if chunk.type == "equal":
                continue
            ref = self.offline[chunk.ref_start_idx : chunk.ref_end_idx] if self.offline else []
            hyp = self.stream[chunk.hyp_start_idx : chunk.hyp_end_idx] if self.stream else []
            errors = max(len(ref), len(hyp)) if chunk.type == "substitute" else len(ref) + len(hyp)
            mechanism = self._mechanism(chunk.type, ref, hyp, chunk.hyp_start_idx)
            result.counts[mechanism] += errors
            words = hyp or ref
            result.examples.append({
                "clip": clip, "mechanism": mechanism, "type": chunk.type, "errors": errors,
                "time_s": round(words[0].word.start, 2) if words else None,
                "streaming": " ".join(t.text for t in hyp), "offline": " ".join(t.text for t in ref),
            })
        return result

    def _mechanism(self, kind: str, ref: list[_Token], hyp: list[_Token], hyp_start: int) -> str:
        if any(self.trace[t.update].final for t in hyp) or (kind == "delete" and ref[0].word.start >= self.last_end):
            return "end_of_stream"
        if kind == "insert" and len(hyp) >= 2:
            prompt = " " + normalize_text(self.trace[hyp[0].update].prompt, self.language) + " "
            if " " + " ".join(t.text for t in hyp) + " " in prompt:
                return "prompt"
        if kind == "insert" and self._repeats_before(hyp, hyp_start):
            return "duplicate"
        if kind != "insert" and any(self._dropped_by_guard(t) for t in ref):
            return "guard_drop"
        if hyp and any(self._contradicted(t) for t in hyp):
            return "early_commit"
        times = [t.word.start for t in hyp + ref]
        if any(abs(cut - time) <= CUT_NEIGHBOURHOOD_S for cut in self.cuts for time in times):
            return "trim_or_cap"
        if any(self.trace[t.update].buffer_s >= self.max_buffer_s for t in hyp):
            return "trim_or_cap"
        return "other"

    def _repeats_before(self, hyp: list[_Token], start: int) -> bool:
        texts = [t.text for t in hyp]
        before = [t.text for t in self.stream[max(0, start - len(texts) - 3) : start]]
        if len(texts) == 1:
            return bool(before) and before[-1] == texts[0]
        return any(before[i : i + len(texts)] == texts for i in range(len(before) - len(texts) + 1))

    def _dropped_by_guard(self, token: _Token) -> bool:
        key = normalize_token(token.word.text)
        return any(
            normalize_token(w.text) == key and abs(w.start - token.word.start) <= GUARD_MATCH_S for w in self.dropped
        )

    def _contradicted(self, token: _Token) -> bool:
        """Whether a later hypothesis still covering the word heard something else there."""
        word = token.word
        key = normalize_token(word.text)
        for update in self.trace[token.update + 1 :]:
            if update.buffer_start > word.start:
                return False
            around = [w for w in update.raw if w.start < word.end and w.end > word.start]
            if around and all(normalize_token(w.text) != key for w in around):
                return True
        return False


def explain(clip: str, trace: list[UpdateTrace], offline: tuple[Word, ...], language: str,
            max_buffer_s: float) -> tuple[Breakdown, list[str]]:
    """The error breakdown of one stream against offline, and the phrases it committed twice."""
    attributor = _Attributor(trace, offline, language, max_buffer_s)
    repeats = repeated_phrases([t.text for t in attributor.stream], [t.text for t in attributor.offline])
    return attributor.breakdown(clip), repeats


def report(counts: dict[str, int], examples: list[dict[str, Any]], per_mechanism: int = 8) -> str:
    """A readable ``--errors`` report: errors per mechanism, then the largest examples of each."""
    total = sum(counts.values())
    lines = [f"Streaming errors against offline: {total}", "", "| mechanism | errors | share |", "|---|---|---|"]
    for mechanism in MECHANISMS:
        count = counts.get(mechanism, 0)
        lines.append(f"| {mechanism} | {count} | {count / total:.0%} |" if total else f"| {mechanism} | 0 | - |")
    for mechanism in MECHANISMS:
        chosen = sorted((e for e in examples if e["mechanism"] == mechanism), key=lambda e: -e["errors"])
        if chosen:
            lines += ["", f"{mechanism}:"]
            lines += [f"  {e['clip']} @{e['time_s']}s {e['type']}: streaming {e['streaming']!r} / offline {e['offline']!r}"
                      for e in chosen[:per_mechanism]]
    return "\n".join(lines)
