"""Defaults from the environment: the seed's ``STREAM_*`` variables (flags win).

Also the errors that mean "the user's input is wrong" (a flag, an environment value,
a file): ``woasr`` reports a :class:`UserInputError` as one line, not a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_TCP_PORT = 43007
DEFAULT_WS_PORT = 43008


class UserInputError(Exception):
    """Input the command cannot use (a flag, an environment value, a file): the user's to fix, not a bug.

    The command line logs the message as one line and exits with :attr:`exit_code`.
    """

    exit_code = 2


class EnvValueError(UserInputError):
    """An environment variable whose value its option does not accept; the message names the variable."""


class EnvValue(str):
    """A value read from an environment variable, which remembers the variable's name.

    Used as an option's default, argparse passes it through the option's ``type`` (only
    for the command being run), where a check can name the variable rather than a flag
    the user never typed.
    """

    variable: str

    def __new__(cls, value: str, variable: str = "") -> EnvValue:
        self = super().__new__(cls, value)
        self.variable = variable
        return self

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]  # copy and pickle keep the name
        return str(self), self.variable


def env(name: str, default: str | None = None) -> str | None:
    """An environment variable (as an :class:`EnvValue`), with empty values treated as unset."""
    value = os.environ.get(name, "").strip()
    return EnvValue(value, name) if value else default


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
        raise EnvValueError(f"{name}={str(value)!r} is not {what}") from None


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
