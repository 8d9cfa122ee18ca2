"""Fuzz: over a thousand generated malformed inputs on TCP, WebSocket and HTTP against one real
server, while a healthy WebSocket session streams real speech beside them.

Counted: crashes (the server dies, answers 5xx other than 503, or logs a traceback): must be 0;
inputs answered with an error (an ``error`` event, an ``ERROR`` line, a 4xx); and the healthy
session's transcript, which must stay as good as when it streams alone.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
from collections import Counter

import httpx
import pytest
import websockets

from woasr.audio_io import load_audio
from woasr.clients.sources import to_pcm16
from woasr.tools.textnorm import count_errors

from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.model

JFK = "en/jfk_inaugural_1961.wav"
SEED = 20261202
CASES = {"ws": 500, "tcp": 250, "http": 300}


def random_json(rng: random.Random) -> str:
    """Text a client should not send: wrong shapes, types, values, sizes and nesting."""
    kind = rng.randrange(11)
    if kind == 0:
        return "[" * rng.choice((10, 1000, 100_000))
    if kind == 1:
        return '{"type":"config",' + '"a":{' * 5000 + "}" * 5000 + "}"
    if kind == 2:
        return json.dumps({"type": rng.choice(["config", "flush", "close", "resume", "", "x" * 5000, None, 3])})
    if kind == 3:
        field = rng.choice(["language", "prompt", "min_chunk", "partials", "vac", "endpointing", "bogus"])
        value = rng.choice([None, -1, 0, 1e308, float("nan"), "", "x" * 20_000, [], {}, True, "EN", "zz"])
        return json.dumps({"type": "config", field: value}, allow_nan=True)
    if kind == 4:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(1, 300)))
    if kind == 5:
        return json.dumps([1, 2, 3]) if rng.random() < 0.5 else "null"
    if kind == 6:
        return "flush" if rng.random() < 0.5 else " flush \n"
    if kind == 7:
        return json.dumps({"type": "config", "language": "de" * rng.randrange(1, 50)})
    if kind == 8:
        return '{"type": "config", "prompt": "' + "\\u0000" * 100 + '"}'
    if kind == 9:  # the compatible protocols' messages, with wrong or random fields
        event = rng.choice(["KeepAlive", "Finalize", "CloseStream", "Configure", "session.update",
                            "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear"])
        field = rng.choice(["keyterms", "language", "session", "audio", "prompt"])
        value = rng.choice([None, 3, "x" * 3000, ["a", 1], {"audio": {"input": {"format": {"rate": 8000}}}},
                            {"type": "realtime"}, "!!notbase64", {"audio": {"input": {"turn_detection": {
                                "type": "server_vad", "silence_duration_ms": -5}}}}])
        return json.dumps({"type": event, field: value})
    return "".join(rng.choice('{}[]":,0123456789aeflnrstu\\') for _ in range(rng.randrange(1, 200)))


def random_bytes(rng: random.Random) -> bytes:
    size = rng.choice((0, 1, 2, 3, 7, 999, 3200, 3201, 64_000, 64_001, 200_000))
    return rng.randbytes(size)


PATHS = {"/": "close", "/v1/listen": "CloseStream", "/v1/realtime?intent=transcription": None}
"""Each WebSocket protocol, with its polite end."""


async def ws_case(port: int, rng: random.Random, tally: Counter) -> None:
    """One connection in one of the protocols: a few malformed messages, then a close (polite or abrupt)."""
    path = rng.choice(list(PATHS))
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}{path}", open_timeout=10, close_timeout=2) as ws:
            if path == "/":
                await ws.recv()  # ready
            for _ in range(rng.randrange(1, 5)):
                message = random_bytes(rng) if rng.random() < 0.5 else random_json(rng)
                await ws.send(message)
                tally["ws inputs"] += 1
            if rng.random() < 0.5 and PATHS[path]:
                await ws.send(json.dumps({"type": PATHS[path]}))
            async for text in ws:
                if isinstance(text, str) and json.loads(text).get("type") in ("error", "Error"):
                    tally["ws errors answered"] += 1
                if rng.random() < 0.3:
                    break  # leave abruptly
    except (websockets.ConnectionClosed, websockets.InvalidStatus, TimeoutError, OSError):
        pass


def tcp_case(port: int, rng: random.Random, tally: Counter) -> None:
    """One connection: random bytes, then a half-close, an abrupt reset, or silence."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(rng.randrange(1, 4)):
            sock.sendall(random_bytes(rng) if rng.random() < 0.7 else random_json(rng).encode())
            tally["tcp inputs"] += 1
        ending = rng.randrange(3)
        if ending == 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            return
        if ending == 1:
            sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.5 if ending == 2 else 30)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
        tally["tcp errors answered"] += data.count(b"ERROR ")


