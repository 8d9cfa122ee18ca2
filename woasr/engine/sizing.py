"""How many model calls run at once, and on how many threads each, when the user does not say.

Measured on this project's 2-core CPU machine (tiny.en int8, docs/eval.md,
``benchmarks/batching.py``): one CTranslate2 call on one thread is *faster*
than the same call spread over two (8 s window: 145 ms vs 460-500 ms; 15 s:
0.39 s vs 0.96 s), and two one-thread calls side by side take no longer than
one. So on a CPU the server runs one worker per core, each on one thread:
throughput is about six times that of one call on every core. Batching
several sessions' windows into one call did not beat that (one thread, batch
of 8: 181 ms per window, vs 146 ms one by one), so there is no batching.

On a GPU one device runs the calls; two workers are meant to let one
session's call overlap another's host-side work (features, word alignment).
That was not measured here (no GPU on this project's machines).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerLayout:
    """``workers`` model calls at once, each on ``threads`` CPU threads (CTranslate2 ``intra_threads``)."""

    workers: int
    threads: int


def worker_layout(device: str = "cpu", workers: int = 0, threads: int = 0, cores: int | None = None) -> WorkerLayout:
    """The layout for ``device``: 0 for ``workers`` or ``threads`` means "choose from the core count".

    CPU: one worker per core, and the cores shared out among the workers
    (at least one thread each). GPU: two workers; threads are left to
    CTranslate2 (0).
    """
    cores = cores or os.cpu_count() or 1
    if device != "cpu":
        return WorkerLayout(workers or 2, threads)
    workers = workers or cores
    return WorkerLayout(workers, threads or max(1, cores // workers))
