"""Several front-end processes on one port: ``woasr serve --processes N`` (seed: ``multi_triton_streaming.py``).

Every process listens on the same TCP and WebSocket ports with ``SO_REUSEPORT``, so the kernel
spreads new connections over them with no dispatcher in the path; each process runs its own
engine (the same Triton instances with ``--engine triton``, else a model replica of its own).
A session lives in the process that accepted it. A resume that the kernel hands to another
process is answered ``resume_failed`` with the address of the session's own process: each
front-end also listens on a WebSocket port of its own (``--ws-port`` + 1 + its index), and a
session id names its process (``f1.ws-3``). ``woasr client --ws`` and the page follow that
address; behind a load balancer, route by it or keep a client on one front-end (docs/deployment.md).

The supervisor starts the processes with the same arguments and ``WOASR_FRONTEND=i/N`` in their
environment, passes SIGINT/SIGTERM on (a second one too: they stop at once) and exits when all have.
A process that dies on its own after running a while is started again in its slot (its sessions
are lost, the others' are not); one that dies within ``STEADY_SECONDS`` of its start is taken for a
broken configuration, and the supervisor stops the rest and exits with its code.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

FRONTEND_ENV = "WOASR_FRONTEND"
_SESSION_ID = re.compile(r"^f(\d+)\.")
STEADY_SECONDS = 30.0
"""A front-end that dies sooner than this after its start is not started again."""


@dataclass(frozen=True, slots=True)
class Frontend:
    """This process's place among the front-ends that share the ports."""

    index: int
    count: int
    ws_port: int
    """The shared WebSocket port; process ``i`` also has ``ws_port + 1 + i`` of its own."""

    @classmethod
    def from_env(cls, ws_port: int) -> Frontend | None:
        """The slot ``WOASR_FRONTEND=i/N`` gives (None: a single process)."""
        value = os.environ.get(FRONTEND_ENV)
        if not value:
            return None
        index, _, count = value.partition("/")
        return cls(int(index), int(count), ws_port)

    @property
    def own_ws_port(self) -> int:
        return self.own_port(self.index)

    def own_port(self, index: int) -> int:
        return self.ws_port + 1 + index

    @property
    def session_prefix(self) -> str:
        return f"f{self.index}."

    def owner_of(self, session_id: str) -> int | None:
        """The index of the front-end a session id belongs to (None: not a front-end's id)."""
        match = _SESSION_ID.match(session_id)
        return int(match.group(1)) if match and int(match.group(1)) < self.count else None


def supervise(argv: Sequence[str], count: int) -> int:
    """Run ``woasr serve`` ``count`` times with ``argv`` until all have stopped; the worst exit code."""

    def spawn(index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, FRONTEND_ENV: f"{index}/{count}"}
        return subprocess.Popen([sys.executable, "-m", "woasr.cli", *argv], env=env)

    children = [spawn(index) for index in range(count)]
    started = [time.monotonic()] * count
    log.info("front-ends: %d processes (pids %s) share the ports", count, " ".join(str(c.pid) for c in children))
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    while not stopping:
        time.sleep(0.2)
        for index, child in enumerate(children):
            code = child.poll()
            if code is None or stopping:
                continue
            ran = time.monotonic() - started[index]
            if ran < STEADY_SECONDS:  # a broken configuration: starting it again would only loop
                log.error("front-end %d (pid %d) exited with code %d %.1f s after its start: stopping the others",
                          index, child.pid, code, ran)
                forward(signal.SIGTERM, None)
                break
            log.error("front-end %d (pid %d) exited with code %d after %.0f s; starting it again",
                      index, child.pid, code, ran)
            children[index], started[index] = spawn(index), time.monotonic()
            log.info("front-end %d: pid %d", index, children[index].pid)
    codes = [child.wait() for child in children]
    log.info("front-ends stopped (exit codes %s)", " ".join(map(str, codes)))
    return max(codes, key=abs)
