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
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

FRONTEND_ENV = "WOASR_FRONTEND"
_SESSION_ID = re.compile(r"^f(\d+)\.")


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
    children = []
    for index in range(count):
        env = {**os.environ, FRONTEND_ENV: f"{index}/{count}"}
        children.append(subprocess.Popen([sys.executable, "-m", "woasr.cli", *argv], env=env))
    log.info("front-ends: %d processes (pids %s) share the ports", count, " ".join(str(c.pid) for c in children))

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    log.info("front-ends stopped (exit codes %s)", " ".join(map(str, codes)))
    return max(codes, key=abs)
