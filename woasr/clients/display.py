"""How ``woasr client`` shows what the server says, the same for every transport.

Finals go to stdout as ``<beg_ms> <end_ms> <text>`` lines, so scripts read
the TCP and the WebSocket client alike. On a terminal the current partial is
drawn in grey on the last line, in place (``\\r`` + erase line), and erased
before a final line is printed, so finals stay clean lines in the scrollback.
A partial wider than the terminal shows its end, the words being spoken now.
Server errors are log warnings on stderr, never stdout.
"""

from __future__ import annotations

import logging
import shutil
import sys
import unicodedata
from typing import TextIO

log = logging.getLogger(__name__)

ERASE_LINE = "\r\x1b[2K"
GREY = "\x1b[90m"
RESET = "\x1b[0m"
ELLIPSIS = "…"


class TerminalDisplay:
    """A :class:`~woasr.clients.reconnect.Listener` that prints; ``live`` draws partials (default: a TTY)."""

    def __init__(self, out: TextIO | None = None, live: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self._shown = False

    def final(self, beg_ms: int, end_ms: int, text: str) -> None:
        self.clear()
        print(f"{beg_ms} {end_ms} {text}", file=self.out, flush=True)

    def partial(self, text: str, beg_ms: int, end_ms: int) -> None:
        if not self.live:
            return
        if not text:
            self.clear()
            return
        width = shutil.get_terminal_size().columns - 1  # the last column would wrap on some terminals
        self.out.write(f"{ERASE_LINE}{GREY}{fit_tail(text, width)}{RESET}")
        self.out.flush()
        self._shown = True

    def error(self, code: str, message: str) -> None:
        self.clear()
        log.warning("server error %s: %s", code, message)

    def clear(self) -> None:
        """Erase the partial, if one is drawn."""
        if self._shown:
            self.out.write(ERASE_LINE)
            self.out.flush()
            self._shown = False


def cells(char: str) -> int:
    """Terminal columns a character takes: 2 for wide East Asian characters, 0 for combining marks."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def fit_tail(text: str, width: int) -> str:
    """The end of ``text`` that fits in ``width`` columns, with an ellipsis if it was cut."""
    if sum(map(cells, text)) <= width:
        return text
    kept, used = [], cells(ELLIPSIS)
    for char in reversed(text):
        used += cells(char)
        if used > width:
            break
        kept.append(char)
    return ELLIPSIS + "".join(reversed(kept))
