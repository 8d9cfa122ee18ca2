"""The online processor: a rolling audio buffer re-transcribed as audio arrives."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from woasr.core.audio import SAMPLE_RATE, FloatAudio, to_float32
from woasr.core.backend import ASRBackend
from woasr.core.guards import GuardSettings, clean_segments, drop_unconfirmed_tail, drop_words_in_silence
from woasr.core.hypothesis import HypothesisBuffer
from woasr.core.records import Transcription, TranscriptionRequest, Update, Word, join_words
from woasr.core.vad import FRAME_S, SpeechTrace

SENTENCE_ENDS = (".", "?", "!", "。", "？", "！")

DEFAULT_MIN_CHUNK_S = 0.5
"""Seconds of new audio between updates unless told otherwise (``--min-chunk``). Measured
(docs/eval.md): against 1.0 s it halves the committed latency on conversational speech
(p50 about 1.0 s instead of 1.8 s) for 0.7 WER points on ``conv/``; below 0.5 s the update
cost grows faster than the latency falls. The seed recommends 0.2-0.5."""

CONTEXT_WORDS = 256
"""Committed words remembered: the prompt before the buffer and the forced prefix inside it."""

PAUSE_KEPT_S = 0.5
"""Seconds of a pause a buffer cut at that pause keeps, before the next speech."""

LANGUAGE_LOCK_S = 2.0
"""With auto-detection, the language heard in a buffer this long is kept for the stream."""


class CallOrderError(RuntimeError):
    """The processor's two-step update was used out of order (a bug in its caller)."""


@dataclass(slots=True)
class ProcessorSettings:
    """How the rolling buffer is kept short (all in seconds)."""

    trim_s: float = 15.0
    """Past this length the buffer is cut at the last committed segment or sentence end."""
    max_buffer_s: float = 30.0
    """Hard cap: at this length stable words are committed and the buffer is cut regardless."""
    cap_keep_s: float = 1.0
    """At the hard cap, words ending in the last this-many seconds stay uncommitted."""
    holdback_s: float = 0.0
    """Agreed words ending this close to the end of the buffer wait for the next update."""
    finish_pad_s: float = 0.5
    """At the end of a stream the model hears this much silence after the last sample,
    so a word that runs up to the very end is recognised as complete."""
    prompt_chars: int = 200
    """Committed text fed back as Whisper's prompt, at most this many characters."""
    agreement: int = 2
    """LocalAgreement-n: how many consecutive hypotheses must agree to commit."""
    doubtful_below: float = 0.0
    """An agreed word this improbable in an agreeing hypothesis waits for one more (0: off)."""
    silent_below: float = 0.0
    """Skip the model call of an update when no word is pending and the voice-activity
    detector's speech probability stayed below this in all the audio since the last call:
    the model would only hear the same words again (0: never skip; docs/eval.md)."""
    pause_trim_s: float = 0.0
    """A buffer longer than this is cut in the latest pause (at least ``pause_s``) between
    committed words, or after them at a skipped silent update: short buffers cost less to
    encode and less forced prefix to decode, and no word is cut at a pause (0: off)."""
    pause_s: float = 0.3
    """The shortest gap between committed words that counts as a pause for ``pause_trim_s``."""
    guards: GuardSettings = field(default_factory=GuardSettings)


