"""``woasr bench``: concurrent paced real-time streams against a server, measured.

For each stream count N it runs N clients at once over real sockets, each
streaming its own playlist of real clips in real time (100 ms blocks), and
reports committed latency, WER, server CPU and RSS.

Committed latency over TCP is measured per line, at the client: receive time
of a line minus the send time of the audio block holding the line's
``end_ms``. (The last word of a line waits least; ``woasr eval`` measures
per word.)
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
from tqdm import tqdm

from woasr.audio_io import load_audio
from woasr.clients.sources import paced_blocks, to_pcm16
from woasr.core.audio import SAMPLE_RATE
from woasr.tools.evaluate import ManifestRow, percentiles_ms
from woasr.tools.textnorm import ErrorCount, count_errors

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
    text: list[str] = field(default_factory=list)
    refused: bool = False
    error: str | None = None


async def run_tcp_client(host: str, port: int, playlist: Playlist) -> ClientResult:
    """Stream one playlist in real time; time every committed line."""
    result = ClientResult()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        result.refused, result.error = True, str(exc)
        return result
    sent_ends: list[int] = []  # ms of audio sent so far, per block
    sent_at: list[float] = []
    loop = asyncio.get_running_loop()

    async def receive() -> None:
        while line := await reader.readline():
            text = line.decode("utf-8", "replace").rstrip("\n")
            if text.startswith("ERROR"):
                result.refused = result.refused or "busy" in text or "capacity" in text
                result.error = text
                continue
            beg, end, words = text.split(" ", 2)
            index = min(bisect.bisect_left(sent_ends, int(end)), len(sent_at) - 1)
            result.latencies.append(loop.time() - sent_at[index])
            result.text.append(words)

    receiving = asyncio.create_task(receive())
    sent_bytes = 0
    try:
        async for block in paced_blocks(playlist.pcm, BLOCK_S):
            writer.write(block)
            await writer.drain()
            sent_bytes += len(block)
            sent_ends.append(round(sent_bytes / 2 / SAMPLE_RATE * 1000))
            sent_at.append(loop.time())
        writer.write_eof()
        await receiving
    except (ConnectionError, OSError) as exc:
        result.error = str(exc)
    finally:
        receiving.cancel()
        writer.close()
    return result


class ServerUnderTest:
    """A ``woasr serve`` subprocess on a free port, or an already running server."""

    def __init__(self, url: str | None, serve_args: list[str]) -> None:
        self.url = url
        self.serve_args = serve_args
        self.proc: subprocess.Popen[str] | None = None
        self.host, self.port = "127.0.0.1", 0

    def __enter__(self) -> ServerUnderTest:
        if self.url:
            match = re.fullmatch(r"(?:tcp://)?([^:/]+):(\d+)/?", self.url)
            if not match:
                raise SystemExit(f"--url must look like tcp://HOST:PORT, got {self.url!r}")
            self.host, self.port = match.group(1), int(match.group(2))
            return self
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "woasr.cli", "serve", "--tcp-port", str(self.port), *self.serve_args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        for line in self.proc.stdout:
            if "listening tcp://" in line:
                return self
        raise SystemExit("the server under test did not start")

    @property
    def process(self) -> psutil.Process | None:
        return psutil.Process(self.proc.pid) if self.proc else None

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)


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
    results = await asyncio.gather(*(run_tcp_client(server.host, server.port, p) for p in lists))
    sampler.cancel()
    cpu = proc.cpu_percent(None) if proc else float("nan")
    return list(results), cpu, peak_rss


def bench(
    rows: list[ManifestRow], stream_counts: list[int], seconds: float, url: str | None, serve_args: list[str],
    progress: bool = True,
) -> dict[str, Any]:
    """Run every stream count; return the JSON-ready report."""
    runs = []
    with ServerUnderTest(url, serve_args) as server:
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
                "partial_latency_ms": {"p50": None},
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
        "transport": "tcp",
        "server": url or "woasr serve " + " ".join(serve_args),
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "max_streams_p95_under_2s": max(under) if under else 0,
    }


def markdown_table(report: dict[str, Any]) -> str:
    lines = ["| streams | latency p50/p95/max ms | WER | refused | server CPU % | server RSS MB |",
             "|---|---|---|---|---|---|"]
    for run in report["runs"]:
        lat = run["latency_ms"]
        lines.append(f"| {run['streams']} | {lat['p50']}/{lat['p95']}/{lat['max']} | {run['wer']:.2%} "
                     f"| {run['refused']} | {run['cpu_percent']} | {run['rss_mb']} |")
    lines.append(f"\nhighest stream count with committed p95 <= 2 s: {report['max_streams_p95_under_2s']}")
    return "\n".join(lines)
