"""The TCP protocol on the wire (port 43007): raw PCM16LE mono 16 kHz in, UTF-8 lines out.

Each committed final is one line ``<beg_ms> <end_ms> <text>``; an error is
``ERROR <code> <message>``. Nothing else is sent: no greeting, no partials.
Encoder and line decoder live here side by side, used by the server and by
:mod:`woasr.clients.tcp_client`. A client half-closes to say its audio ended.
When the server requires a token, the client's first bytes are the line
``AUTH <token>`` (:func:`encode_auth`, :func:`decode_auth`); its audio follows at once.
"""

from __future__ import annotations

import logging

from woasr.core.records import Word
from woasr.protocol.events import Error, Event, Final

log = logging.getLogger(__name__)

AUTH = b"AUTH "
MAX_AUTH_LINE = 1024
"""Longest first line the server reads looking for ``AUTH <token>`` (newline excluded)."""


def encode_auth(token: str) -> bytes:
    """The first line a client sends when the server requires a token.

    Raises ``ValueError`` for a token the line cannot carry (empty, whitespace or control
    characters inside, longer than :data:`MAX_AUTH_LINE`).
    """
    line = AUTH + token.encode()
    if not token or not token.isprintable() or any(c.isspace() for c in token) or len(line) > MAX_AUTH_LINE:
        raise ValueError(f"a token must be non-empty printable text without spaces, "
                         f"at most {MAX_AUTH_LINE - len(AUTH)} bytes")
    return line + b"\n"


def decode_auth(line: bytes) -> str | None:
    """The token of a first line ``AUTH <token>`` (without its newline; a ``\\r`` before it is
    tolerated); None if it is not one."""
    if not line.startswith(AUTH) or len(line.rstrip(b"\r")) > MAX_AUTH_LINE:
        return None
    try:
        token = line[len(AUTH):].decode().strip()
    except UnicodeDecodeError:
        return None
    return token or None


def encode_event(event: Event) -> bytes | None:
    """The line of an event: finals and errors; None for events TCP does not carry."""
    if isinstance(event, Final):
        return f"{event.beg_ms} {event.end_ms} {event.text}\n".encode()
    if isinstance(event, Error):
        return f"ERROR {event.code} {event.message}\n".encode()
    return None


def encode_events(events: list[Event]) -> bytes:
    """The lines of several events, as one write."""
    return b"".join(line for line in map(encode_event, events) if line)


class LineDecoder:
    """Sans-I/O: bytes from the server in, the finals and errors they carry out.

    Lines may arrive split across reads; a final's ``seq`` counts lines from 0 as
    the server numbers them. The text of a line is one word spanning its times.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._seq = 0

    def receive_data(self, data: bytes) -> list[Final | Error]:
        """Every complete line in ``data`` (and what was held back from before), decoded."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        decoded = [self.decode_line(line.decode("utf-8", "replace")) for line in lines]
        return [event for event in decoded if event is not None]

    def decode_line(self, line: str) -> Final | Error | None:
        """One line without its newline; None (and a log line) for one that is not the protocol."""
        if line.startswith("ERROR "):
            _, code, message = (line.split(" ", 2) + [""])[:3]
            return Error(code, message)
        parts = line.split(" ", 2)
        try:
            beg, end, text = int(parts[0]), int(parts[1]), parts[2]
        except (ValueError, IndexError):
            log.warning("unexpected line from the server: %r", line)
            return None
        final = Final(self._seq, (Word(beg / 1000, end / 1000, text),))
        self._seq += 1
        return final
