"""One rule for the language a client asks for, whatever the transport (WebSocket config, REST form)."""

from __future__ import annotations

from collections.abc import Collection

DETECT = "auto"
"""What a client sends to have the language detected (as does leaving it out)."""


class UnsupportedLanguage(ValueError):
    """The language is not a code, or not one the loaded model accepts; the message says which."""


def resolve_language(value: object, supported: Collection[str] | None) -> str | None:
    """The language code to decode with, or None to detect it.

    Codes are case-insensitive (``EN`` is ``en``). ``None`` and ``"auto"`` mean
    detection, except on an English-only model (``supported == ("en",)``),
    which only decodes English. ``supported`` None accepts any code.
    """
    english_only = supported is not None and tuple(supported) == ("en",)
    if value is None or (isinstance(value, str) and value.strip().lower() == DETECT):
        return "en" if english_only else None
    if not isinstance(value, str) or not value.strip():
        raise UnsupportedLanguage(f"language must be a language code, {DETECT!r} or null")
    code = value.strip().lower()
    if supported is not None and code not in supported:
        model = "this English-only model" if english_only else "this model"
        known = tuple(supported)
        shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
        raise UnsupportedLanguage(f"language {value[:16]!r} is not supported by {model} (supported: {shown})")
    return code