def http_case(client: httpx.Client, port: int, rng: random.Random, tally: Counter) -> None:
    """One request that OpenAI's API would refuse, or a path or method that does not exist."""
    url = f"http://127.0.0.1:{port}"
    kind = rng.randrange(6)
    if kind == 0:
        response = client.post(f"{url}/v1/audio/transcriptions", files={"file": ("x.wav", random_bytes(rng))})
    elif kind == 1:
        fields = {rng.choice(["language", "response_format", "temperature", "timestamp_granularities[]", "model"]):
                  random_json(rng)[:3000]}
        response = client.post(f"{url}/v1/audio/transcriptions", data=fields, files={"file": ("x.wav", b"RIFF")})
    elif kind == 2:
        response = client.post(f"{url}/v1/audio/transcriptions", content=random_bytes(rng),
                               headers={"Content-Type": rng.choice(["multipart/form-data", "application/json",
                                                                    "multipart/form-data; boundary=x", "text/plain"])})
    elif kind == 3:
        response = client.request(rng.choice(["GET", "PUT", "DELETE", "PATCH"]), f"{url}/v1/audio/transcriptions")
    elif kind == 4:
        response = client.get(f"{url}/{''.join(rng.choice('abc/%.?=&') for _ in range(rng.randrange(1, 80)))}")
    else:
        response = client.post(f"{url}/v1/audio/transcriptions", data={"model": "whisper-1"})
    tally["http inputs"] += 1
    if 400 <= response.status_code < 500:
        tally["http errors answered"] += 1
    elif response.status_code >= 500 and response.status_code != 503:
        tally["crashes"] += 1


async def healthy_transcript(port: int, pcm: bytes) -> str:
    """A well-behaved client, streaming in real time, then closing politely."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.recv()

        async def send() -> None:
            for i in range(0, len(pcm), 3200):
                await ws.send(pcm[i:i + 3200])
                await asyncio.sleep(0.1)
            await ws.send(json.dumps({"type": "close"}))

        sending = asyncio.create_task(send())
        finals = [m["text"] for m in map(json.loads, [t async for t in ws]) if m["type"] == "final"]
        await sending
    return " ".join(finals)


async def fuzz(server: ServerProcess, tally: Counter) -> None:
    rng = random.Random(SEED)
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(4)

    async def bounded(case):
        async with limit:
            await case

    ws_cases = [bounded(ws_case(server.ws_port, random.Random(rng.random()), tally)) for _ in range(CASES["ws"])]
    with httpx.Client(timeout=30) as client:
        others = [loop.run_in_executor(None, tcp_case, server.port, random.Random(rng.random()), tally)
                  for _ in range(CASES["tcp"])]
        others += [loop.run_in_executor(None, http_case, client, server.ws_port, random.Random(rng.random()), tally)
                   for _ in range(CASES["http"])]
        await asyncio.gather(*ws_cases, *others)


def test_a_thousand_malformed_inputs_crash_nothing_and_a_healthy_session_is_unaffected(manifest):
    row = manifest[JFK]
    pcm = to_pcm16(load_audio(row.path))
    args = ["--tcp-port", str(free_port()), "--ws-port", str(free_port()), "--idle-timeout", "3",
            "--ws-max-frame", "64000"]
    tally: Counter = Counter()
    with ServerProcess(args) as server:
        alone = asyncio.run(healthy_transcript(server.ws_port, pcm))

        async def both() -> str:
            healthy = asyncio.create_task(healthy_transcript(server.ws_port, pcm))
            await fuzz(server, tally)
            return await healthy

        beside = asyncio.run(both())
        assert server.alive()
        log = server.text
    inputs = tally["ws inputs"] + tally["tcp inputs"] + tally["http inputs"]
    print(f"fuzz: {inputs} inputs, {dict(tally)}")
    assert inputs >= 1000
    if "Traceback" in log:
        print(log[log.index("Traceback") - 3000:][:8000])
    assert tally["crashes"] == 0 and "Traceback" not in log
    assert "failed" not in log.replace("failed to", "").replace("resume_failed", "")
    assert tally["ws errors answered"] > 100 and tally["http errors answered"] > 200
    alone_wer, beside_wer = count_errors(row.reference, alone).rate, count_errors(row.reference, beside).rate
    print(f"healthy session WER: alone {alone_wer:.3f}, beside the fuzz {beside_wer:.3f}")
    assert beside_wer <= alone_wer + 0.05, (alone, beside)
