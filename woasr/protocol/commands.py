"""What a client may ask of its session besides sending audio, whatever the transport."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Flush:
    """Commit everything received so far, then answer with ``Flushed``."""


@dataclass(frozen=True, slots=True)
class Configure:
    """Set session options (``language``, ``prompt``, ``min_chunk``, ``partials``) before audio."""

    fields: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Clear:
    """Discard the audio received and not yet committed, then answer with ``Cleared`` (OpenAI
    Realtime's ``input_audio_buffer.clear``); the stream's timeline goes on."""


@dataclass(frozen=True, slots=True)
class Close:
    """No more audio: finish the session, send the last finals, then close."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Attach this connection to a session whose connection dropped (WebSocket, first message only).

    ``token`` is the session's ``resume_token`` from its ``ready``; ``last_seq`` the ``seq`` of the
    last final the client got (-1: none). The server replays the later finals and says from which
    sample to resend the audio."""

    session_id: str
    token: str
    last_seq: int


Command = Flush | Configure | Clear | Close | Resume
