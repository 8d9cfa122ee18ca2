"""Shared fixtures: the shared audio folder and one real tiny.en model per test run."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT.parent / "shared" / "audio"


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    if not (AUDIO / "manifest.tsv").is_file():
        pytest.fail(f"shared test audio not found at {AUDIO} (clone next to ../shared)")
    return AUDIO


@pytest.fixture(scope="session")
def manifest(audio_dir):
    from woasr.tools.manifest import read_manifest

    return {row.name: row for row in read_manifest(audio_dir / "manifest.tsv")}


@pytest.fixture(scope="session")
def tiny_en():
    from woasr.asr.faster_whisper_backend import FasterWhisperASR

    return FasterWhisperASR("tiny.en", "en")
