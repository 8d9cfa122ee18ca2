"""Small immutable records passed between the backend, the core and transports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word, timed in seconds from the start of the stream.

    ``text`` keeps Whisper's own spacing (English words carry a leading space,
    Chinese and Japanese ones do not), so joining texts with ``""`` rebuilds
    the sentence in any language.
    """

    start: float
    end: float
    text: str
    probability: float = 1.0

    def shifted(self, seconds: float) -> Word:
        """The same word moved by ``seconds`` (buffer-relative to absolute time)."""
        return Word(self.start + seconds, self.end + seconds, self.text, self.probability)


def join_words(words: tuple[Word, ...] | list[Word]) -> str:
    """The words' text as one string, with Whisper's spacing and no outer blanks."""
    return "".join(w.text for w in words).strip()


@dataclass(frozen=True, slots=True)
class Segment:
    """A span of one hypothesis with the decoder's confidence figures.

    The figures drive the hallucination guards: ``no_speech_prob`` and
    ``avg_logprob`` flag silence transcribed as words, ``compression_ratio``
    flags repetition loops.
    """

    start: float
    end: float
    words: tuple[Word, ...]
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 1.0

    @property
    def text(self) -> str:
        return join_words(self.words)


@dataclass(frozen=True, slots=True)
class Transcription:
    """What a backend returns for one audio buffer; times relative to the buffer."""

    segments: tuple[Segment, ...]
    language: str | None = None
    after_prefix: bool = False
    """The words are those after the request's prefix (committed text the decoder was forced
    through), not the whole buffer's."""

    @property
    def words(self) -> tuple[Word, ...]:
        return tuple(w for s in self.segments for w in s.words)

    def clipped(self, seconds: float) -> Transcription:
        """The same transcription with every time capped at ``seconds`` (the real audio's end)."""

        def clip(word: Word) -> Word:
            return Word(min(word.start, seconds), min(word.end, seconds), word.text, word.probability)

        segments = tuple(
            Segment(min(s.start, seconds), min(s.end, seconds), tuple(map(clip, s.words)),
                    s.no_speech_prob, s.avg_logprob, s.compression_ratio)
            for s in self.segments
        )
        return Transcription(segments, self.language, self.after_prefix)


@dataclass(frozen=True, slots=True)
class Update:
    """The result of one processing step.

    ``committed`` words are final: they are never repeated or revised in a
    later update. ``partial`` is the current unstable tail, for display only;
    each update's partial replaces the previous one.
    """

    committed: tuple[Word, ...] = ()
    partial: tuple[Word, ...] = ()

    @property
    def committed_text(self) -> str:
        return join_words(self.committed)

    @property
    def partial_text(self) -> str:
        return join_words(self.partial)


@dataclass(frozen=True, slots=True, eq=False)
class TranscriptionRequest:
    """One model call, self-contained: what a backend or an inference engine needs.

    ``audio`` is 16 kHz mono float32 (with any padding the processor added);
    times in the result are relative to its start.
    """

    audio: npt.NDArray[np.float32]
    prompt: str
    language: str | None
    prefix: str = ""
    """Committed text the audio begins with: a backend may force it instead of decoding it again."""

    @property
    def seconds(self) -> float:
        return len(self.audio) / 16_000
