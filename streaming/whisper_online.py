"""Seed path of the streaming core: the seed's public names, from the ``woasr`` package.

    from streaming.whisper_online import FasterWhisperASR, OnlineASRProcessor
    from streaming.whisper_online import WhisperTimestampedASR  # needs woasr[timestamped]

No logic lives here (see woasr/core and woasr/asr).
"""

from woasr.asr.faster_whisper_backend import FasterWhisperASR
from woasr.asr.whisper_timestamped_backend import WhisperTimestampedASR
from woasr.core.backend import ASRBackend
from woasr.core.hypothesis import HypothesisBuffer
from woasr.core.processor import OnlineASRProcessor

__all__ = ["ASRBackend", "FasterWhisperASR", "HypothesisBuffer", "OnlineASRProcessor", "WhisperTimestampedASR"]
