"""``woasr capture`` on real speech: the sans-I/O segmenter, run(), and the seed entry point in real processes."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from woasr.audio_io import load_audio
from woasr.core.audio import SAMPLE_RATE
from woasr.tools.capture import INDEX, CaptureSettings, CapturedSegment, SegmentCapture, add_arguments, run

ROOT = Path(__file__).resolve().parent.parent
ENTRY = [sys.executable, str(ROOT / "streaming_audio_save.py")]
"""The seed's entry point: ``woasr capture`` through woasr.cli."""
MIXED = "long/mixed_en_long"
ROLL_S = 0.3
TOLERANCE_S = 0.3


def reference(audio_dir: Path, name: str) -> list[dict]:
    return json.loads((audio_dir / f"{name}.segments.json").read_text())["segments"]


def capture_all(audio: np.ndarray, settings: CaptureSettings | None = None,
                block: int = 16000) -> list[CapturedSegment]:
    capture = SegmentCapture(settings)
    segments = []
    for at in range(0, len(audio), block):
        segments += capture.feed(audio[at : at + block])
    return segments + capture.finish()


def boundary_hits(starts, ends, utterances) -> tuple[float, float]:
    """Fraction of reference starts (ends) with a segment start (end) within the tolerance plus the roll."""
    starts, ends = np.array(starts), np.array(ends)
    near_start = [np.abs(starts - u["start_s"]).min() <= TOLERANCE_S + ROLL_S for u in utterances]
    near_end = [np.abs(ends - u["end_s"]).min() <= TOLERANCE_S + ROLL_S for u in utterances]
    return float(np.mean(near_start)), float(np.mean(near_end))


def read_index(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / INDEX).read_text(encoding="utf-8").splitlines()]


def check_files(out: Path, records: list[dict]) -> None:
    """Every listed WAV is complete: 16 kHz mono PCM16, as long as its index line says."""
    for record in records:
        info = sf.info(str(out / record["file"]))
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert info.frames / SAMPLE_RATE == pytest.approx(record["duration_s"], abs=0.001)
        assert record["end_s"] - record["start_s"] == pytest.approx(record["duration_s"], abs=0.002)
    assert not list(out.glob(".*.part"))


def three_utterances(audio_dir: Path, path: Path) -> list[str]:
    """Three short clips with a second of silence around each, as one WAV; their expected words."""
    clips = [("en/ljspeech_LJ001-0002.wav", "comparatively modern"),
             ("en/librispeech_1089-134691-0000.wav", "wait longer"),
             ("en/ljspeech_LJ001-0008.wav", "never surpassed")]
    silence = np.zeros(SAMPLE_RATE, np.float32)
    parts = [silence]
    for clip, _ in clips:
        parts += [load_audio(audio_dir / clip), silence]
    sf.write(str(path), np.concatenate(parts), SAMPLE_RATE, subtype="PCM_16")
    return [words for _, words in clips]


# The segmenter (sans-I/O)


def test_segments_follow_the_utterances_of_the_long_file(audio_dir):
    audio = load_audio(audio_dir / f"{MIXED}.wav")
    utterances = reference(audio_dir, MIXED)
    # 0.3 s: shorter than every gap of the file, so each gap ends a segment.
    segments = capture_all(audio, CaptureSettings(min_silence_s=0.3))
    # Measured: 55 segments for 29 utterances (the rest are pauses of 0.3 s or more inside
    # them, e.g. JFK's), every boundary within 0.31 s of the reference + roll.
    assert len(utterances) <= len(segments) <= 2 * len(utterances)
    assert boundary_hits([s.start_s for s in segments], [s.end_s for s in segments], utterances) == (1.0, 1.0)
    previous_end = 0.0
    for segment in segments:
        assert previous_end <= segment.start_s < segment.end_s
        assert segment.duration_s == pytest.approx(segment.end_s - segment.start_s, abs=1e-9)
        assert 0.5 <= segment.speech_s <= segment.duration_s
        start = round(segment.start_s * SAMPLE_RATE)
        assert np.array_equal(segment.audio, audio[start : start + len(segment.audio)])
        previous_end = segment.end_s
    # The blocks the stream comes in change nothing.
    other = capture_all(audio, CaptureSettings(min_silence_s=0.3), block=1234)
    assert [(s.start_s, s.end_s, s.speech_s) for s in other] == [(s.start_s, s.end_s, s.speech_s) for s in segments]


def test_long_segments_are_split_and_short_speech_is_dropped(audio_dir):
    audio = load_audio(audio_dir / "long/ljspeech_en_long.wav")[: 60 * SAMPLE_RATE]
    whole = capture_all(audio)
    split = capture_all(audio, CaptureSettings(max_seconds=4.0), block=3000)
    assert max(s.duration_s for s in whole) > 8
    assert all(s.duration_s <= 4.0 + 1e-9 for s in split)
    covered = [(s.start_s, s.end_s) for s in whole]
    for piece in split:  # each piece lies in one unsplit segment, and begins at its start or 4 s on
        parent = next((a, b) for a, b in covered if a <= piece.start_s and piece.end_s <= b + 1e-9)
        offset = piece.start_s - parent[0]
        assert offset == pytest.approx(round(offset / 4.0) * 4.0, abs=1e-6)

    strict = capture_all(audio, CaptureSettings(min_seconds=3.0))
    assert 0 < len(strict) < len(whole)
    assert all(s.speech_s >= 3.0 for s in strict)
    assert {(s.start_s, s.end_s) for s in strict} <= set(covered)


