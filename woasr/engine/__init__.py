"""Where model calls run: the inference engine between sessions and the model.

Sessions hand the engine self-contained :class:`~woasr.core.records.TranscriptionRequest`
objects and await an :class:`InferenceResult`; they never touch the model. The
local engine runs them on this process's model; a remote one (Triton) can take
its place behind the same interface.
"""

from woasr.engine.base import InferenceEngine, InferenceResult
from woasr.engine.local import LocalEngine

__all__ = ["InferenceEngine", "InferenceResult", "LocalEngine"]
