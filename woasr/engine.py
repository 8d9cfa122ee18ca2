"""Where model calls run: off the event loop, a bounded number at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class LocalEngine:
    """Runs blocking model jobs in a small thread pool shared by all sessions.

    One loaded model serves every session; ``workers`` bounds how many
    inference calls run at once (CTranslate2 releases the GIL while it
    computes, so the event loop keeps moving bytes meanwhile).
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="woasr-infer")

    async def run(self, job: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, job)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
