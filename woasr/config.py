"""Defaults from the environment: the seed's ``STREAM_*`` variables (flags win)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

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


def _env_parsed(name: str, default: T, parse: Callable[[str], T], what: str) -> T:
    value = env(name)
    if value is None:
        return default
    try:
        return parse(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not {what}") from None


def env_int(name: str, default: int) -> int:
    return _env_parsed(name, default, int, "a whole number")


def env_float(name: str, default: float) -> float:
    return _env_parsed(name, default, float, "a number")


def _parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def env_bool(name: str, default: bool) -> bool:
    return _env_parsed(name, default, _parse_bool, "a boolean (1/0, true/false, yes/no, on/off)")
