"""The inference engine interface: an async ``transcribe(request) -> result``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from woasr.core.records import Transcription, TranscriptionRequest


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """A transcription and what it cost: time waiting for a worker, time in the model."""

    transcription: Transcription
    queued_s: float
    inference_s: float


class InferenceEngine(Protocol):
    """Runs model calls for many sessions on shared model capacity."""

    async def transcribe(self, request: TranscriptionRequest, *, since: float | None = None) -> InferenceResult:
        """The model call. ``since``: when the oldest audio of the request arrived (event-loop
        time), for engines that serve the longest-waiting audio first."""
        ...

    def close(self) -> None: ...
