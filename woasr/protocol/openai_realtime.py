"""OpenAI's Realtime API in transcription mode (``/v1/realtime?intent=transcription``), over this
product's session: the GA protocol the current ``openai`` SDK speaks.

A sans-I/O codec. Client events: ``session.update`` (a session of type ``transcription``: input
format ``audio/pcm`` at 24 kHz, transcription ``language`` and ``prompt``, turn detection
``server_vad`` with its thresholds or none), ``input_audio_buffer.append`` (base64 PCM16, resampled
to 16 kHz), ``.commit`` and ``.clear``. Server events: ``session.created`` / ``session.updated``,
``input_audio_buffer.speech_started`` / ``speech_stopped`` / ``committed`` / ``cleared``,
``conversation.item.input_audio_transcription.delta`` (one per final: committed text, never
withdrawn) and ``.completed`` (per turn, with ``usage``), and ``error``.

A turn (one conversation item) ends where voice activity says speech ended (``server_vad``) or at
the client's ``commit``. With ``server_vad`` a turn's deltas stream as its words are committed, and
``committed`` and ``completed`` follow the last one; without turn detection the turn's text is
held until the commit (a ``clear`` discards it with its audio), then ``committed``, the deltas
and ``completed`` go out, as OpenAI orders them.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from woasr.core.audio import PcmResampler
from woasr.protocol.commands import Clear, Command, Configure, Flush
from woasr.protocol.ending import Ending, InputEnded
from woasr.protocol.events import (
    Cleared,
    Configured,
    Error,
    Event,
    Final,
    Flushed,
    Ready,
    SessionOptions,
    SpeechStarted,
    UtteranceEnded,
    echo,
)
from woasr.protocol.session import CONFIG_ERRORS
from woasr.protocol.websocket import decode_audio_message

INPUT_RATE = 24_000
"""The only PCM rate of the Realtime API."""
CLIENT_EVENTS = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                 "input_audio_buffer.clear")


class RealtimeCodec:
    """One ``/v1/realtime`` connection's wire state: its turns (items), event ids, audio conversion."""

    resumable = False
    """OpenAI's clients know no resume: a dropped connection ends the session."""

    def __init__(self, model: str, max_message: int) -> None:
        self.model = model
        self.max_message = max_message
        self._audio = PcmResampler(INPUT_RATE)
        self._event_ids = itertools.count(1)
        self._item_ids = itertools.count(1)
        self._options: SessionOptions | None = None
        self._item: str | None = None
        """The open turn's item id (None: no turn open)."""
        self._previous_item: str | None = None
        self._turn_text: list[str] = []
        """Texts of the open turn's deltas."""
        self._held: list[Final] = []
        """Finals of the open turn not yet sent (no turn detection: they go out at commit)."""
        self._turn_start_s = 0.0
        self._turn_end_s = 0.0
        self._created = False
        self._logprobs = False
        """The client asked for ``item.input_audio_transcription.logprobs``."""
        self._updates_pending = 0
        """``session.update`` events not yet answered (the first configuration is not one)."""

    # -- client to server ----------------------------------------------------------
    def opening(self) -> list[Command]:
        """OpenAI's default: server VAD on, with its default thresholds."""
        return [Configure({"endpointing": True, "vac": True})]

    def decode_binary(self, data: bytes) -> tuple[Error, ...]:
        return (Error("invalid_request_error", "binary messages are not part of the Realtime API: send audio as "
                                               "input_audio_buffer.append with base64 PCM16"),)

    def decode_text(self, text: str) -> Sequence[Command | Error | bytes | InputEnded]:
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):
            return (Error("invalid_request_error", "a client event must be a JSON object with a 'type'"),)
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "input_audio_buffer.append":
            return self._append(event)
        if kind == "input_audio_buffer.commit":
            return (Flush(),)
        if kind == "input_audio_buffer.clear":
            return (Clear(),)
        if kind == "session.update":
            return self._session_update(event.get("session"))
        return (Error("invalid_request_error", f"unknown or unsupported client event type {echo(kind)} "
                                               f"(a transcription session takes: {', '.join(CLIENT_EVENTS)})"),)

    def _append(self, event: Mapping[str, Any]) -> tuple[bytes | Error | InputEnded, ...]:
        audio = event.get("audio")
        if not isinstance(audio, str):
            return (Error("invalid_request_error", "input_audio_buffer.append needs 'audio': base64 PCM16 bytes"),)
        if len(audio) * 3 // 4 > self.max_message:
            return decode_audio_message(b"\0" * (self.max_message + 2), self.max_message)
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            return (Error("invalid_request_error", "input_audio_buffer.append: 'audio' is not valid base64"),)
        converted = self._audio.convert(data)
        return (converted,) if converted else ()

    def _session_update(self, session: object) -> tuple[Configure | Error, ...]:
        if not isinstance(session, dict):
            return (Error("invalid_request_error", "session.update needs a 'session' object"),)
        if session.get("type", "transcription") != "transcription":
            return (Error("invalid_request_error", "this server runs transcription sessions only: session.type must "
                                                   "be 'transcription' (connect with ?intent=transcription)"),)
        if isinstance(session.get("include"), list):
            self._logprobs = "item.input_audio_transcription.logprobs" in session["include"]
        audio_input = (session.get("audio") or {}).get("input") or {}
        fields: dict[str, object] = {}
        audio_format = audio_input.get("format")
        if audio_format is not None and (audio_format.get("type", "audio/pcm") != "audio/pcm"
                                         or audio_format.get("rate", INPUT_RATE) != INPUT_RATE):
            return (Error("invalid_request_error", f"audio format {echo(audio_format)} is not supported: only "
                                                   "audio/pcm at 24000 Hz"),)
        transcription = audio_input.get("transcription")
        if isinstance(transcription, dict):
            if "language" in transcription:
                fields["language"] = transcription["language"] or "auto"
            if "prompt" in transcription:
                fields["prompt"] = transcription["prompt"] or ""
        if "turn_detection" in audio_input:
            fields.update(_turn_detection(audio_input["turn_detection"]))
        self._updates_pending += 1
        return (Configure(self._changed(fields)),)

    def _changed(self, fields: dict[str, object]) -> dict[str, object]:
        """Only what differs from the session's options: a client that repeats its whole session
        mid-stream changes its transcription settings, not its voice activity (set before audio)."""
        if self._options is None:
            return fields
        current = _options_fields(self._options)
        return {name: value for name, value in fields.items() if current.get(name) != value}

    # -- server to client ----------------------------------------------------------
    def encode(self, events: Sequence[Event]) -> list[str]:
        out: list[str] = []
        for event in events:
            match event:
                case Ready():
                    self._options = event.options
                case Configured() if not self._created:  # the opening configuration: the session as created
                    self._options, self._created = event.options, True
                    out.append(self._event("session.created", session=self._session()))
                case Configured():
                    self._options = event.options
                    if self._updates_pending:
                        self._updates_pending -= 1
                        out.append(self._event("session.updated", session=self._session()))
                case SpeechStarted():
                    self._open_turn(event.time_s)
                    out.append(self._event("input_audio_buffer.speech_started",
                                           audio_start_ms=round(event.time_s * 1000), item_id=self._item))
                case Final():
                    item = self._open_turn(event.words[0].start)
                    self._turn_end_s = event.words[-1].end
                    if self._vad:
                        out.append(self._delta(item, event))
                    else:  # no turn detection: the turn's text is its audio's until commit (or clear)
                        self._held.append(event)
                case UtteranceEnded():
                    if self._item is not None:
                        out.append(self._event("input_audio_buffer.speech_stopped",
                                               audio_end_ms=round(event.last_word_end_s * 1000), item_id=self._item))
                        out += self._close_turn()
                case Flushed():
                    self._open_turn(self._turn_end_s)
                    out += self._close_turn()
                case Cleared():
                    self._held = []
                    out.append(self._event("input_audio_buffer.cleared"))
                case Error():
                    if event.code in CONFIG_ERRORS and self._updates_pending:
                        self._updates_pending -= 1  # the session.update was refused
                    out.append(self._error(event))
        return out

    def closing(self, ending: Ending) -> list[str]:
        return []

    def _open_turn(self, at_s: float) -> str:
        if self._item is None:
            self._item = f"item_{next(self._item_ids):06d}"
            self._turn_text, self._turn_start_s = [], at_s
        return self._item

    @property
    def _vad(self) -> bool:
        return self._options is not None and self._options.endpointing

    def _delta(self, item: str, final: Final) -> str:
        """One final's text as a delta: deltas only append, so partials (which may change) are not sent.
        With ``include: ["item.input_audio_transcription.logprobs"]`` each word's probability comes
        as a log-probability (one entry per word, not per token)."""
        delta = final.text if not self._turn_text else " " + final.text
        self._turn_text.append(final.text)
        logprobs = {"logprobs": [{"token": w.text, "logprob": round(math.log(max(w.probability, 1e-9)), 4),
                                  "bytes": list(w.text.encode())} for w in final.words]} if self._logprobs else {}
        return self._event("conversation.item.input_audio_transcription.delta", item_id=item, content_index=0,
                           delta=delta, **logprobs)

    def _close_turn(self) -> list[str]:
        """``committed``, the held deltas (without turn detection), then ``completed`` for the open turn."""
        item, previous = self._item, self._previous_item
        assert item is not None
        self._item, self._previous_item = None, item
        out = [self._event("input_audio_buffer.committed", item_id=item, previous_item_id=previous)]
        out += [self._delta(item, final) for final in self._held]
        self._held = []
        seconds = max(self._turn_end_s - self._turn_start_s, 0.0)
        out.append(self._event("conversation.item.input_audio_transcription.completed", item_id=item,
                               content_index=0, transcript=" ".join(self._turn_text),
                               usage={"type": "duration", "seconds": round(seconds, 3)}))
        return out

    def _session(self) -> dict[str, Any]:
        options = self._options
        assert options is not None
        vad = {"type": "server_vad", "threshold": options.vad_threshold, "prefix_padding_ms": options.speech_pad_ms,
               "silence_duration_ms": options.min_silence_ms, "create_response": False, "interrupt_response": False}
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": INPUT_RATE},
                "transcription": {"model": self.model, "language": options.language, "prompt": options.prompt},
                "turn_detection": vad if options.endpointing else None,
                "noise_reduction": None,
            }},
        }

    def _error(self, error: Error) -> str:
        code = error.code if error.code != "invalid_request_error" else None
        kind = "server_error" if error.code == "server_error" else "invalid_request_error"
        return self._event("error", error={"type": kind, "code": code, "message": error.message, "param": None,
                                           "event_id": None})

    def _event(self, kind: str, **fields: Any) -> str:
        return json.dumps({"type": kind, "event_id": f"event_{next(self._event_ids):06d}", **fields},
                          ensure_ascii=False, separators=(",", ":"))


def _turn_detection(detection: object) -> dict[str, object]:
    """Session options for a ``turn_detection`` (None: no voice activity, turns end at commits)."""
    if not isinstance(detection, dict):
        return {"endpointing": False, "vac": False}
    fields: dict[str, object] = {"endpointing": True, "vac": True}
    for wire, option in (("threshold", "vad_threshold"), ("prefix_padding_ms", "speech_pad_ms"),
                         ("silence_duration_ms", "min_silence_ms")):
        if detection.get(wire) is not None:
            fields[option] = detection[wire]
    return fields


def _options_fields(options: SessionOptions) -> dict[str, object]:
    return {"language": options.language or "auto", "prompt": options.prompt, "endpointing": options.endpointing,
            "vac": options.vac, "vad_threshold": options.vad_threshold, "speech_pad_ms": options.speech_pad_ms,
            "min_silence_ms": options.min_silence_ms}
