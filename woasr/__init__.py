"""World-of-ASR: real-time streaming speech recognition on Whisper.

The streaming core (:mod:`woasr.core`) is sans-I/O: it takes audio samples and
returns committed and partial words. Backends (:mod:`woasr.asr`) run the model;
tools (:mod:`woasr.tools`) and transports are thin layers on top.
"""

import os

# CTranslate2 gives each model call the threads it is told (``--threads``); left at
# OpenMP's default, other parallel regions of its CPU kernels also run on every core,
# measured at 60-90% more CPU time per update for under 10% less wall time, taken from
# the other workers' cores (docs/eval.md, "Cheaper updates"). Must be set before
# CTranslate2 is loaded; a value set by the user wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
