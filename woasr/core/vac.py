"""Voice-activity-controlled streaming: silence never reaches the model, and an utterance ends when speech does.

A :class:`VoiceGate` runs the voice-activity detector over the stream as it
arrives and turns it into items, in stream order: :class:`Speech` (audio for
the model), :class:`Silence` (audio the timeline skips), the detector's
:class:`~woasr.core.vad.SpeechStart` (for endpointing events) and
:class:`UtteranceEnd`, after which the utterance is finished at once instead
of waiting for another agreement. :func:`feed_processor` gives the queued
items to an :class:`~woasr.core.processor.OnlineASRProcessor` up to the next
utterance end; the next utterance then starts a fresh buffer, with the
committed text as its prompt.

Silence is held back for a short look-back before it is skipped, because the
detector decides that speech started a little after its (padded) start.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from woasr.core.audio import SAMPLE_RATE, FloatAudio, to_float32
from woasr.core.processor import OnlineASRProcessor
from woasr.core.vad import SpeechEnd, SpeechStart, VadSettings, VoiceActivityDetector

LOOKBACK_MARGIN_S = 0.1
"""Look-back beyond the detector's own pad and minimum speech, for its frame granularity."""


@dataclass(frozen=True, slots=True, eq=False)
class Speech:
    """Audio for the model."""

    samples: FloatAudio


@dataclass(frozen=True, slots=True, eq=False)
class Silence:
    """Audio between utterances: the model never hears it, the timeline counts it."""

    samples: FloatAudio


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    """Speech ended (``time``: its padded end, stream seconds); finish the utterance now."""

    time: float
    detected_at: float


GateItem = Speech | Silence | SpeechStart | UtteranceEnd


def item_samples(item: GateItem) -> int:
    """How many samples of the stream an item covers (0 for markers)."""
    return len(item.samples) if isinstance(item, Speech | Silence) else 0


class VoiceGate:
    """Splits a stream into speech for the model and silence to skip (sans-I/O).

    :meth:`push` takes audio in any chunking and returns the items it settled;
    :meth:`finish` settles the rest at the end of the stream. The items cover
    every sample pushed, in order, exactly once.
    """

    def __init__(self, settings: VadSettings | None = None, detector: VoiceActivityDetector | None = None) -> None:
        self.detector = detector or VoiceActivityDetector(settings)
        vad = self.detector.settings
        self._lookback = round((vad.speech_pad_s + vad.min_speech_s + LOOKBACK_MARGIN_S) * SAMPLE_RATE)
        self._held: FloatAudio = np.zeros(0, np.float32)
        self._held_from = 0
        """Absolute sample index of ``_held[0]``: everything before it has been settled."""
        self._open = False

    @property
    def in_speech(self) -> bool:
        return self._open

    def push(self, samples: npt.ArrayLike) -> list[GateItem]:
        """Run the detector over new audio; return what is now known to be speech or silence."""
        chunk = to_float32(samples)
        self._held = np.concatenate([self._held, chunk]) if len(self._held) else chunk
        items = self._settle(self.detector.feed(chunk))
        if self._open:
            items += self._take(len(self._held), Speech)
        elif len(self._held) > self._lookback:
            items += self._take(len(self._held) - self._lookback, Silence)
        return items

    def finish(self) -> list[GateItem]:
        """End of stream: the open utterance ends with the audio, the rest is silence."""
        items = self._settle(self.detector.finish())
        if self._open:
            end = (self._held_from + len(self._held)) / SAMPLE_RATE
            items += [*self._take(len(self._held), Speech), UtteranceEnd(end, end)]
            self._open = False
        return items + self._take(len(self._held), Silence)

    def _settle(self, events: list[SpeechStart | SpeechEnd]) -> list[GateItem]:
        items: list[GateItem] = []
        for event in events:
            if isinstance(event, SpeechStart):
                start = max(round(event.time * SAMPLE_RATE), self._held_from)
                items += self._take(start - self._held_from, Silence)
                items.append(event)
                self._open = True
            else:
                detected = round(event.detected_at * SAMPLE_RATE)
                items += self._take(detected - self._held_from, Speech)
                items.append(UtteranceEnd(event.time, event.detected_at))
                self._open = False
        return items

    def _take(self, count: int, kind: type[Speech] | type[Silence]) -> list[GateItem]:
        count = min(max(count, 0), len(self._held))
        if not count:
            return []
        taken, self._held = self._held[:count], self._held[count:]
        self._held_from += count
        return [kind(taken)]


def feed_processor(
    processor: OnlineASRProcessor, items: deque[GateItem], limit: int | None = None
) -> UtteranceEnd | None:
    """Give the processor the queued items up to the first utterance end (returned, or None).

    Speech is inserted, silence skipped; start markers are only for endpointing.
    Items after an utterance end stay queued for the next update. ``limit``: at most
    this many samples of speech are inserted (an item is split; the rest stays queued),
    so that one model call never covers more than the buffer may hold.
    """
    inserted = 0
    while items and (limit is None or inserted < limit):
        item = items.popleft()
        if isinstance(item, Speech):
            room = len(item.samples) if limit is None else limit - inserted
            if room < len(item.samples):
                items.appendleft(Speech(item.samples[room:]))
            processor.insert_audio(item.samples[:room])
            inserted += min(room, len(item.samples))
        elif isinstance(item, Silence):
            processor.skip_silence(item.samples)
        elif isinstance(item, UtteranceEnd):
            return item
    return None
