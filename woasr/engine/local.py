"""The local inference engine: this process's model, a bounded number of calls at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from woasr.core.processor import ASRBackend
from woasr.core.records import TranscriptionRequest
from woasr.engine.base import InferenceResult

T = TypeVar("T")


class LocalEngine:
    """Runs model calls in a small thread pool shared by all sessions.

    One loaded model serves every session; ``workers`` bounds how many
    inference calls run at once (CTranslate2 releases the GIL while it
    computes, so the event loop keeps moving bytes meanwhile). Calls wait
    their turn first in, first out; a session has at most one call out at a
    time, so sessions take turns.
    """

    def __init__(self, asr: Callable[[], ASRBackend | None], workers: int = 1) -> None:
        self._asr = asr
        """The loaded model, once it is (the engine exists before the model is loaded)."""
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="woasr-infer")

    async def transcribe(self, request: TranscriptionRequest) -> InferenceResult:
        asr = self._asr()
        if asr is None:
            raise RuntimeError("transcribe() before the model is loaded")
        queued = time.perf_counter()

        def call() -> InferenceResult:
            started = time.perf_counter()
            transcription = asr.transcribe(request.audio, request.prompt, request.language)
            return InferenceResult(transcription, started - queued, time.perf_counter() - started)

        return await self.run(call)

    async def run(self, job: Callable[[], T]) -> T:
        """Any blocking job on the model's workers (e.g. a whole-file transcription)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, job)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
