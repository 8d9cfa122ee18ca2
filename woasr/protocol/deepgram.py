"""Deepgram's live transcription protocol (``GET /v1/listen``), over this product's session.

A sans-I/O codec: the handshake's query parameters become the session's options
(:func:`parse_listen_params`), client text becomes commands (``KeepAlive``, ``Finalize``,
``CloseStream``, ``Configure``), binary messages are linear16 audio (resampled to 16 kHz when
``sample_rate`` says otherwise), and the session's events become Deepgram's messages:
``Results`` (interim from partials, final from finals), ``SpeechStarted``, ``UtteranceEnd``,
``Metadata`` at the end and ``Error``. What is mapped, and what is refused, is in
docs/protocol.md ("Deepgram-compatible").
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from woasr.core.audio import SAMPLE_RATE, PcmResampler
from woasr.core.records import Word, join_words
from woasr.protocol.commands import Close, Command, Configure, Flush
from woasr.protocol.ending import Ending, InputEnded
from woasr.protocol.events import (
    Configured,
    Error,
    Event,
    Final,
    Flushed,
    Partial,
    SpeechStarted,
    UtteranceEnded,
    echo,
)
from woasr.protocol.session import CONFIG_ERRORS, MAX_PROMPT_CHARS, VAD_RANGES
from woasr.protocol.websocket import decode_audio_message

ENCODINGS = ("linear16",)
"""Audio encodings this endpoint decodes (Deepgram's name for PCM16LE)."""
MAX_SAMPLE_RATE = 192_000
MOVED = ("this is the Deepgram-compatible endpoint; this server's own protocol (ready, config, final, "
         "flush, close) moved to / and /v1/stream")
"""Said to a client of this product's own protocol that still connects to ``/v1/listen``."""
_WORD_EDGES = re.compile(r"^[^\w']+|[^\w']+$")
_VARIANTS = {"bad_message": "SchemaError", "unknown_type": "SchemaError", "bad_value": "SchemaError",
             "capacity": "TooManyRequests", "unauthorized": "Unauthorized", "server_error": "ServerError"}
"""Deepgram's ``variant`` for this product's error codes (others: ``ServerError``)."""


class ListenParamsError(ValueError):
    """A query parameter this endpoint cannot honour; the handshake is refused with its message."""


@dataclass(frozen=True, slots=True)
class ListenParams:
    """What a client asked for in ``/v1/listen``'s query string."""

    sample_rate: int = SAMPLE_RATE
    interim_results: bool = False
    punctuate: bool = False
    smart_format: bool = False
    endpointing_ms: int | None = None
    """Silence that ends speech (``speech_final``); None: the server's default."""
    endpointing: bool = True
    utterance_end_ms: int | None = None
    vad_events: bool = False
    language: str | None = None
    model: str | None = None
    keyterms: tuple[str, ...] = ()
    ignored: tuple[str, ...] = field(default=())
    """Parameters accepted without effect (logged by the transport)."""

    @property
    def formatted(self) -> bool:
        """Whether transcripts keep Whisper's punctuation and casing."""
        return self.punctuate or self.smart_format

    def session_config(self) -> dict[str, object]:
        """The session options these parameters ask for (a ``config`` the session checks)."""
        fields: dict[str, object] = {"partials": self.interim_results}
        if self.language is not None:
            fields["language"] = "auto" if self.language == "multi" else self.language
        if self.keyterms:
            fields["prompt"] = ", ".join(self.keyterms)[:MAX_PROMPT_CHARS]
        if self.endpointing or self.utterance_end_ms is not None or self.vad_events:
            fields["endpointing"] = True
            silence = self.endpointing_ms if self.endpointing_ms is not None else self.utterance_end_ms
            if silence is not None:
                low, high = VAD_RANGES["min_silence_ms"]
                fields["min_silence_ms"] = min(max(silence, low), high)
        return fields


_FLAGS = ("interim_results", "punctuate", "smart_format", "vad_events")
_ACCEPTED = ("diarize", "filler_words", "numerals", "profanity_filter", "redact", "tag", "mip_opt_out",
             "no_delay", "multichannel", "dictation", "measurements", "search", "replace", "callback",
             "callback_method", "extra", "version", "tier", "alternatives", "detect_entities")


def parse_listen_params(query: Sequence[tuple[str, str]]) -> ListenParams:
    """The query string's parameters; raises :class:`ListenParamsError` for what cannot be served."""
    values: dict[str, str] = {}
    keyterms: list[str] = []
    ignored: list[str] = []
    for name, value in query:
        if name in ("keyterm", "keywords"):
            keyterms.append(value.rsplit(":", 1)[0] if name == "keywords" else value)  # keywords=word:boost
        elif name in _FLAGS or name in ("encoding", "sample_rate", "channels", "language", "model", "endpointing",
                                        "utterance_end_ms", "token"):
            values[name] = value
        elif name in _ACCEPTED:
            ignored.append(name)
        else:
            raise ListenParamsError(f"unknown query parameter {echo(name)}")
    encoding = values.get("encoding", "linear16").lower()
    if encoding not in ENCODINGS:
        raise ListenParamsError(f"encoding {echo(encoding)} is not supported here (supported: linear16, "
                                "i.e. 16-bit little-endian PCM)")
    if values.get("channels", "1") != "1":
        raise ListenParamsError(f"channels={echo(values['channels'])}: only mono (1) is supported")
    endpointing = values.get("endpointing")
    return ListenParams(
        sample_rate=_integer(values, "sample_rate", SAMPLE_RATE, 1000, MAX_SAMPLE_RATE),
        endpointing=endpointing is None or endpointing.lower() != "false",
        endpointing_ms=None if endpointing is None or endpointing.lower() in ("false", "true")
        else _integer(values, "endpointing", 10, 0, 60_000),
        utterance_end_ms=_integer(values, "utterance_end_ms", 0, 0, 60_000) if "utterance_end_ms" in values else None,
        language=values.get("language"),
        model=values.get("model"),
        keyterms=tuple(term for term in keyterms if term.strip()),
        ignored=tuple(ignored),
        **{flag: _boolean(values, flag) for flag in _FLAGS},
    )


def _integer(values: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    if name not in values:
        return default
    try:
        number = int(values[name])
    except ValueError:
        raise ListenParamsError(f"{name} must be a whole number, not {echo(values[name])}") from None
    if not low <= number <= high:
        raise ListenParamsError(f"{name} must be from {low} to {high}, not {number}")
    return number


def _boolean(values: Mapping[str, str], name: str) -> bool:
    value = values.get(name, "false").lower()
    if value not in ("true", "false"):
        raise ListenParamsError(f"{name} must be true or false, not {echo(values[name])}")
    return value == "true"


class DeepgramCodec:
    """One ``/v1/listen`` connection's wire state: audio conversion, result times, the request id."""

    def __init__(self, params: ListenParams, model: str, max_message: int) -> None:
        self.params = params
        self.model = model
        self.max_message = max_message
        self.request_id = str(uuid.uuid4())
        self.model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"woasr:{model}"))
        self.created = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        self._audio = PcmResampler(params.sample_rate)
        self._audio_bytes = 0
        self._hash = hashlib.sha256()
        self._configures_pending = 0
        """Client ``Configure`` messages not yet answered (the handshake's own configuration is not one)."""
        self._cursor = 0.0
        """End of the last final (seconds): finals tile the stream as Deepgram's do."""

    resumable = False
    """Deepgram's clients know no resume: a dropped connection ends the session."""

    # -- client to server ----------------------------------------------------------
    def opening(self) -> list[Command]:
        """The session configuration the handshake asked for, fed before any audio."""
        return [Configure(self.params.session_config())]

    def decode_binary(self, data: bytes) -> tuple[bytes | Error | InputEnded, ...]:
        """A binary message's audio, at 16 kHz. Deepgram's stream is a byte stream (an odd byte waits
        for its pair); a WAV header at its start (clients often stream a file as it is) is skipped."""
        if len(data) > self.max_message:
            return decode_audio_message(data, self.max_message)
        if not self._audio_bytes and data[:4] == b"RIFF" and data[8:12] == b"WAVE" and b"data" in data[:4096]:
            data = data[data.index(b"data", 12) + 8:]
        self._audio_bytes += len(data)
        self._hash.update(data)
        audio = self._audio.convert(data)
        return (audio,) if audio else ()

    def decode_text(self, text: str) -> tuple[Command | Error, ...]:
        """A control message as commands (none for ``KeepAlive``)."""
        command = self._command(text)
        return (command,) if command is not None else ()

    def _command(self, text: str) -> Command | Error | None:
        if text.strip() == "flush":
            return Error("unknown_type", MOVED)
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            return Error("bad_message", "text messages must be JSON: KeepAlive, Finalize, CloseStream or Configure")
        kind = message.get("type") if isinstance(message, dict) else None
        if kind in ("config", "flush", "close", "resume"):
            return Error("unknown_type", MOVED)
        if kind == "KeepAlive":
            return None
        if kind == "Finalize":
            return Flush()
        if kind == "CloseStream":
            return Close()
        if kind == "Configure":
            configure = _configure(message)
            self._configures_pending += isinstance(configure, Configure)
            return configure
        return Error("unknown_type", f"unknown message type {echo(kind)} (known: KeepAlive, Finalize, CloseStream, "
                                     "Configure)")

    # -- server to client ----------------------------------------------------------
    def encode(self, events: Sequence[Event]) -> list[str]:
        """Deepgram's messages for a batch of the session's events (a batch is one update's)."""
        out: list[str] = []
        finalizing = any(isinstance(event, Flushed) for event in events)
        finals_in_batch = False
        for index, event in enumerate(events):
            following = events[index + 1] if index + 1 < len(events) else None
            match event:
                case Final():
                    finals_in_batch = True
                    ends_speech = isinstance(following, UtteranceEnded)
                    out.append(self._results(event.words, True, ends_speech, finalizing))
                case Partial() if self.params.interim_results and event.words:
                    out.append(self._results(event.words, False, False, False))
                case SpeechStarted() if self.params.vad_events:
                    out.append(_dump({"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(event.time_s, 3)}))
                case UtteranceEnded():
                    previous = events[index - 1] if index else None
                    if not isinstance(previous, Final):  # its words went out earlier: close the turn now
                        out.append(self._results((), True, True, False))
                    if self.params.utterance_end_ms is not None:
                        out.append(_dump({"type": "UtteranceEnd", "channel": [0, 1],
                                          "last_word_end": round(event.last_word_end_s, 3)}))
                case Flushed() if not finals_in_batch:
                    out.append(self._results((), True, False, True))  # Finalize had nothing left to commit
                case Configured() if self._configures_pending:
                    self._configures_pending -= 1
                    out.append(_dump({"type": "ConfigureSuccess", "request_id": self.request_id,
                                      "keyterms": [t.strip() for t in event.options.prompt.split(",") if t.strip()]}))
                case Error() if event.code in CONFIG_ERRORS and self._configures_pending:
                    self._configures_pending -= 1
                    out.append(_dump({"type": "ConfigureFailure", "request_id": self.request_id,
                                      "code": "CONFIGURE_INTERNAL_ERROR", "description": event.message}))
                case Error():
                    out.append(_dump({"type": "Error", "variant": _VARIANTS.get(event.code, "ServerError"),
                                      "description": event.message, "code": event.code}))
        return out

    def closing(self, ending: Ending) -> list[str]:
        """The ``Metadata`` message that ends a stream (not after a refusal: no stream was opened)."""
        if ending in (Ending.REFUSED, Ending.UNAUTHORIZED, Ending.GONE):
            return []
        return [self._metadata()]

    def _metadata(self) -> str:
        duration = self._audio_bytes / 2 / self.params.sample_rate
        return _dump({
            "type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
            "sha256": self._hash.hexdigest(), "created": self.created, "duration": round(duration, 3),
            "channels": 1, "models": [self.model_uuid],
            "model_info": {self.model_uuid: self._model_info()},
        })

    def _model_info(self) -> dict[str, str]:
        from woasr import __version__

        return {"name": self.model, "version": __version__, "arch": "whisper"}

    def _results(self, words: tuple[Word, ...], is_final: bool, speech_final: bool, from_finalize: bool) -> str:
        start = self._cursor
        end = max(words[-1].end, start) if words else start
        if is_final:
            self._cursor = end
        return _dump({
            "type": "Results", "channel_index": [0, 1], "duration": round(end - start, 3), "start": round(start, 3),
            "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
            "channel": {"alternatives": [{
                "transcript": self._transcript(words),
                "confidence": round(sum(w.probability for w in words) / len(words), 4) if words else 0.0,
                "words": [self._word(w) for w in words],
            }]},
            "metadata": {"request_id": self.request_id, "model_info": self._model_info(),
                         "model_uuid": self.model_uuid},
        })

    def _transcript(self, words: tuple[Word, ...]) -> str:
        if self.params.formatted:
            return join_words(words)
        return " ".join(bare for w in words if (bare := _bare(w.text)))

    def _word(self, word: Word) -> dict[str, Any]:
        spoken = word.text.strip()
        return {"word": _bare(spoken) or spoken.lower(), "start": round(word.start, 3), "end": round(word.end, 3),
                "confidence": round(word.probability, 4),
                "punctuated_word": spoken if self.params.formatted else _bare(spoken) or spoken.lower()}


def _bare(text: str) -> str:
    """A word as Deepgram's ``word`` field has it: lower case, no surrounding punctuation."""
    return _WORD_EDGES.sub("", text.strip()).lower()


def _configure(message: Mapping[str, Any]) -> Configure | Error:
    """``{"type":"Configure", ...}``: keyterms (or a prompt) and language for the next updates."""
    fields: dict[str, object] = {}
    keyterms = message.get("keyterms", message.get("keyterm"))
    if keyterms is not None:
        if not isinstance(keyterms, list) or not all(isinstance(term, str) for term in keyterms):
            return Error("bad_value", "keyterms must be a list of strings")
        fields["prompt"] = ", ".join(keyterms)[:MAX_PROMPT_CHARS]
    for name in ("prompt", "language"):
        if name in message:
            fields[name] = message[name]
    if not fields:
        return Error("bad_value", "Configure needs keyterms, prompt or language")
    return Configure(fields)


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
