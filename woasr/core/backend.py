"""The backend contract: what the core needs from a speech model, beside the records it returns.

An adapter (:mod:`woasr.asr`) implements it for one library; the processor,
the engines and the tools only ever see this protocol.
"""

from __future__ import annotations

from typing import Protocol

from woasr.core.audio import FloatAudio
from woasr.core.records import Transcription


class ASRBackend(Protocol):
    """Words of one audio buffer, with times relative to its start."""

    def transcribe(self, audio: FloatAudio, prompt: str, language: str | None, prefix: str = "") -> Transcription:
        """``prompt``: text before the buffer (context); ``language``: a code, or None to detect it;
        ``prefix``: committed text the buffer begins with, which the result may leave out
        (:attr:`Transcription.after_prefix`)."""
        ...
