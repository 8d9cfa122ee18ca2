"""The streaming Silero VAD on real speech from ../shared/audio, with the real ONNX model."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from woasr.audio_io import load_audio
from woasr.core.audio import SAMPLE_RATE
from woasr.core.vad import (
    FRAME,
    SpeechEnd,
    SpeechStart,
    VadEvent,
    VadSettings,
    VoiceActivityDetector,
)

LONG_FILES = ("long/ljspeech_en_long", "long/mixed_en_long")
TOLERANCE_S = 0.3
ROOM_TONE_DBFS = -50.0
"""LibriSpeech clips carry up to 0.6 s of room tone (-55 to -66 dBFS) inside their clip
boundaries; a reference boundary is moved past it to where the clip becomes audible."""
PAUSE_DBFS = -35.0
"""Audio left out of every segment must be quieter than this in each 10 ms window: a pause
(room tone, JFK's crowd between phrases: -37 dBFS at most), not a word."""
SPOKEN_S = {"en/jfk_inaugural_1961.wav": 10.72}
"""Clips that end in applause, not speech: where the last word ends (tiny.en word times)."""


def segments(events: list[VadEvent]) -> list[tuple[float, float]]:
    """(start, end) pairs, after checking the events alternate and are well ordered."""
    pairs, previous_end = [], 0.0
    for start, end in zip(events[::2], events[1::2], strict=True):
        assert isinstance(start, SpeechStart) and isinstance(end, SpeechEnd)
        assert previous_end <= start.time <= start.detected_at
        assert start.time <= end.time <= end.detected_at
        assert start.detected_at <= end.detected_at
        pairs.append((start.time, end.time))
        previous_end = end.time
    return pairs


def detect(audio: np.ndarray, settings: VadSettings | None = None, chunk: int = 1600) -> list[VadEvent]:
    detector = VoiceActivityDetector(settings)
    events: list[VadEvent] = []
    for at in range(0, len(audio), chunk):
        events += detector.feed(audio[at : at + chunk])
    return events + detector.finish()


def levels_dbfs(audio: np.ndarray, window: int = 160) -> np.ndarray:
    """Level of each 10 ms window."""
    whole = audio[: len(audio) // window * window].reshape(-1, window)
    return 10 * np.log10((whole.astype(np.float64) ** 2).mean(axis=1) + 1e-12)


def audible_bounds(audio: np.ndarray, start_s: float, end_s: float) -> tuple[float, float]:
    """The reference utterance without the room tone at its edges (independent of the model)."""
    clip = audio[round(start_s * SAMPLE_RATE) : round(end_s * SAMPLE_RATE)]
    loud = np.flatnonzero(levels_dbfs(clip) > ROOM_TONE_DBFS)
    return start_s + loud[0] * 0.01, start_s + (loud[-1] + 1) * 0.01


@dataclass(frozen=True)
class LongRun:
    name: str
    audio: np.ndarray
    reference: list[dict]
    bare: list[VadEvent]  # speech_pad_s=0: times are the speech boundaries themselves
    padded: list[VadEvent]  # the default pad


@pytest.fixture(scope="module")
def long_runs(audio_dir) -> list[LongRun]:
    runs = []
    for name in LONG_FILES:
        audio = load_audio(audio_dir / f"{name}.wav")
        reference = json.loads((audio_dir / f"{name}.segments.json").read_text())["segments"]
        bare = detect(audio, VadSettings(min_silence_s=0.25, speech_pad_s=0.0))
        padded = detect(audio, VadSettings(min_silence_s=0.25))
        runs.append(LongRun(name, audio, reference, bare, padded))
    return runs


@pytest.mark.parametrize("chunk", [160, 512, 1000, 16000])
def test_streaming_probabilities_equal_faster_whispers_one_shot_run(audio_dir, chunk):
    from faster_whisper.vad import get_vad_model

    audio = load_audio(audio_dir / "long/mixed_en_long.wav")[: 20 * SAMPLE_RATE + 123]  # speech, gaps, a partial frame
    reference = get_vad_model()(np.pad(audio, (0, FRAME - len(audio) % FRAME))).reshape(-1)

    detector = VoiceActivityDetector()
    streamed, events = [], []
    for at in range(0, len(audio), chunk):
        events += detector.feed(audio[at : at + chunk])
        streamed.append(detector.last_probabilities)
    events += detector.finish()
    streamed.append(detector.last_probabilities)
    streamed = np.concatenate(streamed)

    assert len(streamed) == -(-len(audio) // FRAME) == len(reference)
    assert np.allclose(streamed, reference, atol=1e-4)
    assert events == detect(audio, chunk=len(audio))  # the chunking changes no decision either
    assert detector.fed_s == len(audio) / SAMPLE_RATE


def boundary_errors(run: LongRun) -> tuple[np.ndarray, np.ndarray]:
    """Distance (s) from each audible reference start/end to the nearest detected one."""
    pairs = segments(run.bare)
    starts, ends = np.array([s for s, _ in pairs]), np.array([e for _, e in pairs])
    bounds = [audible_bounds(run.audio, r["start_s"], r["end_s"]) for r in run.reference]
    return (np.array([np.abs(starts - s).min() for s, _ in bounds]),
            np.array([np.abs(ends - e).min() for _, e in bounds]))


def test_segment_boundaries_match_the_reference_utterances(long_runs):
    pooled_starts, pooled_ends = [], []
    for run in long_runs:
        starts, ends = boundary_errors(run)
        pooled_starts.append(starts)
        pooled_ends.append(ends)
        for kind, errors in (("start", starts), ("end", ends)):
            print(f"{run.name} {kind}: {len(errors)} boundaries, median {np.median(errors) * 1000:.0f} ms, "
                  f"max {errors.max() * 1000:.0f} ms, within {TOLERANCE_S * 1000:.0f} ms: "
                  f"{(errors <= TOLERANCE_S).mean():.0%}")
            # Measured: ljspeech 100 % / 100 %, mixed 97 % / 93 % (misses: a soft onset the model
            # scores 0.3-0.4 for 0.4 s, JFK's applause after "country.", a breathy LibriSpeech ending).
            assert (errors <= TOLERANCE_S).mean() >= 0.9, (run.name, kind, np.round(errors * 1000))
    for kind, errors in (("start", np.concatenate(pooled_starts)), ("end", np.concatenate(pooled_ends))):
        assert (errors <= TOLERANCE_S).mean() >= 0.95, kind
        assert np.median(errors) <= 0.1, kind


def test_the_pad_moves_the_boundaries_and_changes_no_decision(long_runs):
    pad = VadSettings().speech_pad_s
    for run in long_runs:
        assert [e.detected_at for e in run.padded] == [e.detected_at for e in run.bare]
        previous_end = 0.0
        for bare, padded in zip(run.bare, run.padded, strict=True):
            if isinstance(bare, SpeechStart):
                assert padded.time == pytest.approx(max(bare.time - pad, previous_end, 0.0), abs=1e-9)
            else:
                assert padded.time == pytest.approx(min(bare.time + pad, padded.detected_at), abs=1e-9)
                previous_end = padded.time


def test_no_speech_is_left_out_of_the_padded_segments(long_runs):
    for run in long_runs:
        covered = np.zeros(len(run.audio), bool)
        for start, end in segments(run.padded):
            covered[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)] = True
        margin = round(0.05 * SAMPLE_RATE)
        for utterance in run.reference:
            spoken = SPOKEN_S.get(utterance["source_clip"], utterance["end_s"] - utterance["start_s"])
            first = round(utterance["start_s"] * SAMPLE_RATE)
            last = first + round(spoken * SAMPLE_RATE)
            inner = slice(first + margin, last - margin)
            left_out = run.audio[inner][~covered[inner]]
            loudest = levels_dbfs(left_out).max() if len(left_out) >= 160 else -100.0
            assert loudest < PAUSE_DBFS, (run.name, utterance["start_s"], len(left_out) / SAMPLE_RATE, loudest)


def test_phone_call_speech_starts_after_the_dial_tone_and_every_turn_is_found(audio_dir):
    audio = load_audio(audio_dir / "conv/pyannote_phone_call.wav")
    turns = json.loads((audio_dir / "conv/pyannote_phone_call.segments.json").read_text())["segments"]
    for settings in (VadSettings(), VadSettings(min_silence_s=0.25, speech_pad_s=0.0)):
        events = detect(audio, settings)
        pairs = segments(events)
        print(f"phone call {settings}: {[(round(s, 2), round(e, 2)) for s, e in pairs]}")
        assert pairs and pairs[0][0] >= 6.0
        assert all(e.time >= 6.0 for e in events if isinstance(e, SpeechStart))
        for turn in turns:
            assert any(s < turn["end_s"] and turn["start_s"] < e for s, e in pairs), turn
        first_error = abs(pairs[0][0] + settings.speech_pad_s - turns[0]["start_s"])
        assert first_error <= TOLERANCE_S


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"neg_threshold": 0.0}, "neg_threshold"),
        ({"neg_threshold": 1.5}, "neg_threshold"),
        ({"threshold": 0.4, "neg_threshold": 0.6}, "neg_threshold"),
        ({"min_silence_s": -0.1}, "min_silence_s"),
        ({"speech_pad_s": -1.0}, "speech_pad_s"),
        ({"min_speech_s": float("inf")}, "min_speech_s"),
    ],
)
def test_settings_say_which_field_is_wrong(changes, field):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        VadSettings(**changes)


