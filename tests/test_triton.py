"""Scale-out on loopback: real Triton servers (``woasr triton serve``, PyTriton from .venv-triton),
front-ends with ``--engine triton``, an instance killed mid-stream, and two front-end processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time

import httpx
import pytest
import websockets

from tests.proxy import CuttingProxy
from tests.servers import ROOT, WOASR, ServerProcess, free_port, line_text
from woasr.audio_io import load_audio
from woasr.clients.sources import to_pcm16
from woasr.server.frontends import STEADY_SECONDS
from woasr.tools.textnorm import count_errors

pytestmark = pytest.mark.model

JFK = "en/jfk_inaugural_1961.wav"
BLOCK = 3200  # 0.1 s of PCM16


# PyTriton's parallel instance start can fail the first load (a handshake race that cannot be forced):
# this launcher makes the first load fail as it does, so the restart of Triton runs for real.
FLAKY_FIRST_LOAD = """
import sys
from woasr import cli
from woasr.engine import triton_model

real_bind, failures = triton_model._bind, [RuntimeError("Connection refused (made to fail by the test)")]

def bind_failing_once(*args):
    if failures:
        raise failures.pop()
    real_bind(*args)

triton_model._bind = bind_failing_once
sys.exit(cli.main(["triton", "serve", *sys.argv[1:]]))
"""


def triton_instance(command: list[str] | None = None) -> ServerProcess:
    http, grpc, metrics = free_port(), free_port(), free_port()
    instance = ServerProcess(["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                             command=command or [*WOASR, "triton", "serve"], ready="ready triton")
    instance.grpc_port = grpc
    return instance.start(timeout=180)


def grpc_url(instance: ServerProcess) -> str:
    return f"127.0.0.1:{instance.grpc_port}"


def front_end(urls: list[str], *extra: str, copies: int = 1) -> ServerProcess:
    """A front-end on those instances, started by ``with``."""
    return ServerProcess(["--engine", "triton", "--triton-url", ",".join(urls), "--tcp-port", "0",
                          "--ws-port", str(free_port()), "--metrics-port", "0", *extra], copies=copies)


async def stream(port: int, pcm: bytes, pace: float = 0.0) -> tuple[dict, str]:
    """One session: its ready, and its finals' text (``pace``: seconds per 0.1 s block, 0 = at once)."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
        ready = json.loads(await ws.recv())
        for start in range(0, len(pcm), BLOCK):
            await ws.send(pcm[start:start + BLOCK])
            await asyncio.sleep(pace)
        await ws.send(json.dumps({"type": "close"}))
        finals = [m["text"] for m in map(json.loads, [t async for t in ws]) if m["type"] == "final"]
        return ready, " ".join(finals)


def metric(server: ServerProcess, name: str) -> dict[str, float]:
    text = httpx.get(f"{server.http_url}/metrics").text
    return {labels: float(value) for labels, value in re.findall(rf"^{name}(\S*) (\S+)$", text, re.M)}


@pytest.fixture(scope="module")
def instances():
    started = [triton_instance(), triton_instance()]
    yield started
    for instance in started:
        instance.stop()


def test_streams_and_rest_through_two_instances_and_one_down_at_start(instances, manifest):
    clip = manifest[JFK]
    pcm = to_pcm16(load_audio(clip.path))
    dead = f"127.0.0.1:{free_port()}"
    with front_end([*map(grpc_url, instances), dead]) as server:
        assert re.search(rf"triton {dead} is not reachable, skipped", server.text)

        async def both() -> list[tuple[dict, str]]:
            return await asyncio.gather(stream(server.ws_port, pcm), stream(server.ws_port, pcm))

        for ready, text in asyncio.run(both()):
            assert ready["model"] == "tiny.en" and ready["settings"]["backend"] == "faster-whisper"
            assert count_errors(clip.reference, text).rate < 0.2, text
        rest = httpx.post(f"{server.http_url}/v1/audio/transcriptions", timeout=60,
                          files={"file": ("jfk.wav", clip.path.read_bytes())})
        assert rest.status_code == 200 and count_errors(clip.reference, rest.json()["text"]).rate < 0.2
        calls = metric(server, "woasr_triton_calls_total")
        assert all(calls.get(f'{{instance="{grpc_url(i)}"}}', 0) > 0 for i in instances), calls  # both used


def test_a_failed_model_load_starts_triton_again(manifest):
    clip = manifest[JFK]
    pcm = to_pcm16(load_audio(clip.path))
    instance = triton_instance([str(ROOT / ".venv-triton" / "bin" / "python"), "-c", FLAKY_FIRST_LOAD])
    try:
        assert "the model failed to load (Connection refused (made to fail by the test)); starting again (2/3)" \
            in instance.text
        with front_end([grpc_url(instance)]) as server:
            _, text = asyncio.run(stream(server.ws_port, pcm))
        assert count_errors(clip.reference, text).rate < 0.2, text
    finally:
        instance.stop()


