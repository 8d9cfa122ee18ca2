"""The lifecycle of a streaming session, as one explicit state and a table of moves.

Two things vary independently in a session: whether the client may still send
audio, and whether an update (one model call) is running. The states below are
their combinations, plus the end:

    OPEN ──start_update──▶ UPDATING ──complete_update──▶ OPEN
      │                        │
    close                    close
      ▼                        ▼
    CLOSED ◀─complete_update─ CLOSED_UPDATING ◀─start_update─ CLOSED
      │                                          (more audio left than one update may take)
    start_final_update (the last of the audio)
      ▼
    FINISHING ──complete_update──▶ FINISHED

A move that is not in the table is a programming error of the caller (an
update started while one runs, a result applied with no update started):
:class:`SessionStateError` is raised and the state is left as it was, so a
wrong call order never passes silently. Client mistakes (audio after close)
are not state errors: the session answers them with an error event.
"""

from __future__ import annotations

import enum


class SessionState(enum.Enum):
    OPEN = "open"
    """Audio is accepted; no update is running."""
    UPDATING = "updating"
    """Audio is accepted; an update is running."""
    CLOSED_UPDATING = "closed, updating"
    """No more audio will come; an update that is not the last is running (started before the
    close, or catching up on more audio than one update may take)."""
    CLOSED = "closed"
    """No more audio will come; the final update is due."""
    FINISHING = "finishing"
    """The final update is running."""
    FINISHED = "finished"
    """Every received sample has been through the model."""

    @property
    def accepts_audio(self) -> bool:
        return self in (SessionState.OPEN, SessionState.UPDATING)

    @property
    def updating(self) -> bool:
        return self in (SessionState.UPDATING, SessionState.CLOSED_UPDATING, SessionState.FINISHING)


class Move(enum.Enum):
    """What the session's caller does; each moves the state along the table."""

    START_UPDATE = "start_update"
    START_FINAL_UPDATE = "start_update (final)"
    COMPLETE_UPDATE = "complete_update"
    CLOSE = "close"


_S = SessionState
TRANSITIONS: dict[tuple[SessionState, Move], SessionState] = {
    (_S.OPEN, Move.START_UPDATE): _S.UPDATING,
    (_S.OPEN, Move.CLOSE): _S.CLOSED,
    (_S.UPDATING, Move.COMPLETE_UPDATE): _S.OPEN,
    (_S.UPDATING, Move.CLOSE): _S.CLOSED_UPDATING,
    (_S.CLOSED_UPDATING, Move.COMPLETE_UPDATE): _S.CLOSED,
    (_S.CLOSED_UPDATING, Move.CLOSE): _S.CLOSED_UPDATING,
    (_S.CLOSED, Move.START_UPDATE): _S.CLOSED_UPDATING,
    (_S.CLOSED, Move.START_FINAL_UPDATE): _S.FINISHING,
    (_S.CLOSED, Move.CLOSE): _S.CLOSED,
    (_S.FINISHING, Move.COMPLETE_UPDATE): _S.FINISHED,
    (_S.FINISHING, Move.CLOSE): _S.FINISHING,
    (_S.FINISHED, Move.CLOSE): _S.FINISHED,
}
"""Every allowed move; closing is idempotent, everything else happens once per update."""


class SessionStateError(RuntimeError):
    """A session method was called when its state does not allow it (a bug in the caller)."""


def advance(state: SessionState, move: Move) -> SessionState:
    """The state after ``move``; raises :class:`SessionStateError` for a move the table lacks."""
    try:
        return TRANSITIONS[state, move]
    except KeyError:
        raise SessionStateError(f"{move.value}() is not allowed while the session is {state.value}") from None
