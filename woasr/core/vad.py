"""Streaming voice-activity detection on Silero VAD v6: audio in, speech start and end events out.

Sans-I/O like the processor: :meth:`VoiceActivityDetector.feed` takes samples of
any length and returns the :class:`SpeechStart` / :class:`SpeechEnd` events they
decided; :meth:`~VoiceActivityDetector.finish` closes the stream. Times are
stream seconds counted from the first sample fed.

The network sees 512-sample frames (32 ms) preceded by the previous frame's last
64 samples, and carries an LSTM state from frame to frame. The detector keeps
that state, the context and any incomplete frame across calls, so the
probabilities do not depend on how the stream was cut into chunks: they equal
those of faster-whisper's one-shot run over the whole file.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from woasr.core.audio import SAMPLE_RATE, FloatAudio, to_float32

FRAME = 512
"""Samples per network frame at 16 kHz (32 ms)."""
CONTEXT = 64
"""Samples of the previous frame the network sees before each frame."""
FRAME_S = FRAME / SAMPLE_RATE
MAX_BATCH = 10_000
"""Frames per network call; a longer feed is run in several calls (bounded memory)."""
STATE_SHAPE = (1, 1, 128)


@dataclass(frozen=True, slots=True)
class VadSettings:
    """When frame probabilities become speech segments (seconds and probabilities)."""

    threshold: float = 0.5
    """A frame with a speech probability at or above this starts or continues speech."""
    neg_threshold: float | None = None
    """Below this a frame is silence; between the two thresholds a frame keeps the
    previous frame's class (hysteresis). None: ``max(threshold - 0.15, 0.01)``, as Silero."""
    min_silence_s: float = 0.5
    """Speech ends after this much continuous silence (rounded up to whole frames)."""
    speech_pad_s: float = 0.3
    """A segment starts this much before its first speech frame and ends this much after
    its last one, so the quiet edges of words are kept."""
    min_speech_s: float = 0.1
    """A burst of speech frames shorter than this (a click, a cough) does not start speech."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if self.neg_threshold is not None:
            if not 0.0 < self.neg_threshold < 1.0:
                raise ValueError(f"neg_threshold must be in (0, 1), got {self.neg_threshold!r}")
            if self.neg_threshold > self.threshold:
                raise ValueError(
                    f"neg_threshold ({self.neg_threshold}) must not exceed threshold ({self.threshold})"
                )
        for name in ("min_silence_s", "speech_pad_s", "min_speech_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    @property
    def silence_threshold(self) -> float:
        """The effective ``neg_threshold``."""
        return self.neg_threshold if self.neg_threshold is not None else max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """Speech began: the segment starts at ``time`` (padded), known at ``detected_at``."""

    time: float
    detected_at: float


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """Speech ended: the segment ends at ``time`` (padded), known at ``detected_at``."""

    time: float
    detected_at: float


VadEvent = SpeechStart | SpeechEnd


@dataclass(slots=True)
class VadState:
    """The network's recurrent state between frames; one per stream."""

    h: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(STATE_SHAPE, np.float32))
    c: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(STATE_SHAPE, np.float32))


def default_model_path() -> str:
    """The Silero VAD v6 model that faster-whisper ships."""
    from faster_whisper.utils import get_assets_path

    return os.path.join(get_assets_path(), "silero_vad_v6.onnx")