def test_default_silence_threshold():
    assert VadSettings().silence_threshold == pytest.approx(0.35)
    assert VadSettings(threshold=0.1).silence_threshold == pytest.approx(0.01)
    assert VadSettings(neg_threshold=0.2).silence_threshold == 0.2
    assert VadSettings(min_silence_s=0, speech_pad_s=0, min_speech_s=0).min_speech_s == 0


def test_finish_ends_the_segment_in_progress(audio_dir):
    audio = load_audio(audio_dir / "en/ljspeech_LJ001-0001.wav")[: 3 * SAMPLE_RATE + 100]  # cut mid-sentence
    detector = VoiceActivityDetector()
    events = detector.feed(audio)
    assert [type(e) for e in events] == [SpeechStart] and detector.in_speech
    closing = detector.finish()
    assert [type(e) for e in closing] == [SpeechEnd] and not detector.in_speech
    assert closing[0].detected_at == detector.fed_s == len(audio) / SAMPLE_RATE
    assert closing[0].time == detector.fed_s  # the last frame is speech and the pad stops at the stream end
    assert detector.finish() == []
    with pytest.raises(RuntimeError, match="reset"):
        detector.feed(audio[:10])

    detector.reset()
    assert detector.fed_s == 0 and not detector.in_speech
    assert detector.feed(audio) + detector.finish() == events + closing  # time counts from 0 again


def test_empty_feeds_silence_and_int16_are_fine(audio_dir):
    detector = VoiceActivityDetector()
    assert detector.feed(np.zeros(0, np.float32)) == []
    assert detector.feed([]) == []
    assert detector.feed(np.zeros(0, np.int16)) == []
    assert detector.fed_s == 0.0 and len(detector.last_probabilities) == 0
    assert detector.feed(np.zeros(2 * SAMPLE_RATE, np.int16)) == []
    assert detector.fed_s == 2.0 and not detector.in_speech
    assert detector.finish() == []
    assert VoiceActivityDetector().finish() == []  # nothing fed at all

    audio = load_audio(audio_dir / "en/jfk_inaugural_1961.wav")
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    assert detect(pcm) == detect(pcm.astype(np.float32) / 32768.0)
