"""Helpers to run real servers and clients as subprocesses on free ports."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WOASR = [sys.executable, "-m", "woasr.cli"]


def parse_lines(text: str) -> list[tuple[int, int, str]]:
    """``<beg_ms> <end_ms> <text>`` lines (the TCP server's and the clients' output) as tuples."""
    parsed = []
    for line in text.splitlines():
        beg, end, words = line.split(" ", 2)
        parsed.append((int(beg), int(end), words))
    return parsed


def line_text(text: str) -> str:
    """The words of ``<beg_ms> <end_ms> <text>`` lines, without their times."""
    return " ".join(words for _, _, words in parse_lines(text))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``woasr serve`` (or a launcher script) in a subprocess; waits until its model is ready.

    ``port`` is the TCP port and ``ws_port`` the WebSocket/HTTP port (None when disabled).
    """

    def __init__(self, args: list[str], env: dict[str, str] | None = None, command: list[str] | None = None,
                 ready: str = "ready model=", copies: int = 1):
        """``ready``: the line that says the process serves (``copies`` times: one per front-end process)."""
        if command is None and "--ws-port" not in args:
            args = [*args, "--ws-port", "0"]  # tests that want WebSocket ask for a free port
        if command is None and "--max-chunk" not in args and "--max-sessions" not in args:
            # Measured-capacity admission would refuse some of the concurrent test clients on a
            # loaded machine; the tests of admission set their own limits.
            args = [*args, "--max-chunk", "1000"]
            if "--latency-target" not in args:
                args = [*args, "--latency-target", "0"]
        self.command = (command or [*WOASR, "serve"]) + args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.port: int | None = None
        self.ws_port: int | None = None
        self.ready, self.copies = ready, copies

    def start(self, timeout: float = 120.0) -> ServerProcess:
        assert self.proc is None, "started twice (a `with` on a started server starts another one)"
        self.proc = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._drain = threading.Thread(target=self._read_output, daemon=True)
        self._drain.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.text.count(self.ready) >= self.copies:
                if match := re.search(r"listening tcp://[^:]+:(\d+)", self.text):
                    self.port = int(match.group(1))
                if match := re.search(r"listening ws://[^:]+:(\d+)", self.text):
                    self.ws_port = int(match.group(1))
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not start:\n" + self.text)

    def _read_output(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def text(self) -> str:
        return "".join(self.output)

    def stop(self) -> str:
        """Stop the server; return everything it printed."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._drain.join(timeout=5)
        return self.text

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ws_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
