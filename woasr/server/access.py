"""Who may open a session: web origins and per-address limits (sans-I/O rules the service applies)."""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from urllib.parse import urlsplit

from woasr.config import UserInputError
from woasr.protocol.tcp import encode_auth

log = logging.getLogger(__name__)

ANY_ORIGIN = "*"


def origin_allowed(origin: str | None, host: str | None, allowed: Collection[str],
                   page_port: int | None = None) -> bool:
    """Whether a WebSocket handshake with this ``Origin`` header may open a session.

    No ``Origin`` (a program, not a browser): allowed. A page of the server itself (the
    origin's host and port are the request's ``Host``, or its host with ``page_port``: front-end
    processes serve the page on the shared port and resume on their own): allowed. Otherwise only
    the listed origins (scheme://host[:port], compared without case or trailing slash), or any with ``*``.
    """
    if origin is None or ANY_ORIGIN in allowed:
        return True
    normalized = origin.strip().rstrip("/").lower()
    if normalized in {o.strip().rstrip("/").lower() for o in allowed}:
        return True
    netloc = urlsplit(normalized).netloc
    if not host:
        return False
    host = host.strip().lower()
    if netloc == host:
        return True
    name = host.rsplit(":", 1)[0] if host.rfind(":") > host.rfind("]") else host  # without the port
    return page_port is not None and netloc == f"{name}:{page_port}"


class Tokens:
    """The tokens a client may present; none configured means no authentication."""

    def __init__(self, tokens: Collection[str] = ()) -> None:
        self._tokens = tuple(t for t in tokens if t)

    @staticmethod
    def load(variable: str | None, path: str | None) -> tuple[str, ...]:
        """The tokens of ``STREAM_TOKEN`` (comma-separated) and of a tokens file (one per line,
        ``#`` comment lines and blank lines skipped); logs once whether authentication is on.

        A file that cannot be read, holds no token, or a token no client could send (spaces,
        control characters) is the operator's to fix: :class:`UserInputError`, naming where it
        is but never the token itself.
        """
        tokens = [(f"STREAM_TOKEN entry {n}", t.strip())
                  for n, t in enumerate((variable or "").split(","), 1) if t.strip()]
        if path is not None:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise UserInputError(f"--tokens-file: cannot read {path}: {exc}") from exc
            found = [(f"{path} line {n}", line.strip()) for n, line in enumerate(lines, 1)
                     if line.strip() and not line.strip().startswith("#")]
            if not found:
                raise UserInputError(f"--tokens-file: {path} holds no token (one per line; # comments)")
            tokens += found
        for where, token in tokens:
            try:
                encode_auth(token)  # every token must fit TCP's AUTH line and an HTTP header
            except ValueError as exc:
                raise UserInputError(f"{where}: {exc}") from None
        log.info("authentication %s", f"on: {len(tokens)} token(s)" if tokens else "off (no STREAM_TOKEN, "
                 "no --tokens-file)")
        return tuple(token for _, token in tokens)

    @staticmethod
    def presented(authorization: str | None, query_token: str | None) -> str | None:
        """The token a web client presents: ``Authorization: Bearer <token>``, else ``?token=``
        (browsers cannot set headers on a WebSocket)."""
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        if scheme.lower() in ("bearer", "token") and credentials.strip():  # Token: Deepgram's clients
            return credentials.strip()
        return query_token or None

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def accepts(self, token: str | None) -> bool:
        """Whether ``token`` is one of the configured tokens (compared in constant time)."""
        if token is None:
            return False
        given = token.encode()
        return any(hmac.compare_digest(given, known.encode()) for known in self._tokens)


class AddressLimit:
    """Counts open sessions per client address; refuses past ``limit`` (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def refusal(self, address: str | None, not_counted: int = 0) -> str | None:
        """Why one more session from ``address`` is refused, or None; ``not_counted`` of its open
        sessions do not count (those waiting for a resume: a client resuming one must get in)."""
        held = self._open[address] - not_counted if address is not None else 0
        if self.limit and held >= self.limit:
            return f"this address already holds {held} sessions (limit {self.limit})"
        return None

    def opened(self, address: str | None) -> None:
        if address is not None:
            self._open[address] += 1

    def closed(self, address: str | None) -> None:
        if address is not None:
            self._open[address] -= 1
            if self._open[address] <= 0:
                del self._open[address]