def test_finish_returns_the_segment_in_progress(audio_dir):
    audio = load_audio(audio_dir / "en/ljspeech_LJ001-0001.wav")[: 4 * SAMPLE_RATE]  # cut mid-sentence
    capture = SegmentCapture()
    assert capture.feed(audio) == [] and capture.in_segment
    (segment,) = capture.finish()
    assert segment.end_s == pytest.approx(4.0) and segment.start_s < 0.5
    assert capture.finish() == []
    with pytest.raises(RuntimeError):
        capture.feed(audio)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"pre_roll_s": -1}, "pre_roll_s"), ({"min_silence_s": float("nan")}, "min_silence_s"),
     ({"max_seconds": 0.4}, "max_seconds"), ({"threshold": 1.0}, "threshold")],
)
def test_settings_say_which_field_is_wrong(changes, field):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        CaptureSettings(**changes)


# run() in this process


def capture_args(out: Path, *options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--out", str(out), *options])


def test_run_writes_wavs_and_an_index_and_appends_to_it(audio_dir, tmp_path):
    source = tmp_path / "three.wav"
    three_utterances(audio_dir, source)
    out = tmp_path / "out"
    assert run(capture_args(out, "--file", str(source))) == 0
    first = read_index(out)
    assert [r["source"] for r in first] == [str(source)] * 3
    assert [r["start_s"] for r in first] == sorted(r["start_s"] for r in first)
    check_files(out, first)

    assert run(capture_args(out, "--file", str(source))) == 0  # a second run appends, numbering goes on
    records = read_index(out)
    assert records[:3] == first and len(records) == 6
    assert sorted(r["file"] for r in records) == [r["file"] for r in records]
    assert records[3]["file"].startswith("seg_000004_")
    check_files(out, records)
    assert run(capture_args(out, "--file", str(source), "--max-seconds", "0.1")) == 2  # bad options
    assert run(capture_args(out, "--file", str(tmp_path / "missing.wav"))) == 1
    assert read_index(out) == records


# The seed entry point in real processes (needs the `capture` subcommand of woasr.cli)


@pytest.fixture(scope="module")
def file_capture(audio_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("file_capture")
    done = subprocess.run([*ENTRY, "--file", str(audio_dir / f"{MIXED}.wav"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def test_file_capture_through_the_entry_point(audio_dir, file_capture):
    records = read_index(file_capture)
    utterances = reference(audio_dir, MIXED)
    # Measured with the defaults (--min-silence 0.5): 32 segments for 29 utterances; 86 % of
    # the boundaries within 0.3 s + roll, the rest are gaps under 0.5 s that join two utterances.
    assert 0.8 * len(utterances) <= len(records) <= 1.4 * len(utterances)
    starts, ends = boundary_hits([r["start_s"] for r in records], [r["end_s"] for r in records], utterances)
    assert starts >= 0.8 and ends >= 0.8
    check_files(file_capture, records)


def test_stdin_gives_the_same_segments_as_the_file(audio_dir, file_capture, tmp_path):
    pcm, rate = sf.read(str(audio_dir / f"{MIXED}.wav"), dtype="int16")
    assert rate == SAMPLE_RATE
    done = subprocess.run([*ENTRY, "--stdin", "--out", str(tmp_path)], input=pcm.astype("<i2").tobytes(),
                          cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    from_file, from_stdin = read_index(file_capture), read_index(tmp_path)
    assert {r["source"] for r in from_stdin} == {"stdin"}
    def without_source(records: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "source"} for r in records]

    assert without_source(from_stdin) == without_source(from_file)
    for record in from_stdin[:5]:
        assert np.array_equal(sf.read(str(tmp_path / record["file"]))[0],
                              sf.read(str(file_capture / record["file"]))[0])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_utterance_writes_it_and_leaves_a_valid_index(audio_dir, tmp_path, signum):
    first = load_audio(audio_dir / "en/ljspeech_LJ001-0002.wav")  # 1.9 s, then a pause
    second = load_audio(audio_dir / "en/ljspeech_LJ001-0001.wav")[: 4 * SAMPLE_RATE]  # stopped mid-sentence
    stream = np.concatenate([first, np.zeros(round(0.8 * SAMPLE_RATE), np.float32), second])
    pcm = (stream * 32767).astype("<i2").tobytes()
    process = subprocess.Popen([*ENTRY, "--stdin", "--out", str(tmp_path)], cwd=ROOT,
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        block = 2 * SAMPLE_RATE // 10
        for at in range(0, len(pcm), block):  # 0.1 s blocks at about 10x real time
            process.stdin.write(pcm[at : at + block])
            process.stdin.flush()
            time.sleep(0.01)
        time.sleep(1.5)  # read and processed; stdin stays open, as a live source would
        assert process.poll() is None
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode in (0, 128 + signum), stderr.decode()
    records = read_index(tmp_path)  # every line parses
    check_files(tmp_path, records)
    fed_s = len(stream) / SAMPLE_RATE
    assert len(records) == 2
    last = records[-1]
    assert last["start_s"] < len(first) / SAMPLE_RATE + 0.8 + 0.2  # it holds the interrupted sentence
    assert last["end_s"] == pytest.approx(fed_s, abs=0.35)


def test_transcribe_adds_each_segments_text(audio_dir, tmp_path):
    source = tmp_path / "three.wav"
    expected = three_utterances(audio_dir, source)
    done = subprocess.run([*ENTRY, "--file", str(source), "--out", str(tmp_path / "out"), "--transcribe"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = read_index(tmp_path / "out")
    assert len(records) == len(expected)
    for record, words in zip(records, expected, strict=True):
        text = record["text"].lower()
        assert all(word in text for word in words.split()), (record["text"], words)