class SileroVadModel:
    """Loads the ONNX model once; thread-safe to share between detectors (state lives in the detector).

    One intra-op and one inter-op thread: a 32 ms frame costs well under a
    millisecond, and more threads would only compete with Whisper for the cores.
    """

    def __init__(self, path: str | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3  # errors only
        self.path = path or default_model_path()
        self.session = onnxruntime.InferenceSession(
            self.path, sess_options=options, providers=["CPUExecutionProvider"]
        )

    def probabilities(self, frames: np.ndarray, state: VadState) -> npt.NDArray[np.float32]:
        """Speech probability of each frame, shape ``[n]``.

        ``frames`` is ``[n, 576]`` float32: each frame's 64 context samples, then its
        512 samples, in stream order (the batch axis is time). ``state`` is
        updated in place to the network state after the last frame.
        """
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 2 or frames.shape[1] != CONTEXT + FRAME:
            raise ValueError(f"expected frames of shape [n, {CONTEXT + FRAME}], got {frames.shape}")
        outputs = []
        for at in range(0, len(frames), MAX_BATCH):
            probs, state.h, state.c = self.session.run(
                None, {"input": frames[at : at + MAX_BATCH], "h": state.h, "c": state.c}
            )
            outputs.append(probs.reshape(-1))
        return np.concatenate(outputs) if outputs else np.zeros(0, np.float32)


@functools.cache
def shared_model() -> SileroVadModel:
    """One model per process, loaded on first use."""
    return SileroVadModel()


def _frames_with_context(audio: FloatAudio, context: FloatAudio) -> npt.NDArray[np.float32]:
    """Whole frames of ``audio`` as network input rows, ``context`` preceding the first."""
    frames = audio.reshape(-1, FRAME)
    previous = np.concatenate([context[None, :], frames[:-1, -CONTEXT:]])
    return np.concatenate([previous, frames], axis=1)


class VoiceActivityDetector:
    """Speech segments of one stream, decided frame by frame as audio arrives.

    Call :meth:`feed` with each chunk and :meth:`finish` once at the end (then
    :meth:`reset` to reuse it). Events alternate Start/End, in stream order.
    A segment never starts before the previous one ended, even where the pads
    of two segments would overlap.
    """

    def __init__(self, settings: VadSettings | None = None, model: SileroVadModel | None = None) -> None:
        self.settings = settings or VadSettings()
        self.model = model or shared_model()
        self._speech_frames = max(1, math.ceil(self.settings.min_speech_s / FRAME_S - 1e-9))
        self._silence_frames = max(1, math.ceil(self.settings.min_silence_s / FRAME_S - 1e-9))
        self._pad = round(self.settings.speech_pad_s * SAMPLE_RATE)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next sample fed is time 0 again."""
        self._state = VadState()
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._fed = 0  # samples
        self._frames = 0  # frames run through the network
        self._voiced = False  # the previous frame's class (hysteresis)
        self._in_speech = False
        self._run_start: int | None = None  # first sample of a voiced run not yet speech
        self._run_frames = 0
        self._last_voiced_end = 0
        self._silent_frames = 0
        self._previous_end = 0
        self._finished = False
        self._last_probabilities = np.zeros(0, np.float32)

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def fed_s(self) -> float:
        """Seconds of audio fed so far."""
        return self._fed / SAMPLE_RATE

    @property
    def last_probabilities(self) -> npt.NDArray[np.float32]:
        """Speech probabilities of the frames the last :meth:`feed` or :meth:`finish` completed."""
        return self._last_probabilities

    def feed(self, samples: npt.ArrayLike) -> list[VadEvent]:
        """Take 16 kHz mono samples (float32, or int16 PCM) of any length; return the events decided."""
        if self._finished:
            raise RuntimeError("feed() after finish(): call reset() to start a new stream")
        audio = to_float32(samples)
        self._fed += len(audio)
        buffered = np.concatenate([self._pending, audio]) if len(self._pending) else audio
        whole = len(buffered) - len(buffered) % FRAME
        self._pending = buffered[whole:].copy()
        return self._run(buffered[:whole])

    def finish(self) -> list[VadEvent]:
        """End of stream: run the last partial frame (zero-padded) and close an open segment.

        The closing :class:`SpeechEnd` is at most the stream end. A second call returns nothing.
        """
        if self._finished:
            return []
        events: list[VadEvent] = []
        if len(self._pending):
            events += self._run(np.pad(self._pending, (0, FRAME - len(self._pending))))
            self._pending = np.zeros(0, np.float32)
        else:
            self._last_probabilities = np.zeros(0, np.float32)
        if self._in_speech:
            events.append(self._end(self._fed))
        self._finished = True
        return events

    def _run(self, audio: FloatAudio) -> list[VadEvent]:
        """Run whole frames through the network in one batch and step the state machine."""
        if not len(audio):
            self._last_probabilities = np.zeros(0, np.float32)
            return []
        rows = _frames_with_context(audio, self._context)
        self._context = audio[-CONTEXT:].copy()
        probabilities = self.model.probabilities(rows, self._state)
        self._last_probabilities = probabilities
        events = []
        for probability in probabilities.tolist():
            event = self._step(probability)
            if event is not None:
                events.append(event)
        return events

    def _step(self, probability: float) -> VadEvent | None:
        """One frame through the hysteresis and the speech/silence state machine."""
        start = self._frames * FRAME
        end = min(start + FRAME, self._fed)  # the zero-padded last frame ends with the stream
        self._frames += 1
        settings = self.settings
        self._voiced = probability >= settings.threshold or (
            self._voiced and probability >= settings.silence_threshold
        )
        if self._in_speech:
            if self._voiced:
                self._last_voiced_end, self._silent_frames = end, 0
                return None
            self._silent_frames += 1
            return self._end(end) if self._silent_frames >= self._silence_frames else None
        if not self._voiced:
            self._run_start = None
            return None
        if self._run_start is None:
            self._run_start, self._run_frames = start, 0
        self._run_frames += 1
        if self._run_frames < self._speech_frames:
            return None
        self._in_speech, self._last_voiced_end, self._silent_frames = True, end, 0
        begin = max(self._run_start - self._pad, self._previous_end, 0)
        self._run_start = None
        return SpeechStart(begin / SAMPLE_RATE, end / SAMPLE_RATE)

    def _end(self, detected_at: int) -> SpeechEnd:
        end = min(self._last_voiced_end + self._pad, detected_at)
        self._in_speech, self._previous_end = False, end
        return SpeechEnd(end / SAMPLE_RATE, detected_at / SAMPLE_RATE)


class SpeechTrace:
    """Frame speech probabilities of the recent stream: was anything said between two times?

    A guard asks it about each hypothesised word; words the model puts where the
    detector heard no speech at all are invented ("Thank you." in a pause).
    """

    def __init__(self, model: SileroVadModel | None = None) -> None:
        self._detector = VoiceActivityDetector(model=model)
        self._probabilities: npt.NDArray[np.float32] = np.zeros(0, np.float32)
        self._first_frame = 0
        """Stream index of the frame ``_probabilities[0]`` belongs to."""

    def feed(self, samples: npt.ArrayLike) -> None:
        """The next samples of the stream (any length)."""
        self._detector.feed(samples)
        fresh = self._detector.last_probabilities
        if len(fresh):
            self._probabilities = np.concatenate([self._probabilities, fresh])

    def skip(self, samples: int) -> None:
        """Samples the stream passed over without feeding them: they count as silence."""
        self.feed(np.zeros(samples, np.float32))

    def forget_before(self, seconds: float) -> None:
        """Drop what lies before ``seconds`` (the audio buffer was cut there)."""
        drop = min(int(seconds / FRAME_S) - self._first_frame, len(self._probabilities))
        if drop > 0:
            self._probabilities = self._probabilities[drop:]
            self._first_frame += drop

    def peak(self, start: float, end: float) -> float | None:
        """The highest speech probability of the frames overlapping ``[start, end]`` seconds
        (None where no frame of that span has been heard yet)."""
        first = max(int(start / FRAME_S) - self._first_frame, 0)
        last = math.ceil(end / FRAME_S) - self._first_frame
        if last <= first or last > len(self._probabilities):
            return None
        return float(self._probabilities[first:last].max())