class OnlineASRProcessor:
    """Streams audio into committed words with LocalAgreement.

    Sans-I/O: :meth:`insert_audio` only appends samples; :meth:`process` runs
    the backend once over the current buffer and returns an :class:`Update`.
    The caller decides how often to call it (that is the "min chunk").
    :meth:`finish` commits what is left at the end of a stream.

    The model call can also be made by someone else (an inference engine,
    another thread or machine): :meth:`prepare` returns the
    :class:`TranscriptionRequest` and :meth:`apply` takes its result;
    :meth:`finish_request` and :meth:`apply_finish` do the same for
    :meth:`finish`. ``process()`` is ``apply(asr.transcribe(prepare()))``.

    Memory and the cost of one update stay bounded however long the stream
    runs: the buffer never exceeds ``max_buffer_s`` (plus whatever was inserted
    since the last update) and only a short tail of committed text is kept.
    """

    def __init__(
        self,
        asr: ASRBackend,
        language: str | None = None,
        settings: ProcessorSettings | None = None,
    ) -> None:
        self.asr = asr
        self.language = language
        self.settings = settings or ProcessorSettings()
        self.initial_prompt = ""
        """Text the caller gives as context (names, vocabulary); it precedes the committed
        text in the prompt and yields to it when the prompt is full."""
        self.reset()

    def reset(self) -> None:
        """Start a new stream at time zero."""
        self.audio: FloatAudio = np.zeros(0, dtype=np.float32)
        self.buffer_offset = 0
        """Absolute sample index of ``audio[0]``."""
        self.processed_until = 0
        """Absolute sample index up to which audio has been transcribed."""
        self.hypothesis = HypothesisBuffer(self.settings.agreement, self.settings.doubtful_below)
        self._context: deque[Word] = deque(maxlen=CONTEXT_WORDS)
        self._segment_ends: list[float] = []
        self._awaited_pad_s: float | None = None
        """Silence pad of the request :meth:`prepare` returned and :meth:`apply` has not yet taken."""
        self.detected_language: str | None = None
        wanted = self.settings.guards.min_speech_probability > 0 or self.settings.silent_below > 0
        self._speech = SpeechTrace() if wanted else None
        """Speech probabilities of the buffer: for the guard against words said in silence,
        and to skip updates that would only hear silence."""
        self.skipped_updates = 0

    @property
    def buffer_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def received_until(self) -> int:
        """Absolute sample index just past the last inserted sample."""
        return self.buffer_offset + len(self.audio)

    def insert_audio(self, samples: npt.ArrayLike) -> None:
        """Append 16 kHz mono samples (int16 PCM or float in [-1, 1])."""
        chunk = to_float32(samples)
        if chunk.size:
            self.audio = np.concatenate([self.audio, chunk])
            if self._speech is not None:
                self._speech.feed(chunk)

    def skip_silence(self, samples: npt.ArrayLike) -> None:
        """Let the timeline pass over audio the model need not hear (voice-activity control).

        Between utterances the buffer is empty and only its offset moves; should
        an utterance still be open, the audio is inserted, so the buffer stays
        one contiguous piece of the stream.
        """
        if len(self.audio):
            self.insert_audio(samples)
            return
        count = len(np.asarray(samples))
        self.buffer_offset += count
        if self._speech is not None:
            self._speech.skip(count)
        self.processed_until = max(self.processed_until, self.buffer_offset)

    def process(self) -> Update:
        """Transcribe the buffer once; commit what the last hypotheses agree on."""
        request = self.prepare()
        if request is None:
            return Update(partial=self.hypothesis.partial)
        return self.apply(self._transcribe(request))

    def prepare(self, pad_s: float = 0.0) -> TranscriptionRequest | None:
        """The model call for the current buffer (None when it is empty).

        The buffer counts as processed from here on; the next call on this
        processor must be :meth:`apply` with the request's result (else
        :class:`CallOrderError`).
        """
        if self._awaited_pad_s is not None:
            raise CallOrderError("prepare() again before apply() took the previous request's result")
        if not len(self.audio):
            return None
        if pad_s == 0 and self._only_silence_is_new():
            self.processed_until = self.received_until
            self.skipped_updates += 1
            if self.settings.pause_trim_s and self.buffer_s > self.settings.pause_trim_s:
                # The newest hypothesis has no word past the committed ones: the model heard
                # nothing there. A little of the pause is kept before the next speech.
                pause_end = self.received_until / SAMPLE_RATE - PAUSE_KEPT_S
                self._cut_buffer(max(self.hypothesis.last_committed_end, pause_end))
            return None
        self.processed_until = self.received_until
        self._awaited_pad_s = pad_s
        audio = self.audio
        if pad_s > 0:
            audio = np.concatenate([audio, np.zeros(round(pad_s * SAMPLE_RATE), np.float32)])
        return TranscriptionRequest(audio, self.prompt(), self.language or self.detected_language, self.prefix())

    def _only_silence_is_new(self) -> bool:
        """Nothing waits for agreement, and the audio since the last model call is silence."""
        if self._speech is None or self.settings.silent_below <= 0 or self.hypothesis.partial:
            return False
        start = self.processed_until / SAMPLE_RATE
        end = self.received_until / SAMPLE_RATE - FRAME_S  # the last frame may not be scored yet
        peak = self._speech.peak(start, end) if end > start else None
        return peak is not None and peak < self.settings.silent_below

    def apply(self, result: Transcription) -> Update:
        """Take the result of the request :meth:`prepare` returned; commit what agrees."""
        if self._awaited_pad_s is None:
            raise CallOrderError("apply() without a request from prepare() to take the result of")
        pad_s, self._awaited_pad_s = self._awaited_pad_s, None
        offset = self.buffer_offset / SAMPLE_RATE
        if pad_s > 0:
            result = result.clipped(self.buffer_s)  # nothing was said in the padding
        if self.language is None and result.language and self.buffer_s >= LANGUAGE_LOCK_S:
            self.detected_language = result.language
        self.hypothesis.insert(self.heard(result, offset), after_committed=result.after_prefix)
        self._segment_ends = [s.end + offset for s in result.segments if s.words]
        until = self.received_until / SAMPLE_RATE - self.settings.holdback_s
        committed = self._remember(self.hypothesis.flush(until))
        committed += self._keep_buffer_short()
        return Update(committed, self.hypothesis.partial)

    def heard(self, result: Transcription, offset: float) -> list[Word]:
        """The words of a result that pass every guard, moved to stream time by ``offset``."""
        words = [w.shifted(offset) for w in clean_segments(result.segments, self.settings.guards)]
        if self._speech is not None:
            words = drop_words_in_silence(words, self._speech.peak, self.settings.guards)
        return words

    def finish(self) -> Update:
        """End of stream (or flush): transcribe unprocessed audio and commit what is left.

        Trailing improbable words (hallucinations in final silence) are
        dropped. More audio may follow: it continues the same timeline.
        """
        request = self.finish_request()
        return self.apply_finish(self._transcribe(request) if request is not None else None)

    def finish_request(self) -> TranscriptionRequest | None:
        """The model call :meth:`finish` needs: the unprocessed audio, with the end's silence
        pad (None when everything received was already transcribed)."""
        if self.received_until <= self.processed_until:
            return None
        return self.prepare(pad_s=self.settings.finish_pad_s)

    def apply_finish(self, result: Transcription | None) -> Update:
        """Finish with the result of :meth:`finish_request` (None if it returned None)."""
        committed = self.apply(result).committed if result is not None else ()
        kept = drop_unconfirmed_tail(self.hypothesis.partial, self.settings.guards)
        committed += self._remember(self.hypothesis.commit_all(until=kept[-1].end if kept else -1.0))
        self.hypothesis.discard_pending()
        self._cut_buffer(self.received_until / SAMPLE_RATE)
        return Update(committed, ())

    def discard_uncommitted(self) -> None:
        """Forget the audio and the hypotheses nothing was committed from (a client cleared its
        input); the timeline goes on after the audio received so far."""
        self.hypothesis.discard_pending()
        self._cut_buffer(self.received_until / SAMPLE_RATE)
        self.processed_until = self.received_until

    def _transcribe(self, request: TranscriptionRequest) -> Transcription:
        return self.asr.transcribe(request.audio, request.prompt, request.language, request.prefix)

    def prompt(self) -> str:
        """Whisper's context: the caller's initial prompt, then the last committed text
        that lies before the buffer, at most ``prompt_chars`` in all (the newest kept)."""
        before = [w for w in self._context if round(w.end * SAMPLE_RATE) <= self.buffer_offset]
        kept: list[Word] = []
        length = 0
        for word in reversed(before):
            length += len(word.text)
            if length > self.settings.prompt_chars:
                break
            kept.append(word)
        committed = join_words(kept[::-1])
        room = self.settings.prompt_chars - len(committed) - 1
        initial = self.initial_prompt.strip()
        if not initial or room <= 0:
            return committed
        initial = initial[-room:] if len(initial) > room else initial
        return f"{initial} {committed}".strip()

    def prefix(self) -> str:
        """The committed text inside the buffer, which the model need not decode again
        ("" when the remembered words do not reach back to the buffer start)."""
        inside = [w for w in self._context if round(w.end * SAMPLE_RATE) > self.buffer_offset]
        if len(inside) == len(self._context) == self._context.maxlen:
            return ""
        return join_words(inside)

    def _remember(self, words: tuple[Word, ...]) -> tuple[Word, ...]:
        self._context.extend(words)
        return words

    def _keep_buffer_short(self) -> tuple[Word, ...]:
        """Cut the buffer at a committed boundary; at the hard cap, force a commit."""
        settings = self.settings
        if self.buffer_s >= settings.max_buffer_s:
            end = self.received_until / SAMPLE_RATE
            forced = self._remember(self.hypothesis.commit_all(until=end - settings.cap_keep_s))
            # Keep the words still pending; never keep more than trim_s of audio.
            cut = end - settings.cap_keep_s
            if self.hypothesis.partial:
                cut = min(cut, self.hypothesis.partial[0].start)
            self._cut_buffer(max(cut, self.hypothesis.last_committed_end, end - settings.trim_s))
            return forced
        if self.buffer_s > settings.trim_s:
            cut = self._last_committed_boundary()
            if cut is not None:
                self._cut_buffer(cut)
        if settings.pause_trim_s and self.buffer_s > settings.pause_trim_s:
            cut = self._last_committed_pause()
            if cut is not None:
                self._cut_buffer(cut)
        return ()

    def _last_committed_pause(self) -> float | None:
        """The middle of the latest pause inside the buffer that has committed words on both sides
        (or a committed word before and the newest hypothesis' first word after)."""
        start = self.buffer_offset / SAMPLE_RATE
        inside = [w for w in self._context if w.start >= start]
        pairs = list(zip(inside, inside[1:]))
        if inside and self.hypothesis.partial:
            pairs.append((inside[-1], self.hypothesis.partial[0]))
        for before, after in reversed(pairs):
            if after.start - before.end >= self.settings.pause_s:
                return (before.end + after.start) / 2
        return None

    def _last_committed_boundary(self) -> float | None:
        """The latest segment end (else sentence end) that is already committed."""
        committed_end = self.hypothesis.last_committed_end
        start = self.buffer_offset / SAMPLE_RATE
        ends = [e for e in self._segment_ends if start < e <= committed_end]
        if ends:
            return max(ends)
        sentence_ends = [w.end for w in self._context if start < w.end and w.text.rstrip().endswith(SENTENCE_ENDS)]
        return max(sentence_ends) if sentence_ends else None

    def _cut_buffer(self, at_seconds: float) -> None:
        """Drop the audio before ``at_seconds`` (absolute)."""
        cut = min(max(round(at_seconds * SAMPLE_RATE), self.buffer_offset), self.received_until)
        self.audio = self.audio[cut - self.buffer_offset :]
        self.buffer_offset = cut
        if self._speech is not None:
            self._speech.forget_before(cut / SAMPLE_RATE - 1.0)
