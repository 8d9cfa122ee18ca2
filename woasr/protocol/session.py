"""One streaming session: the protocol every transport drives.

The session is sans-I/O. A transport feeds it bytes with the time they
arrived and asks it for work; the model call is made by an inference engine
from a self-contained request, so it touches nothing of the session:

    session.receive_audio(data, now)
    if session.due():
        request = session.start_update()       # moves received audio into the processor
        result = await engine.transcribe(request) if request else None   # the model call
        events = session.complete_update(result.transcription if result else None, now)

Audio that arrives while a job runs waits in the session's inbox, so under
load each update covers more audio (the effective chunk grows) and nothing
received is dropped.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from woasr.core.audio import SAMPLE_RATE, pcm16le_to_float32
from woasr.core.language import UnsupportedLanguage, resolve_language
from woasr.core.processor import DEFAULT_MIN_CHUNK_S, OnlineASRProcessor
from woasr.core.records import Transcription, TranscriptionRequest, Update, Word
from woasr.core.vac import (
    GateItem,
    Silence,
    Speech,
    UtteranceEnd,
    VoiceGate,
    feed_processor,
    item_samples,
)
from woasr.core.vad import SpeechStart, VadSettings
from woasr.protocol.commands import Clear, Close, Command, Configure, Flush
from woasr.protocol.events import (
    RESUME_FAILED,
    Cleared,
    Configured,
    Error,
    Event,
    Final,
    Flushed,
    Partial,
    SessionOptions,
    SpeechStarted,
    UtteranceEnded,
    echo,
)
from woasr.protocol.latency import ArrivalLog, SessionStats
from woasr.protocol.state import Move, SessionState, advance

MIN_CHUNK_RANGE = (0.1, 30.0)
"""Seconds of new audio per update a client may ask for."""
MAX_PROMPT_CHARS = 1000
MID_STREAM_OPTIONS = frozenset({"language", "prompt"})
"""Options a client may change after its first audio: they only steer the next model calls."""
CONFIG_ERRORS = ("bad_value", "unknown_field", "config_after_audio")
"""Error codes with which :meth:`StreamSession.configure` refuses a configuration."""
VAD_RANGES = {"min_silence_ms": (100, 10_000), "vad_threshold": (0.05, 0.95), "speech_pad_ms": (0, 2000)}
"""Voice-activity options a session may set (before its first audio), with their ranges."""


@dataclass(frozen=True, slots=True)
class _UpdateKind:
    """Why the running update was started, beyond new audio: it commits everything it covers."""

    flushes: bool = False
    """A client flush: answered with ``Flushed`` once done."""
    ends_utterance: bool = False
    """Voice activity ended an utterance in the audio it covers."""

    @property
    def commits_all(self) -> bool:
        return self.flushes or self.ends_utterance


class StreamSession:
    """Turns PCM16LE bytes and commands into finals (and optional partials) for one client.

    ``languages`` are the codes the model accepts (None: any); an English-only
    model passes ``("en",)``. ``vac`` turns voice-activity control on from the
    start; ``vad`` are the detector's settings whenever it is on (a client may
    turn it on with ``config``). The call order is the one of
    :mod:`woasr.protocol.state`; a call out of order raises
    :class:`~woasr.protocol.state.SessionStateError`.
    """

    def __init__(
        self,
        processor: OnlineASRProcessor,
        min_chunk: float = DEFAULT_MIN_CHUNK_S,
        partials: bool = False,
        languages: Collection[str] | None = None,
        vac: bool = False,
        vad: VadSettings | None = None,
    ) -> None:
        self.processor = processor
        self.languages = languages
        self.vad = vad or VadSettings()
        self.options = SessionOptions(processor.language, processor.initial_prompt, min_chunk, partials, vac,
                                      min_silence_ms=round(self.vad.min_silence_s * 1000),
                                      vad_threshold=self.vad.threshold,
                                      speech_pad_ms=round(self.vad.speech_pad_s * 1000))
        self.state = SessionState.OPEN
        self.stats = SessionStats()
        self.arrivals = ArrivalLog()
        self._carry = b""
        self._gate: VoiceGate | None = None
        self._inbox: deque[GateItem] = deque()
        """Received audio not yet given to the processor, with voice-activity markers."""
        self._inbox_samples = 0
        self._utterance_ends = 0
        """Utterance ends waiting in the inbox: each makes an update due at once."""
        self._update = _UpdateKind()
        """What the running update (if any) was started for."""
        self._spoke_since_end = False
        self._deferred: list[Event] = []
        self._held_starts: list[Event] = []
        """Speech starts heard while the previous utterance is still being finished: they are
        sent after its ``utterance_end``, so that events never run ahead of finals."""
        self._received_samples = 0
        self._seq = 0
        self._flush_requested = False
        self._inbox_since: float | None = None
        self.update_since: float | None = None
        """Arrival time of the oldest audio of the running update (None: no new audio), so an
        engine can serve the audio that has waited longest first."""
        self._last_partial = ("", 0)
        """(text, beg_ms) of the partial the client shows now."""
        self._clear_after_update = False
        """A clear came during the running update: its buffer is forgotten once it is applied."""

    @property
    def min_chunk(self) -> float:
        return self.options.min_chunk

    @property
    def partials(self) -> bool:
        return self.options.partials

    @property
    def closed(self) -> bool:
        """No more audio is accepted (the client or the server ended the input)."""
        return not self.state.accepts_audio

    @property
    def finished(self) -> bool:
        """Closed, and every received sample has been through the model."""
        return self.state is SessionState.FINISHED

    # -- commands ------------------------------------------------------------
    def receive_command(self, command: Command) -> list[Event]:
        """Apply a flush, configuration or close; returns any immediate events."""
        if isinstance(command, Flush):
            self.request_flush()
            return []
        if isinstance(command, Close):
            self.close()
            return []
        if isinstance(command, Configure):
            return self.configure(command.fields)
        if isinstance(command, Clear):
            return self.clear()
        return [Error(RESUME_FAILED, "resume is only accepted as the first message of a new connection")]

    def configure(self, fields: Mapping[str, object]) -> list[Event]:
        """Set options; all fields apply, or none (with an error). ``language`` and ``prompt`` may
        change at any time (from the next update on), the others only before the first audio."""
        if self.closed:
            return [Error("config_after_audio", "config after the session was closed; options unchanged")]
        if self._received_samples and (late := sorted(set(fields) - MID_STREAM_OPTIONS)):
            return [Error("config_after_audio", f"{', '.join(late)} must be set before the first audio "
                                                "(language and prompt may change at any time); options unchanged")]
        changes: dict[str, object] = {}
        for name, value in fields.items():
            checked = self._check_option(name, value)
            if isinstance(checked, Error):
                return [checked]
            changes[name] = checked
        if changes.get("endpointing"):
            changes["vac"] = True  # an utterance ends where voice activity does
        self.options = options = dataclasses.replace(self.options, **changes)  # type: ignore[arg-type]
        self.processor.language = options.language
        self.processor.initial_prompt = options.prompt
        self.vad = dataclasses.replace(self.vad, min_silence_s=options.min_silence_ms / 1000,
                                       threshold=options.vad_threshold, speech_pad_s=options.speech_pad_ms / 1000)
        return [Configured(options)]

    def _check_option(self, name: str, value: object) -> object:
        """The option's value as the session keeps it, or an :class:`Error` saying what is wrong."""
        if name == "language":
            try:
                return resolve_language(value, self.languages)
            except UnsupportedLanguage as exc:
                return Error("bad_value", str(exc))
        if name == "prompt":
            if not isinstance(value, str) or len(value) > MAX_PROMPT_CHARS:
                return Error("bad_value", f"prompt must be a string of at most {MAX_PROMPT_CHARS} characters")
            return value
        if name == "min_chunk":
            low, high = MIN_CHUNK_RANGE
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                return Error("bad_value", f"min_chunk must be a number of seconds from {low:g} to {high:g}")
            return float(value)
        if name in ("partials", "vac", "endpointing"):
            if not isinstance(value, bool):
                return Error("bad_value", f"{name} must be true or false")
            return value
        if name in VAD_RANGES:
            low, high = VAD_RANGES[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                return Error("bad_value", f"{name} must be a number from {low:g} to {high:g}")
            return float(value) if name == "vad_threshold" else round(value)
        return Error("unknown_field", f"unknown config field {echo(name)} (known: language, prompt, min_chunk, "
                                      f"partials, vac, endpointing, {', '.join(VAD_RANGES)})")

    # -- input ---------------------------------------------------------------
    def receive_audio(self, data: bytes, now: float) -> list[Event]:
        """Accept PCM16LE bytes in any chunking; an odd byte waits for its pair."""
        if self.closed:
            return [Error("closed", f"{len(data)} bytes of audio after the session was closed were not processed")]
        data = self._carry + data
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        if not usable:
            return []
        if not self._inbox:
            self._inbox_since = now
        samples = pcm16le_to_float32(data[:usable])
        self._received_samples += len(samples)
        self.arrivals.record(self._received_samples, now)
        self.stats.audio_s = self._received_samples / SAMPLE_RATE
        if self.options.vac:
            self._gate = self._gate or VoiceGate(self.vad)
            return self._queue(self._gate.push(samples))
        return self._queue([Speech(samples)])

    def _queue(self, items: list[GateItem]) -> list[Event]:
        """Put settled audio and utterance ends in the inbox; return endpointing events."""
        events: list[Event] = []
        for item in items:
            if isinstance(item, SpeechStart):
                if self.options.endpointing:
                    finishing = self._utterance_ends or (self.state.updating and self._update.ends_utterance)
                    (self._held_starts if finishing else events).append(SpeechStarted(item.time))
                continue
            self._inbox.append(item)
            self._inbox_samples += item_samples(item)
            self._utterance_ends += isinstance(item, UtteranceEnd)
        return events

    def clear(self) -> list[Event]:
        """Discard what was received and not committed: the queued audio becomes silence (its time
        passes untranscribed) and the processor forgets its uncommitted buffer, now or, during an
        update, once that update is done (whose words are then not sent either)."""
        if self.closed:
            return [Error("closed", "clear after the session was closed was ignored")]
        self._inbox = deque(Silence(item.samples) if isinstance(item, Speech) else item for item in self._inbox)
        if self.state.updating:
            self._clear_after_update = True
        else:
            self.processor.discard_uncommitted()
        self._last_partial = ("", 0)
        return [Cleared()]

    def request_flush(self) -> None:
        """Commit everything received so far at the next opportunity, then say so."""
        self._flush_requested = True

    def close(self) -> None:
        """No more audio will come; the next :meth:`start_update` is the final one (idempotent)."""
        if self._gate is not None and not self.closed:
            self._deferred += self._queue(self._gate.finish())
        self.state = advance(self.state, Move.CLOSE)

    # -- work ----------------------------------------------------------------
    @property
    def received_samples(self) -> int:
        """Whole samples received so far (what a resumed connection need not send again)."""
        return self._received_samples

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next final will carry."""
        return self._seq

    @property
    def pending_s(self) -> float:
        """Seconds of audio received but not yet given to the model."""
        return self._inbox_samples / SAMPLE_RATE

    def due(self) -> bool:
        """Whether an update should run now (enough new audio, a flush, or the end)."""
        if self.state is SessionState.CLOSED:
            return True
        return self.state is SessionState.OPEN and (
            self.pending_s >= self.min_chunk or self._flush_requested or self._utterance_ends > 0)

    def start_update(self) -> TranscriptionRequest | None:
        """Move received audio into the processor; return the model call the update needs.

        None means no model call (nothing new to transcribe); either way the
        update ends with :meth:`complete_update`. One update takes at most what
        the processor's buffer may hold (``max_buffer_s``); more stays in the
        inbox for the next one, which is then due at once.
        """
        if self.state not in (SessionState.OPEN, SessionState.CLOSED):
            advance(self.state, Move.START_UPDATE)  # raises: an update is running, or none is left
        self.stats.last_chunk_s = self.pending_s
        self.update_since, self._inbox_since = self._inbox_since, None
        ended = self._feed(self._feed_limit())
        self._inbox_samples = sum(item_samples(item) for item in self._inbox)
        self._utterance_ends = sum(isinstance(item, UtteranceEnd) for item in self._inbox)
        if self._inbox:
            self._inbox_since = self.update_since
        final = self.closed and not self._inbox
        self.state = advance(self.state, Move.START_FINAL_UPDATE if final else Move.START_UPDATE)
        self._update = _UpdateKind(flushes=self._flush_requested and not self._inbox, ends_utterance=ended)
        self._flush_requested = self._flush_requested and bool(self._inbox)
        if self._finishing or self._update.commits_all:
            return self.processor.finish_request()
        return self.processor.prepare()

    def _feed_limit(self) -> int:
        """Samples one update may give the processor: up to its buffer cap, and at least a chunk."""
        room = self.processor.settings.max_buffer_s - self.processor.buffer_s
        return round(max(room, self.min_chunk) * SAMPLE_RATE)

    def _feed(self, limit: int) -> bool:
        """Inbox to processor, up to ``limit`` samples; whether an utterance ended in what was fed.

        Open, an update stops at an utterance end; closed, it goes on past them (the rest of
        the stream is being finished).
        """
        before = self.processor.received_until
        ended = feed_processor(self.processor, self._inbox, limit) is not None
        while self.closed and self._inbox and self.processor.received_until - before < limit:
            fed = self.processor.received_until - before
            ended = feed_processor(self.processor, self._inbox, limit - fed) is not None or ended
        return ended

    @property
    def _finishing(self) -> bool:
        return self.state is SessionState.FINISHING

    def complete_update(self, result: Transcription | None, now: float) -> list[Event]:
        """Events for the result of the request :meth:`start_update` returned (None for none)."""
        if not self.state.updating:
            advance(self.state, Move.COMPLETE_UPDATE)  # raises: no update was started
        if self._finishing or self._update.commits_all:
            update = self.processor.apply_finish(result)
        elif result is not None:
            update = self.processor.apply(result)
        else:
            update = Update(partial=self.processor.hypothesis.partial)
        if self._clear_after_update:  # its audio came before the clear: nothing of it is sent
            self._clear_after_update = False
            self.processor.discard_uncommitted()
            update = Update((), ())
        finishing, kind = self._finishing, self._update
        self.state = advance(self.state, Move.COMPLETE_UPDATE)
        self._update = _UpdateKind()
        self.stats.updates += 1
        events, self._deferred = self._deferred, []
        events += self._finals(update.committed, now)
        if kind.ends_utterance:
            events += self._utterance_ended()
        if self.partials:
            events += self._partials(update.partial, now)
        if kind.flushes:
            events.append(Flushed())
        if finishing and self._carry:
            events.append(Error("odd_byte", "the stream ended with half a PCM16 sample; it was ignored"))
            self._carry = b""
        return events

    def _finals(self, committed: tuple[Word, ...], now: float) -> list[Event]:
        """The committed words as one final, their latencies counted."""
        if not committed:
            return []
        latencies = [now - self.arrivals.arrival_of(w.end) for w in committed]
        final = Final(self._seq, committed, lag_s=latencies[-1], received_samples=self._received_samples)
        self._seq += 1
        self.stats.committed_words += len(committed)
        self.stats.latencies += latencies
        self._spoke_since_end = True
        return [final]

    def _utterance_ended(self) -> list[Event]:
        """Endpointing: the utterance end (if anything was said), then the starts held back for it."""
        events: list[Event] = []
        if self._spoke_since_end and self.options.endpointing:
            events.append(UtteranceEnded(self.processor.hypothesis.last_committed_end))
            self._spoke_since_end = False
        events += self._held_starts
        self._held_starts = []
        return events

    def _partials(self, words: tuple[Word, ...], now: float) -> list[Event]:
        """A partial, unless the client already shows exactly this one."""
        partial = Partial(words, self.processor.hypothesis.last_committed_end)
        key = (partial.text, partial.beg_ms)
        if key == self._last_partial:
            return []
        self._last_partial = key
        if partial.words:
            arrived = self.arrivals.arrival_of(partial.words[-1].end, prune=False)
            self.stats.partial_latencies.append(now - arrived)
        return [partial]
