"""``woasr bench``: concurrent paced real-time streams against a server, measured.

For each stream count N it runs N clients at once over real sockets, each
streaming its own playlist of real clips in real time (100 ms blocks), and
reports committed latency, WER, server CPU and RSS. The clients speak TCP or
WebSocket through the same transports as ``woasr client``
(:mod:`woasr.clients.tcp_client`, :mod:`woasr.clients.ws_client`), one
connection each and no reconnect. WebSocket clients keep to the seed contract
(binary frames, ``{"type":"close"}`` at the end); with ``partials`` they first
send ``{"type":"config","partials":true}``.

Committed latency is measured per final (TCP: per line), at the client:
receive time minus the send time of the audio block holding the final's
``end_ms``. (The last word of a line waits least; ``woasr eval`` measures
per word.) Partial latency is the same per non-empty partial message, on
its ``end_ms``.

A server the bench starts itself gets a free port for the transport under
test and the other transport off; the bench waits for its ``ready model=``
line, since the sockets open before the model has loaded.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
from tqdm import tqdm

from woasr.audio_io import load_audio
from woasr.clients.reconnect import Listener, Transport
from woasr.clients.sources import paced_blocks, to_pcm16
from woasr.clients.tcp_client import TcpTransport
from woasr.clients.ws_client import WsTransport
from woasr.core.audio import SAMPLE_RATE
from woasr.tools.evaluate import ManifestRow, percentiles_ms
from woasr.tools.textnorm import ErrorCount, count_errors

log = logging.getLogger(__name__)

BLOCK_S = 0.1
GAP_S = 0.5


@dataclass(frozen=True, slots=True)
class Playlist:
    """One client's audio: consecutive clips joined with short silences, and its reference."""

    pcm: bytes
    reference: str
    language: str

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE


def playlists(rows: list[ManifestRow], count: int, seconds: float) -> list[Playlist]:
    """``count`` distinct playlists of about ``seconds`` each, cycling through the clips."""
    clips = itertools.cycle(rows)
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    result = []
    for _ in range(count):
        audio: list[np.ndarray] = []
        texts: list[str] = []
        while sum(len(a) for a in audio) < seconds * SAMPLE_RATE:
            row = next(clips)
            audio += [load_audio(row.path), gap]
            texts.append(row.reference)
        result.append(Playlist(to_pcm16(np.concatenate(audio)), " ".join(texts), rows[0].language))
    return result


@dataclass(slots=True)
class ClientResult:
    latencies: list[float] = field(default_factory=list)
    partial_latencies: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    refused: bool = False
    error: str | None = None


class Timings:
    """A :class:`~woasr.clients.reconnect.Listener` that times each message against the audio it covers."""

    def __init__(self, result: ClientResult) -> None:
        self.result = result
        self.sent_ends: list[int] = []
        """ms of audio sent so far, per block."""
        self.sent_at: list[float] = []
        self.clock = asyncio.get_running_loop().time

    def sent(self, total_bytes: int) -> None:
        self.sent_ends.append(round(total_bytes / 2 / SAMPLE_RATE * 1000))
        self.sent_at.append(self.clock())

    def _latency(self, end_ms: int) -> float:
        """Now minus the send time of the block holding ``end_ms``."""
        index = min(bisect.bisect_left(self.sent_ends, end_ms), len(self.sent_at) - 1)
        return self.clock() - self.sent_at[index]

    def final(self, beg_ms: int, end_ms: int, text: str) -> None:
        self.result.latencies.append(self._latency(end_ms))
        self.result.text.append(text)

    def partial(self, text: str, beg_ms: int, end_ms: int) -> None:
        if text:  # an empty partial only clears the display; it holds no new audio
            self.result.partial_latencies.append(self._latency(end_ms))

    def error(self, code: str, message: str) -> None:
        said = f"{code} {message}"
        self.result.refused = self.result.refused or "busy" in said or "capacity" in said
        self.result.error = said


async def run_client(server: ServerUnderTest, playlist: Playlist) -> ClientResult:
    """Stream one playlist in real time over the server's transport; time every final and partial.

    One connection, no reconnect: a bench measures the server, a lost
    connection is reported as an error.
    """
    result = ClientResult()
    timings = Timings(result)
    try:
        connection = await server.transport(timings).connect()
    except OSError as exc:
        result.refused, result.error = True, str(exc)
        return result
    receiving = asyncio.create_task(connection.receive())
    sent = 0
    try:
        async for block in paced_blocks(playlist.pcm, BLOCK_S):
            if receiving.done():
                break  # the server closed early: its reason is the receive's
            await connection.send(sent, block)
            sent += len(block)
            timings.sent(sent)
        else:
            await connection.end()
        await receiving
    except OSError as exc:
        result.error = str(exc)
    finally:
        receiving.cancel()
        await connection.close()
    return result


