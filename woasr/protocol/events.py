"""Events a session emits, independent of how a transport writes them."""

from __future__ import annotations

from dataclasses import dataclass

from woasr.core.records import Word, join_words


@dataclass(frozen=True, slots=True)
class Final:
    """Committed words: never revised. ``seq`` counts finals of a session from 0."""

    seq: int
    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return join_words(self.words)

    @property
    def beg_ms(self) -> int:
        return round(self.words[0].start * 1000)

    @property
    def end_ms(self) -> int:
        return round(self.words[-1].end * 1000)


@dataclass(frozen=True, slots=True)
class Partial:
    """The current unstable tail; replaces the previous partial (display only)."""

    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return join_words(self.words)


@dataclass(frozen=True, slots=True)
class Flushed:
    """Everything received before the flush has been committed."""


@dataclass(frozen=True, slots=True)
class Error:
    """Bad input; the session goes on unless the transport decides otherwise."""

    code: str
    message: str


Event = Final | Partial | Flushed | Error
