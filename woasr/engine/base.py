"""The inference engine interface: everything a server asks of the place where model calls run.

The local engine (:mod:`woasr.engine.local`) runs calls on this process's
model; a remote one (Triton, several instances) implements the same protocol,
so the service, the session runner and the REST endpoint work with either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from woasr.core.records import Transcription, TranscriptionRequest
from woasr.engine.admission import Admission

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """A transcription and what it cost: time waiting for a worker, time in the model."""

    transcription: Transcription
    queued_s: float
    inference_s: float


class InferenceEngine(Protocol):
    """Runs model calls for many sessions on shared model capacity."""

    admission: Admission
    """Decides whether one more session fits; fed the engine's call times and the sessions' latencies.
    Whole-file jobs count as load while ``admission.job()`` is held (the REST endpoint holds it from
    admission to answer), whichever engine runs them."""

    async def transcribe(self, request: TranscriptionRequest, *, since: float | None = None) -> InferenceResult:
        """One streaming model call. ``since``: when the oldest audio of the request arrived
        (event-loop time), for engines that serve the longest-waiting audio first."""
        ...

    async def run(self, job: Callable[[], T], *, since: float | None = None) -> T:
        """A blocking whole-file job (a REST transcription) on the model's capacity, at lower
        priority than streaming: while any :meth:`transcribe` call waits, it waits too (a running
        job is not interrupted). A remote engine runs only the jobs it knows how to send."""
        ...

    def close(self) -> None:
        """Stop: cancel queued calls, release the workers or connections."""
        ...
