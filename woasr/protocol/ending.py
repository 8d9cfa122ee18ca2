"""How a session ends, in words every transport maps onto its own way of closing."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from woasr.protocol.events import Error


class Ending(enum.Enum):
    """Why a session ended; a transport turns it into a close (e.g. a WebSocket close code)."""

    FINISHED = "finished"
    """The input ended and every received sample was transcribed and sent."""
    SHUTDOWN = "finished (shutdown)"
    """The server finished the session (or refused it) because it is shutting down."""
    UNAUTHORIZED = "unauthorized"
    """Authentication is on and the client's token was missing or wrong."""
    REFUSED = "refused"
    """The server is at capacity: the session was not opened; try again later."""
    INPUT_TOO_LARGE = "input too large"
    """A message over the size limit ended the input; the audio before it was finished."""
    IDLE = "idle"
    """Nothing came for too long; the received audio was finished."""
    GONE = "disconnected"
    """The peer went away: nothing more can be sent."""
    FAILED = "server error"
    """The server failed; the peer is told if it can be."""


@dataclass(frozen=True, slots=True)
class InputEnded:
    """A transport saw its input end without the client's ``close`` (half-close, idle, a refused message).

    ``error`` is told to the client before the session's last finals; ``reason`` goes to the log.
    """

    ending: Ending
    reason: str
    error: Error | None = None
