"""World-of-ASR: real-time streaming speech recognition on Whisper.

The streaming core (:mod:`woasr.core`) is sans-I/O: it takes audio samples and
returns committed and partial words. Backends (:mod:`woasr.asr`) run the model;
tools (:mod:`woasr.tools`) and transports are thin layers on top.
"""

from woasr.core.hypothesis import HypothesisBuffer
from woasr.core.processor import OnlineASRProcessor
from woasr.core.records import Segment, Transcription, Update, Word

__all__ = [
    "HypothesisBuffer",
    "OnlineASRProcessor",
    "Segment",
    "Transcription",
    "Update",
    "Word",
]

__version__ = "0.1.0"
