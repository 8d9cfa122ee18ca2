"""The TCP protocol on the wire (port 43007): raw PCM16LE mono 16 kHz in, UTF-8 lines out.

Each committed final is one line ``<beg_ms> <end_ms> <text>``; an error is
``ERROR <code> <message>``. Nothing else is sent: no greeting, no partials.
Encoder and line decoder live here side by side, used by the server and by
:mod:`woasr.clients.tcp_client`. A client half-closes to say its audio ended.
"""

from __future__ import annotations

import logging

from woasr.core.records import Word
from woasr.protocol.events import Error, Event, Final

log = logging.getLogger(__name__)


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
