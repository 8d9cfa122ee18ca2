"""What Triton costs per model call, at start and in memory, against the model in this process.

    .venv/bin/python benchmarks/triton_overhead.py [--model tiny.en] [--repeats 7]

Starts one ``woasr triton serve`` (timing launch -> ready), then calls the same 5 s and 10 s
windows of real speech in this process and through the Triton engine, interleaved, and prints
the medians, their difference (the per-call overhead: gRPC, tensors, JSON) and the RSS of the
Triton process tree against this process's model. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from woasr.asr.faster_whisper_backend import FasterWhisperASR  # noqa: E402
from woasr.asr.loaded import DecodeSettings  # noqa: E402
from woasr.audio_io import load_audio  # noqa: E402
from woasr.core.records import TranscriptionRequest  # noqa: E402
from woasr.engine.triton import TritonEngine  # noqa: E402

CLIP = ROOT.parent / "shared" / "audio" / "long" / "ljspeech_en_long.wav"


def tree_rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def start_triton(model: str, port: int, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    began = time.monotonic()
    # One instance: each call on every core, as the in-process model here.
    with log.open("wb") as out:
        server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "woasr"), "triton", "serve", "--instances", "1",
                                   "--model", model, "--grpc-port", str(port), "--http-port", str(port - 1),
                                   "--metrics-port", str(port + 1)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    while server.poll() is None:
        if b"ready triton" in log.read_bytes():
            return server, time.monotonic() - began
        time.sleep(0.05)
    raise RuntimeError(f"woasr triton serve did not start (see {log})")


async def compare(model: str, port: int, repeats: int) -> None:
    audio = load_audio(str(CLIP))
    local = FasterWhisperASR(model, "en", cpu_threads=psutil.cpu_count())
    local_rss = psutil.Process().memory_info().rss / 2**20
    engine = TritonEngine([f"127.0.0.1:{port}"], DecodeSettings())
    await engine.connect()
    for seconds in (5, 10):
        window = audio[16000 * 20: 16000 * (20 + seconds)]
        request = TranscriptionRequest(window, "", "en")
        here, there = [], []
        for _ in range(repeats + 1):  # the first of each is a warm-up
            began = time.perf_counter()
            await asyncio.to_thread(local.transcribe, window, "", "en")
            here.append(time.perf_counter() - began)
            began = time.perf_counter()
            await engine.transcribe(request)
            there.append(time.perf_counter() - began)
        a, b = statistics.median(here[1:]) * 1000, statistics.median(there[1:]) * 1000
        print(f"{model} {seconds:2d} s window: in-process {a:6.0f} ms, via Triton {b:6.0f} ms, "
              f"difference {b - a:+5.0f} ms (medians of {repeats})")
    print(f"RSS: this process with the model {local_rss:.0f} MB")
    engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--port", type=int, default=18701)
    args = parser.parse_args()
    server, start_s = start_triton(args.model, args.port, Path(tempfile.gettempdir()) / "triton_overhead.log")
    try:
        print(f"woasr triton serve: launch to ready {start_s:.1f} s, process tree RSS "
              f"{tree_rss_mb(server.pid):.0f} MB")
        asyncio.run(compare(args.model, args.port, args.repeats))
        print(f"woasr triton serve after the calls: process tree RSS {tree_rss_mb(server.pid):.0f} MB")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
