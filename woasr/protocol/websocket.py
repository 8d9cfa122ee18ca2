"""This product's WebSocket protocol on the wire: JSON text messages both ways, binary PCM16LE audio in.

Encoder and decoder of every message live here, side by side, used by the
server and by the clients (:mod:`woasr.clients.ws_client`, the bench), so they
cannot drift. The seed's contract is a subset: ``ready`` with ``sample_rate``,
``final`` with ``beg_ms``/``end_ms``/``text``, binary audio and the text
``flush``. Everything else is an extension a seed client never has to read
(docs/protocol.md). Close codes are ``websockets``' :class:`CloseCode`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from websockets.frames import CloseCode

from woasr.core.records import Word
from woasr.protocol.commands import Clear, Close, Command, Configure, Flush, Resume
from woasr.protocol.ending import Ending, InputEnded
from woasr.protocol.events import (
    RESUME_FAILED,
    Cleared,
    Configured,
    Error,
    Event,
    Final,
    Flushed,
    Partial,
    Ready,
    Resumed,
    SessionOptions,
    SpeechStarted,
    UtteranceEnded,
    echo,
)

__all__ = [
    "CLOSE_CODES", "CloseCode", "close_frame", "decode_client_text", "decode_server_message", "encode_command",
    "encode_event", "decode_audio_message",
]

CLOSE_CODES = {
    Ending.FINISHED: CloseCode.NORMAL_CLOSURE,
    Ending.SHUTDOWN: CloseCode.GOING_AWAY,
    Ending.REFUSED: CloseCode.TRY_AGAIN_LATER,
    Ending.UNAUTHORIZED: CloseCode.POLICY_VIOLATION,
    Ending.INPUT_TOO_LARGE: CloseCode.MESSAGE_TOO_BIG,
    Ending.IDLE: CloseCode.NORMAL_CLOSURE,
    Ending.FAILED: CloseCode.INTERNAL_ERROR,
}
"""How a session's ending is closed; a peer that is gone (``Ending.GONE``) gets no close frame."""

MAX_CLOSE_REASON_BYTES = 123
"""RFC 6455: a close frame's reason fits in 125 bytes with its code."""


def close_frame(ending: Ending, reason: str) -> tuple[CloseCode, str] | None:
    """The close code and reason for a session that ended so (None: the peer is gone, nothing to send)."""
    if ending is Ending.GONE:
        return None
    return CLOSE_CODES[ending], reason.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


class NativeCodec:
    """This protocol as a connection's codec (the interface every WebSocket protocol's codec has:
    :class:`woasr.protocol.deepgram.DeepgramCodec`, :class:`woasr.protocol.openai_realtime.RealtimeCodec`)."""

    resumable = True

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message

    def opening(self) -> list[Command]:
        return []

    def decode_binary(self, data: bytes) -> tuple[bytes | Error | InputEnded, ...]:
        return decode_audio_message(data, self.max_message)

    def decode_text(self, text: str) -> tuple[Command | Error, ...]:
        return (decode_client_text(text),)

    def encode(self, events: list[Event]) -> list[str]:
        return [encode_event(event) for event in events]

    def closing(self, ending: Ending) -> list[str]:
        return []


# -- client to server ------------------------------------------------------------
def decode_audio_message(data: bytes, limit: int) -> tuple[bytes | Error | InputEnded, ...]:
    """What a binary message carries: its audio, with an error if it was odd-sized; or the end of
    the input if it is over ``limit`` bytes (closing with 1009).

    A message must hold whole PCM16 samples: a lone odd byte would shift every later sample of
    the stream, so it is dropped (and said so) instead of carried as on TCP's byte stream.
    """
    if len(data) > limit:
        error = Error("frame_too_large", f"a message of {len(data)} bytes is over the limit of {limit} bytes; "
                                         "it was not processed. Audio before it is finished; closing")
        return (InputEnded(Ending.INPUT_TOO_LARGE, f"message of {len(data)} bytes over the {limit}-byte limit",
                           error),)
    if len(data) % 2:
        error = Error("odd_frame", f"a binary message of {len(data)} bytes does not hold whole 16-bit samples; "
                                   "its last byte was dropped")
        return (data[:-1], error) if len(data) > 1 else (error,)
    return (data,)


def decode_client_text(text: str) -> Command | Error:
    """A client text message as a command, or the error to send back."""
    if text.strip() == "flush":
        return Flush()
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        return Error("bad_message", "text messages must be 'flush' or a JSON object with a 'type'")
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return Error("bad_message", "a JSON message must be an object with a string 'type'")
    kind = message.pop("type")
    if kind == "flush":
        return Flush()
    if kind == "close":
        return Close()
    if kind == "clear":
        return Clear()
    if kind == "config":
        return Configure(message)
    if kind == "resume":
        return _resume(message)
    return Error("unknown_type", f"unknown message type {echo(kind)} (known: config, flush, clear, close, resume)")


def _resume(message: Mapping[str, Any]) -> Resume | Error:
    session_id, token, last_seq = message.get("session_id"), message.get("token"), message.get("last_seq", -1)
    if not isinstance(session_id, str) or not isinstance(token, str):
        return Error(RESUME_FAILED, "resume needs a string 'session_id' and 'token' (the ready's resume_token)")
    if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < -1:
        return Error(RESUME_FAILED, f"'last_seq' must be the last final's seq or -1, not {echo(last_seq)}")
    return Resume(session_id, token, last_seq)