def test_an_instance_killed_mid_stream_costs_no_stream(manifest):
    clip = manifest[JFK]
    pcm = to_pcm16(load_audio(clip.path))
    doomed, survivor = triton_instance(), triton_instance()
    try:
        with front_end([grpc_url(doomed), grpc_url(survivor)], "--triton-timeout", "5") as server:
            async def four_and_a_kill() -> list[tuple[dict, str]]:
                streams = [asyncio.create_task(stream(server.ws_port, pcm, pace=0.1)) for _ in range(4)]
                await asyncio.sleep(4)
                doomed.proc.send_signal(signal.SIGKILL)  # PyTriton's process: its tritonserver hangs on
                return await asyncio.gather(*streams)

            began = time.monotonic()
            results = asyncio.run(four_and_a_kill())
            print(f"4 streams of {clip.seconds:.1f} s with a kill: {time.monotonic() - began:.1f} s")
            for _, text in results:
                assert count_errors(clip.reference, text).rate < 0.2, text
            assert metric(server, "woasr_triton_failovers_total")[""] >= 1
            assert f"triton {grpc_url(doomed)} is down" in server.text
    finally:
        doomed.stop()
        survivor.stop()


def test_two_front_end_processes_share_the_port_and_send_resumes_home(instances, manifest):
    clip = manifest[JFK]
    began = time.monotonic()
    with front_end([grpc_url(i) for i in instances], "--processes", "2", copies=2) as server:
        port = server.ws_port

        async def open_sessions(count: int) -> list[str]:
            async def one() -> str:
                async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
                    return json.loads(await ws.recv())["session_id"]

            return list(await asyncio.gather(*(one() for _ in range(count))))

        ids = asyncio.run(open_sessions(12))
        assert {i.split(".")[0] for i in ids} == {"f0", "f1"}, ids  # the kernel spread them over both

        async def resume_elsewhere() -> dict:
            # A session on front-end 0 (its own port), dropped without a close frame ...
            ws = await websockets.connect(f"ws://127.0.0.1:{port + 1}/")
            ready = json.loads(await ws.recv())
            await ws.send(to_pcm16(load_audio(clip.path))[:32000])  # one second
            await asyncio.sleep(0.5)
            ws.transport.abort()
            await asyncio.sleep(0.5)
            # ... resumed through front-end 1: it says where the session lives.
            async with websockets.connect(f"ws://127.0.0.1:{port + 2}/") as other:
                assert json.loads(await other.recv())["session_id"].startswith("f1.")
                await other.send(json.dumps({"type": "resume", "session_id": ready["session_id"],
                                             "token": ready["resume_token"], "last_seq": -1}))
                answer = json.loads(await other.recv())
            async with websockets.connect(f"ws://127.0.0.1:{answer['resume_port']}/") as home:
                await home.recv()
                await home.send(json.dumps({"type": "resume", "session_id": ready["session_id"],
                                            "token": ready["resume_token"], "last_seq": -1}))
                return {"answer": answer, "resumed": json.loads(await home.recv())}

        outcome = asyncio.run(resume_elsewhere())
        assert outcome["answer"]["code"] == "resume_failed" and outcome["answer"]["resume_port"] == port + 1
        assert outcome["resumed"]["type"] == "resumed" and outcome["resumed"]["resume_from_sample"] == 16000
        text = asyncio.run(stream(port, to_pcm16(load_audio(clip.path))))[1]
        assert count_errors(clip.reference, text).rate < 0.2, text

        # woasr client follows the answer: its session starts on front-end 0, the proxy cuts it and
        # sends the reconnect to front-end 1, which names front-end 0's port; the client resumes there.
        with CuttingProxy(port + 1, later=port + 2) as proxy:
            client = subprocess.Popen([*WOASR, "client", "--ws", f"ws://127.0.0.1:{proxy.port}/", "--file",
                                       str(clip.path), "--backoff", "0.2"], cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            time.sleep(4)
            proxy.cut()
            out, err = client.communicate(timeout=120)
        assert client.returncode == 0, err
        assert re.search(r"lives on front-end 0: resume it on port", err) and "resumed session f0.ws-" in err, err
        assert count_errors(clip.reference, line_text(out)).rate < 0.2, out

        # A front-end that dies after its start is started again in its slot; the port serves on.
        time.sleep(max(0.0, began + STEADY_SECONDS + 2 - time.monotonic()))
        pids = re.search(r"front-ends: 2 processes \(pids (\d+) (\d+)\)", server.text)
        os.kill(int(pids.group(2)), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while server.text.count("ready model=") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert re.search(r"front-end 1 \(pid \d+\) exited with code -9 after \d+ s; starting it again", server.text)
        ids = asyncio.run(open_sessions(12))
        assert {i.split(".")[0] for i in ids} == {"f0", "f1"}, ids
        text = asyncio.run(stream(port + 2, to_pcm16(load_audio(clip.path))))[1]  # the new one's own port
        assert count_errors(clip.reference, text).rate < 0.2, text


def test_the_model_repository_of_the_official_container_serves_the_same(manifest):
    """deploy/model_repository (Python backend) on the tritonserver PyTriton bundles: what a GPU
    deployment runs in the official container, here on the CPU."""
    clip = manifest[JFK]
    grpc = free_port()
    repository = ServerProcess([f"--grpc-port={grpc}", f"--http-port={free_port()}", f"--metrics-port={free_port()}"],
                               command=["bash", str(ROOT / "scripts" / "triton_repository.sh")],
                               ready="Started GRPCInferenceService").start(timeout=180)
    try:
        with front_end([f"127.0.0.1:{grpc}"]) as server:
            ready, text = asyncio.run(stream(server.ws_port, to_pcm16(load_audio(clip.path))))
        assert ready["model"] == "tiny.en" and count_errors(clip.reference, text).rate < 0.2, text
    finally:
        repository.stop()
