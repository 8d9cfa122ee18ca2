"""The WebSocket wire format: JSON text messages to and from the session protocol.

The seed contract is a subset: ``ready`` with ``sample_rate``, ``final`` with
``beg_ms``/``end_ms``/``text``, binary PCM16LE audio and the text ``flush``.
Everything else is an extension that a seed client never has to read
(docs/protocol.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from woasr.core.audio import SAMPLE_RATE
from woasr.protocol.commands import Close, Command, Configure, Flush
from woasr.protocol.events import (
    Configured,
    Error,
    Event,
    Final,
    Flushed,
    Partial,
    SessionOptions,
    SpeechStarted,
    UtteranceEnded,
)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
"""The server is shutting down (or draining)."""
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013
"""The session was refused at capacity."""


def parse_text(text: str) -> Command | Error:
    """A client text message as a command, or the error to send back."""
    if text.strip() == "flush":
        return Flush()
    try:
        message = json.loads(text)
    except ValueError:
        return Error("bad_message", "text messages must be 'flush' or a JSON object with a 'type'")
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return Error("bad_message", "a JSON message must be an object with a string 'type'")
    kind = message.pop("type")
    if kind == "flush":
        return Flush()
    if kind == "close":
        return Close()
    if kind == "config":
        return Configure(message)
    return Error("unknown_type", f"unknown message type {kind!r} (known: config, flush, close)")


def options_json(options: SessionOptions) -> dict[str, Any]:
    return {
        "language": options.language,
        "prompt": options.prompt,
        "min_chunk": options.min_chunk,
        "partials": options.partials,
        "vac": options.vac,
        "endpointing": options.endpointing,
    }


def ready_message(session_id: str, model: str, options: SessionOptions, settings: Mapping[str, Any]) -> str:
    """The first message of every connection: the seed's two fields, then ours."""
    return _dump({
        "type": "ready",
        "sample_rate": SAMPLE_RATE,
        "session_id": session_id,
        "model": model,
        "language": options.language,
        "settings": {**options_json(options), **settings},
    })


def encode_event(event: Event) -> str:
    """The JSON text of one event."""
    if isinstance(event, Final):
        return _dump({
            "type": "final",
            "beg_ms": event.beg_ms,
            "end_ms": event.end_ms,
            "text": event.text,
            "seq": event.seq,
            "words": [
                {"text": w.text.strip(), "beg_ms": round(w.start * 1000), "end_ms": round(w.end * 1000),
                 "probability": round(w.probability, 3)}
                for w in event.words
            ],
            **({"lag_ms": round(event.lag_s * 1000)} if event.lag_s is not None else {}),
        })
    if isinstance(event, Partial):
        return _dump({"type": "partial", "text": event.text, "beg_ms": event.beg_ms, "end_ms": event.end_ms})
    if isinstance(event, Flushed):
        return _dump({"type": "flushed"})
    if isinstance(event, SpeechStarted):
        return _dump({"type": "speech_started", "time_ms": round(event.time_s * 1000)})
    if isinstance(event, UtteranceEnded):
        return _dump({"type": "utterance_end", "last_word_end_ms": round(event.last_word_end_s * 1000)})
    if isinstance(event, Configured):
        return _dump({"type": "configured", "settings": options_json(event.options)})
    return _dump({"type": "error", "code": event.code, "message": event.message})


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