def encode_command(command: Command) -> str:
    """A command as the client sends it."""
    if isinstance(command, Configure):
        return _dump({"type": "config", **command.fields})
    if isinstance(command, Resume):
        return _dump({"type": "resume", "session_id": command.session_id, "token": command.token,
                      "last_seq": command.last_seq})
    kind = "clear" if isinstance(command, Clear) else "flush" if isinstance(command, Flush) else "close"
    return _dump({"type": kind})


# -- server to client ------------------------------------------------------------
def options_json(options: SessionOptions) -> dict[str, Any]:
    return {
        "language": options.language,
        "prompt": options.prompt,
        "min_chunk": options.min_chunk,
        "partials": options.partials,
        "vac": options.vac,
        "endpointing": options.endpointing,
        "min_silence_ms": options.min_silence_ms,
        "vad_threshold": options.vad_threshold,
        "speech_pad_ms": options.speech_pad_ms,
    }


def _words_json(words: tuple[Word, ...]) -> list[dict[str, Any]]:
    return [{"text": w.text.strip(), "beg_ms": round(w.start * 1000), "end_ms": round(w.end * 1000),
             "probability": round(w.probability, 3)} for w in words]


def encode_event(event: Event) -> str:
    """The JSON text of one event."""
    match event:
        case Ready():
            token = {"resume_token": event.resume_token} if event.resume_token is not None else {}
            return _dump({"type": "ready", "sample_rate": event.sample_rate, "session_id": event.session_id,
                          "model": event.model, "language": event.options.language,
                          "settings": {**options_json(event.options), **event.settings}, **token})
        case Resumed():
            return _dump({"type": "resumed", "session_id": event.session_id,
                          "resume_from_sample": event.resume_from_sample, "replayed": event.replayed})
        case Final():
            lag = {"lag_ms": round(event.lag_s * 1000)} if event.lag_s is not None else {}
            received = {"received_samples": event.received_samples} if event.received_samples is not None else {}
            return _dump({"type": "final", "beg_ms": event.beg_ms, "end_ms": event.end_ms, "text": event.text,
                          "seq": event.seq, "words": _words_json(event.words), **lag, **received})
        case Partial():
            return _dump({"type": "partial", "text": event.text, "beg_ms": event.beg_ms, "end_ms": event.end_ms,
                          "words": _words_json(event.words)})
        case Flushed():
            return _dump({"type": "flushed"})
        case Cleared():
            return _dump({"type": "cleared"})
        case SpeechStarted():
            return _dump({"type": "speech_started", "time_ms": round(event.time_s * 1000)})
        case UtteranceEnded():
            return _dump({"type": "utterance_end", "last_word_end_ms": round(event.last_word_end_s * 1000)})
        case Configured():
            return _dump({"type": "configured", "settings": options_json(event.options)})
        case Error():
            extra = {"resume_port": event.resume_port} if event.resume_port is not None else {}
            return _dump({"type": "error", "code": event.code, "message": event.message, **extra})


def decode_server_message(text: str) -> Event | None:
    """A server message as the event it encodes; None for a type this client does not know.

    A final without ``seq`` (a seed server's) gets ``seq`` -1.

    Raises ``ValueError`` (or ``KeyError``/``TypeError``) for text that is not the protocol.
    """
    message = json.loads(text)
    kind = message["type"]
    if kind == "final":
        lag, received = message.get("lag_ms"), message.get("received_samples")
        return Final(int(message.get("seq", -1)), _words(message), None if lag is None else lag / 1000,
                     None if received is None else int(received))
    if kind == "partial":
        return Partial(_words(message), int(message["beg_ms"]) / 1000)
    if kind == "error":
        port = message.get("resume_port")
        return Error(str(message["code"]), str(message["message"]), None if port is None else int(port))
    if kind == "ready":
        return Ready(str(message["session_id"]), str(message["model"]), _options(message["settings"]),
                     {k: v for k, v in message["settings"].items() if k not in _OPTION_KEYS},
                     int(message["sample_rate"]), message.get("resume_token"))
    if kind == "resumed":
        return Resumed(str(message["session_id"]), int(message["resume_from_sample"]), int(message["replayed"]))
    if kind == "flushed":
        return Flushed()
    if kind == "cleared":
        return Cleared()
    if kind == "speech_started":
        return SpeechStarted(int(message["time_ms"]) / 1000)
    if kind == "utterance_end":
        return UtteranceEnded(int(message["last_word_end_ms"]) / 1000)
    if kind == "configured":
        return Configured(_options(message["settings"]))
    return None


_OPTION_KEYS = frozenset(options_json(SessionOptions(None)))


def _options(settings: Mapping[str, Any]) -> SessionOptions:
    return SessionOptions(**{k: settings[k] for k in _OPTION_KEYS if k in settings})


def _words(message: Mapping[str, Any]) -> tuple[Word, ...]:
    """The message's words, given back the spacing its ``text`` shows (a seed server sends no words:
    then the text is one word spanning the message)."""
    text = str(message["text"])
    listed = message.get("words")
    if listed is None:
        if not text:
            return ()
        return (Word(int(message["beg_ms"]) / 1000, int(message["end_ms"]) / 1000, text),)
    words, position = [], 0
    for item in listed:
        found = text.find(item["text"], position)
        if found < 0:  # not in the text (a client-side edit?): Whisper's usual leading space
            spaced = " " + item["text"]
        else:
            spaced = text[position:found] + item["text"]
            position = found + len(item["text"])
        words.append(Word(int(item["beg_ms"]) / 1000, int(item["end_ms"]) / 1000, spaced,
                          float(item.get("probability", 1.0))))
    return tuple(words)


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
