"""Reading audio files into the core's format (16 kHz mono float32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from woasr.core.audio import SAMPLE_RATE, FloatAudio


def resample(audio: np.ndarray, rate: int) -> FloatAudio:
    """Mono float audio at ``rate`` Hz converted to 16 kHz."""
    if rate == SAMPLE_RATE:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def load_audio(path: str | Path) -> FloatAudio:
    """Any file soundfile reads, any rate or channel count, as 16 kHz mono float32."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(data.mean(axis=1), rate)
