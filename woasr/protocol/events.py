"""Events a session emits, independent of how a transport writes them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from woasr.core.audio import SAMPLE_RATE
from woasr.core.processor import DEFAULT_MIN_CHUNK_S
from woasr.core.records import Word, join_words


@dataclass(frozen=True, slots=True)
class Final:
    """Committed words: never revised. ``seq`` counts finals of a session from 0.

    ``lag_s`` is the session's current lag: emission time minus the arrival of
    the audio holding the last word's end (None where no clock was given).
    """

    seq: int
    words: tuple[Word, ...]
    lag_s: float | None = None
    received_samples: int | None = None
    """Samples the session had received when this final was sent: an acknowledgement of the
    audio the server holds (None where not known, e.g. from a seed server)."""

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
    """The current unstable tail; replaces the previous partial (display only).

    An empty partial clears the display; it starts and ends at ``after_s``, the end of
    the committed text.
    """

    words: tuple[Word, ...]
    after_s: float = 0.0

    @property
    def text(self) -> str:
        return join_words(self.words)

    @property
    def beg_ms(self) -> int:
        return round((self.words[0].start if self.words else self.after_s) * 1000)

    @property
    def end_ms(self) -> int:
        return round((self.words[-1].end if self.words else self.after_s) * 1000)


@dataclass(frozen=True, slots=True)
class Flushed:
    """Everything received before the flush has been committed."""


@dataclass(frozen=True, slots=True)
class Cleared:
    """The audio received and not committed before a ``clear`` was discarded."""


@dataclass(frozen=True, slots=True)
class Configured:
    """A configuration was applied; these are the session's effective options."""

    options: SessionOptions


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Endpointing: the voice-activity detector heard speech start at ``time_s`` (stream seconds).

    Sent as soon as it is detected, before the finals of that speech."""

    time_s: float


@dataclass(frozen=True, slots=True)
class UtteranceEnded:
    """Endpointing: the speaker stopped; every word of the utterance has been sent in finals.

    ``last_word_end_s`` is the end of the utterance's last committed word."""

    last_word_end_s: float


CAPACITY = "capacity"
"""The :class:`Error` code of a session refused because the server is at capacity (every transport)."""


ECHO_CHARS = 40
"""At most this much of a client's own text is repeated in an error (and so in the logs)."""


def echo(value: object) -> str:
    """A client-supplied value as an error message quotes it: its repr, cut to :data:`ECHO_CHARS`."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class Error:
    """Bad input; the session goes on unless the transport decides otherwise."""

    code: str
    message: str
    resume_port: int | None = None
    """With ``resume_failed``: the WebSocket port of the front-end process that holds the session
    (``woasr serve --processes``); resume it there."""


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """What a client may set for its own session: ``language`` and ``prompt`` at any time (from the
    next update on), the others before its first audio."""

    language: str | None
    """Language code, or None to detect it."""
    prompt: str = ""
    min_chunk: float = DEFAULT_MIN_CHUNK_S
    partials: bool = False
    vac: bool = False
    """Voice-activity control: silence is not transcribed; an utterance is finished when speech ends."""
    endpointing: bool = False
    """Send ``speech_started`` and ``utterance_end`` events (turns ``vac`` on)."""
    min_silence_ms: int = 500
    """Voice activity: silence that ends an utterance."""
    vad_threshold: float = 0.5
    """Voice activity: speech probability from which a frame is speech."""
    speech_pad_ms: int = 300
    """Voice activity: audio kept before and after speech."""


@dataclass(frozen=True, slots=True)
class Ready:
    """The session is open: its id, the model, its effective options and the server's decoding settings.

    The first event of every session; a transport without a greeting (TCP) does not send it."""

    session_id: str
    model: str
    options: SessionOptions
    settings: Mapping[str, Any] = field(default_factory=dict)
    sample_rate: int = SAMPLE_RATE
    resume_token: str | None = None
    """The secret a client presents to resume this session after a dropped connection
    (None: the session cannot be resumed, e.g. on TCP or with ``--resume-window 0``)."""


@dataclass(frozen=True, slots=True)
class Resumed:
    """A dropped session was resumed on this connection: resend the audio from ``resume_from_sample``
    on (the server holds every sample before it). The ``replayed`` finals the client missed follow."""

    session_id: str
    resume_from_sample: int
    replayed: int


RESUME_FAILED = "resume_failed"
"""The :class:`Error` code of a resume the server cannot honour: the connection goes on as the new
session its ``ready`` announced."""


Event = Ready | Resumed | Cleared | Final | Partial | Flushed | Configured | Error | SpeechStarted | UtteranceEnded
