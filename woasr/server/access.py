"""Who may open a session: web origins and per-address limits (sans-I/O rules the service applies)."""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Collection
from urllib.parse import urlsplit

ANY_ORIGIN = "*"


def origin_allowed(origin: str | None, host: str | None, allowed: Collection[str]) -> bool:
    """Whether a WebSocket handshake with this ``Origin`` header may open a session.

    No ``Origin`` (a program, not a browser): allowed. A page of the server itself (the
    origin's host and port are the request's ``Host``): allowed. Otherwise only the listed
    origins (scheme://host[:port], compared without case or trailing slash), or any with ``*``.
    """
    if origin is None or ANY_ORIGIN in allowed:
        return True
    normalized = origin.strip().rstrip("/").lower()
    if normalized in {o.strip().rstrip("/").lower() for o in allowed}:
        return True
    netloc = urlsplit(normalized).netloc
    return bool(host) and netloc == host.strip().lower()


class Tokens:
    """The tokens a client may present; none configured means no authentication."""

    def __init__(self, tokens: Collection[str] = ()) -> None:
        self._tokens = tuple(t for t in tokens if t)

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

    def refusal(self, address: str | None) -> str | None:
        """Why one more session from ``address`` is refused, or None."""
        if self.limit and address is not None and self._open[address] >= self.limit:
            return f"this address already holds {self._open[address]} sessions (limit {self.limit})"
        return None

    def opened(self, address: str | None) -> None:
        if address is not None:
            self._open[address] += 1

    def closed(self, address: str | None) -> None:
        if address is not None:
            self._open[address] -= 1
            if self._open[address] <= 0:
                del self._open[address]