class ServerUnderTest:
    """A ``woasr serve`` subprocess on a free port, or an already running server.

    ``url`` is ``tcp://HOST:PORT`` (or ``HOST:PORT``) or ``ws://HOST:PORT/PATH``;
    without one, a server is started for ``transport`` with the other one off.
    """

    def __init__(self, url: str | None, serve_args: list[str], transport: str = "tcp",
                 partials: bool = False) -> None:
        self.url = url
        self.serve_args = serve_args
        self.kind = transport
        self.partials = partials
        self.proc: subprocess.Popen[str] | None = None
        self.host, self.port = "127.0.0.1", 0

    def __enter__(self) -> ServerUnderTest:
        if self.url:
            self._parse_url(self.url)
            return self
        self.port = free_port()
        ports = ["--tcp-port", str(self.port), "--ws-port", "0"]
        if self.kind == "ws":
            ports = ["--ws-port", str(self.port), "--tcp-port", "0"]
            self.url = f"ws://{self.host}:{self.port}/"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "woasr.cli", "serve", *ports, *self.serve_args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        for line in self.proc.stdout:
            if line.startswith("ready model="):  # the sockets open first, the model loads after
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # never let the pipe fill
                return self
        raise SystemExit("the server under test did not start")

    def _parse_url(self, url: str) -> None:
        if url.startswith(("ws://", "wss://")):
            self.kind = "ws"
            return
        match = re.fullmatch(r"(?:tcp://)?([^:/]+):(\d+)/?", url)
        if not match:
            raise SystemExit(f"--url must look like tcp://HOST:PORT or ws://HOST:PORT/, got {url!r}")
        self.kind = "tcp"
        self.host, self.port = match.group(1), int(match.group(2))

    def transport(self, listener: Listener) -> Transport:
        if self.kind == "ws":
            assert self.url is not None
            return WsTransport(self.url, listener, {"partials": True} if self.partials else None)
        return TcpTransport(self.host, self.port, listener)

    @property
    def process(self) -> psutil.Process | None:
        return psutil.Process(self.proc.pid) if self.proc else None

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_streams(server: ServerUnderTest, lists: list[Playlist]) -> tuple[list[ClientResult], float, float]:
    """All clients at once; returns their results, server CPU % and peak RSS MB."""
    proc = server.process
    if proc:
        proc.cpu_percent(None)
    peak_rss = 0.0

    async def sample_rss() -> None:
        nonlocal peak_rss
        while proc:
            peak_rss = max(peak_rss, proc.memory_info().rss / 2**20)
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample_rss())
    results = await asyncio.gather(*(run_client(server, p) for p in lists))
    sampler.cancel()
    cpu = proc.cpu_percent(None) if proc else float("nan")
    return list(results), cpu, peak_rss


def bench(
    rows: list[ManifestRow], stream_counts: list[int], seconds: float, url: str | None, serve_args: list[str],
    progress: bool = True, transport: str = "tcp", partials: bool = False,
) -> dict[str, Any]:
    """Run every stream count; return the JSON-ready report.

    ``transport`` (tcp or ws) applies to a server the bench starts; a ``url``'s scheme wins.
    """
    runs = []
    with ServerUnderTest(url, serve_args, transport, partials) as server:
        if partials and server.kind != "ws":
            log.warning("TCP has no partials: --partials ignored")
            partials = server.partials = False
        for count in tqdm(stream_counts, desc="bench", disable=not progress, file=sys.stderr):
            lists = playlists(rows, count, seconds)
            results, cpu, rss = asyncio.run(run_streams(server, lists))
            errors = ErrorCount()
            for playlist, result in zip(lists, results):
                if not result.refused:
                    errors += count_errors(playlist.reference, " ".join(result.text), playlist.language)
            latencies = [x for r in results for x in r.latencies]
            runs.append({
                "streams": count,
                "latency_ms": percentiles_ms(latencies),
                "partial_latency_ms": percentiles_ms([x for r in results for x in r.partial_latencies],
                                                     ("p50", "p95")),
                "wer": round(errors.rate, 4),
                "refused": sum(r.refused for r in results),
                "cpu_percent": round(cpu, 1),
                "rss_mb": round(rss, 1),
                "audio_s_per_stream": round(lists[0].seconds, 1),
                "errors": [r.error for r in results if r.error],
            })
    under = [r["streams"] for r in runs if r["latency_ms"]["p95"] is not None and r["latency_ms"]["p95"] <= 2000
             and not r["refused"]]
    return {
        "transport": server.kind,
        "partials": partials,
        "server": url or "woasr serve " + " ".join(serve_args),
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "max_streams_p95_under_2s": max(under) if under else 0,
    }


def markdown_table(report: dict[str, Any]) -> str:
    lines = ["| streams | latency p50/p95/max ms | partial p50/p95 ms | WER | refused | server CPU % | server RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        lat, part = run["latency_ms"], run["partial_latency_ms"]
        lines.append(f"| {run['streams']} | {lat['p50']}/{lat['p95']}/{lat['max']} | {part['p50']}/{part['p95']} "
                     f"| {run['wer']:.2%} | {run['refused']} | {run['cpu_percent']} | {run['rss_mb']} |")
    lines.append(f"\nhighest stream count with committed p95 <= 2 s: {report['max_streams_p95_under_2s']}")
    return "\n".join(lines)
