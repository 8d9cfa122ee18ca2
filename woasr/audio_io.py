"""Reading audio files into the core's format (16 kHz mono float32)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from woasr.config import UserInputError
from woasr.core.audio import SAMPLE_RATE, FloatAudio


class AudioFileError(UserInputError, RuntimeError):
    """An audio file that cannot be read (missing, a folder, not permitted, not audio), with its path.

    A :class:`RuntimeError` too, as soundfile's own errors are, so callers that caught
    those still catch it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot read audio {str(path)!r}: {reason}")
        self.path = str(path)
        self.reason = reason


@contextmanager
def _reading(path: str | Path) -> Iterator[None]:
    """Turns the ways reading ``path`` fails into one :class:`AudioFileError` naming it."""
    try:
        # Open it once ourselves: the OS's reason ("No such file or directory", "Is a directory")
        # rather than libsndfile's "System error".
        with open(path, "rb"):
            pass
        yield
    except OSError as exc:
        raise AudioFileError(path, exc.strerror or str(exc)) from exc
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:  # not audio; soxr refuses the rate
        raise AudioFileError(path, str(getattr(exc, "error_string", None) or exc).rstrip(".")) from exc


def resample(audio: np.ndarray, rate: int) -> FloatAudio:
    """Mono float audio at ``rate`` Hz converted to 16 kHz."""
    if rate == SAMPLE_RATE:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def load_audio(path: str | Path) -> FloatAudio:
    """Any file soundfile reads, any rate or channel count, as 16 kHz mono float32.

    Raises :class:`AudioFileError` (the path and why) for a file that cannot be read as audio.
    """
    with _reading(path):
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return resample(data.mean(axis=1), rate)


def check_audio(path: str | Path) -> None:
    """Raise :class:`AudioFileError` now if ``path`` is not readable audio (reads only its header).

    For commands that would otherwise find out after loading a model or connecting.
    """
    with _reading(path):
        sf.info(str(path))
