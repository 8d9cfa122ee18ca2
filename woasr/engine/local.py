"""The local inference engine: this process's model, a fair queue, a bounded number of calls at once."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from woasr.core.backend import ASRBackend
from woasr.core.records import TranscriptionRequest
from woasr.engine.admission import Admission
from woasr.engine.base import InferenceResult

T = TypeVar("T")

LIVE = 0
"""Queue rank of streaming calls (:meth:`LocalEngine.transcribe`): a live stream waits for nothing else."""
FILE = 1
"""Queue rank of whole-file jobs (:meth:`LocalEngine.run`): they wait until no streaming call does."""


class LocalEngine:
    """Runs model calls for every session on one loaded model, ``workers`` at a time.

    Calls that find every worker busy wait in a queue ordered by ``since``:
    the time the oldest audio of the call arrived (earliest deadline first,
    all sessions having the same latency target). A session has at most one
    call out (its runner awaits it), so a long stream cannot starve a short
    one: whoever has waited longest for the model goes next. Whole-file jobs
    (:meth:`run`, the REST endpoint's) rank after every waiting streaming call:
    a live stream is late the moment it waits, a file's client only waits
    longer. A running job is not interrupted. CTranslate2 releases the GIL
    while it computes, so the event loop keeps moving bytes.
    """

    def __init__(
        self, asr: Callable[[], ASRBackend | None], workers: int = 1, admission: Admission | None = None
    ) -> None:
        self._asr = asr
        """The loaded model, once it is (the engine exists before the model is loaded)."""
        self.workers = workers
        self.admission = admission or Admission(workers=workers)
        """Fed the time of every streaming call; decides whether one more session fits."""
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="woasr-infer")
        self._free = workers
        self._waiting: list[tuple[int, float, int, asyncio.Future[None]]] = []
        """(rank, since, arrival order, turn): streaming calls first, then the oldest audio."""
        self._order = itertools.count()

    @property
    def queued(self) -> int:
        """Calls waiting for a worker."""
        return sum(not future.cancelled() for *_, future in self._waiting)

    async def transcribe(self, request: TranscriptionRequest, *, since: float | None = None) -> InferenceResult:
        """Transcribe on a worker, after the calls whose audio waited longer (``since``, loop time)."""
        asr = self._asr()
        if asr is None:
            raise RuntimeError("transcribe() before the model is loaded")
        queued = time.perf_counter()

        def call() -> InferenceResult:
            started = time.perf_counter()
            transcription = asr.transcribe(request.audio, request.prompt, request.language, request.prefix)
            return InferenceResult(transcription, started - queued, time.perf_counter() - started)

        result = await self._run(call, since, LIVE)
        self.admission.observe(result.inference_s)
        return result

    async def run(self, job: Callable[[], T], *, since: float | None = None) -> T:
        """A blocking whole-file job on the model's workers, after every waiting streaming call."""
        return await self._run(job, since, FILE)

    async def _run(self, job: Callable[[], T], since: float | None, rank: int) -> T:
        """``job`` on a worker once its turn comes (``rank``, then ``since``: loop time, default now)."""
        loop = asyncio.get_running_loop()
        await self._acquire(rank, loop.time() if since is None else since)
        running = loop.run_in_executor(self._pool, job)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            if not running.done():
                # The caller left (its peer is gone), but the worker thread computes on: its slot
                # is handed on only when the job really ends, so no more than ``workers`` run.
                running.add_done_callback(lambda _: self._release())
                running = None
            raise
        finally:
            if running is not None:
                self._release()

    async def _acquire(self, rank: int, since: float) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (rank, since, next(self._order), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # the worker was handed to us just as we left: pass it on
            raise

    def _release(self) -> None:
        """Hand the worker to the next waiting call, or free it."""
        while self._waiting:
            *_, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
