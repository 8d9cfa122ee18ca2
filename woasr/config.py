"""Defaults from the environment: the seed's ``STREAM_*`` variables (flags win)."""

from __future__ import annotations

import os

DEFAULT_HOST = "127.0.0.1"
DEFAULT_TCP_PORT = 43007
DEFAULT_WS_PORT = 43008


def env(name: str, default: str | None = None) -> str | None:
    """An environment variable, with empty values treated as unset."""
    value = os.environ.get(name, "").strip()
    return value or default


def default_host() -> str:
    """``STREAM_HOST``, then ``IP_ADDR`` (the seed's fallback), then 127.0.0.1."""
    return env("STREAM_HOST") or env("IP_ADDR") or DEFAULT_HOST


def env_int(name: str, default: int) -> int:
    value = env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a whole number") from None


def env_float(name: str, default: float) -> float:
    value = env(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a number") from None
