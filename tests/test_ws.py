"""The WebSocket server over real sockets, with the real tiny.en model and real speech.

Clients are the `websockets` library's asyncio client; the server is `woasr serve`
in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import httpx
import pytest
import websockets

from woasr.audio_io import load_audio
from woasr.clients.sources import to_pcm16
from woasr.tools.textnorm import count_errors, normalize_text

from tests.servers import ROOT, ServerProcess, free_port, line_text

pytestmark = pytest.mark.model

JFK = "en/jfk_inaugural_1961.wav"
BLOCK = 3200  # 100 ms of PCM16 at 16 kHz


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--tcp-port", "0", "--ws-port", str(free_port()), "--min-chunk", "0.5",
                        "--ws-max-frame", "64000"]) as proc:
        yield proc
        assert proc.alive(), proc.text


def pcm_of(manifest, name: str) -> bytes:
    return to_pcm16(load_audio(manifest[name].path))


async def send_paced(ws, pcm: bytes, pace: float = 0.05) -> None:
    """100 ms blocks every ``pace`` seconds (0.05: twice real time)."""
    for i in range(0, len(pcm), BLOCK):
        await ws.send(pcm[i : i + BLOCK])
        await asyncio.sleep(pace)


async def receive_all(ws) -> list[dict]:
    """Every message until the server closes the connection (with any code)."""
    messages = []
    try:
        async for message in ws:
            messages.append(json.loads(message))
    except websockets.ConnectionClosedError:
        pass
    return messages


def finals(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] == "final"]


def text_of(messages: list[dict]) -> str:
    return " ".join(m["text"] for m in finals(messages))


async def stream_session(url: str, pcm: bytes, config: dict | None = None, pace: float = 0.05) -> list[dict]:
    """One well-behaved session: optional config, paced audio, close message, all messages."""
    async with websockets.connect(url) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        if config is not None:
            await ws.send(json.dumps({"type": "config", **config}))
        receiving = asyncio.create_task(receive_all(ws))
        await send_paced(ws, pcm, pace)
        await ws.send(json.dumps({"type": "close"}))
        messages = await receiving
        assert ws.close_code == 1000
    return messages


async def test_seed_contract_ready_finals_flush(server, manifest):
    row = manifest[JFK]
    pcm = pcm_of(manifest, JFK)
    async with websockets.connect(server.ws_url + "/") as ws:
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready" and ready["sample_rate"] == 16000
        received: list[dict] = []

        async def collect() -> None:
            async for message in ws:
                received.append(json.loads(message))

        collecting = asyncio.create_task(collect())
        await send_paced(ws, pcm[: len(pcm) // 2])
        await ws.send("flush")
        while not any(m["type"] == "flushed" for m in received):
            await asyncio.sleep(0.05)
        flushed_at = next(i for i, m in enumerate(received) if m["type"] == "flushed")
        before_flush = text_of(received[:flushed_at])
        assert "fellow americans" in normalize_text(before_flush)  # the first half, all committed
        await send_paced(ws, pcm[len(pcm) // 2 :])
        await ws.send("flush")
        while sum(m["type"] == "flushed" for m in received) < 2:
            await asyncio.sleep(0.05)
        await ws.close()
        collecting.cancel()
    # A seed client sees only ready, final and (after its flush) flushed.
    assert {m["type"] for m in received} == {"final", "flushed"}
    begs = [m["beg_ms"] for m in finals(received)]
    assert begs == sorted(begs) and len(begs) >= 3
    assert all(isinstance(m["text"], str) and m["beg_ms"] <= m["end_ms"] for m in finals(received))
    text = text_of(received)
    assert normalize_text(text).endswith("for your country")
    assert count_errors(row.reference, text).rate < 0.15


async def test_extensions_seq_words_config_partials(server, manifest):
    row = manifest["en/ljspeech_LJ001-0001.wav"]
    messages = await stream_session(server.ws_url + "/v1/stream", pcm_of(manifest, row.name),
                                    config={"partials": True, "min_chunk": 0.5, "prompt": "Printing."})
    assert messages[0]["type"] == "configured"
    assert messages[0]["settings"] == {"language": "en", "prompt": "Printing.", "min_chunk": 0.5, "partials": True,
                                       "vac": False, "endpointing": False, "min_silence_ms": 500,
                                       "vad_threshold": 0.5, "speech_pad_ms": 300}
    committed = finals(messages)
    assert [m["seq"] for m in committed] == list(range(len(committed)))
    for final in committed:
        words = final["words"]
        assert words and " ".join(w["text"] for w in words) == final["text"]
        assert final["beg_ms"] == words[0]["beg_ms"] and final["end_ms"] == words[-1]["end_ms"]
        assert all(final["beg_ms"] <= w["beg_ms"] <= w["end_ms"] <= final["end_ms"] for w in words)
        assert all(0 <= w["probability"] <= 1 for w in words)
        assert isinstance(final["lag_ms"], int) and 0 <= final["lag_ms"] < 30_000
    partials = [m for m in messages if m["type"] == "partial"]
    assert len(partials) >= 3 and any(p["text"] for p in partials)
    assert partials[-1]["text"] == ""  # the end clears the display
    assert count_errors(row.reference, text_of(messages)).rate < 0.2


async def test_endpointing_events_come_in_order_with_plausible_times(server, manifest):
    row = manifest["conv/pyannote_phone_call.wav"]  # silent until 6.7 s, then short turns with pauses
    messages = await stream_session(server.ws_url, pcm_of(manifest, row.name), {"endpointing": True})
    assert messages[0] == {"type": "configured", "settings": {**messages[0]["settings"], "vac": True,
                                                               "endpointing": True}}
    kinds = [m["type"] for m in messages[1:]]
    starts = [m for m in messages if m["type"] == "speech_started"]
    ends = [m for m in messages if m["type"] == "utterance_end"]
    assert 6000 < starts[0]["time_ms"] < 7000 and len(ends) >= 2 and ends[0]["last_word_end_ms"] < 29000
    assert kinds.index("speech_started") < kinds.index("final")  # speech is announced before its words
    last_final = None
    since_end = {"speech_started": 0, "final": 0}
    for message in messages[1:]:
        if message["type"] in since_end:
            since_end[message["type"]] += 1
        if message["type"] == "final":
            assert message["beg_ms"] >= starts[0]["time_ms"] - 300
            assert since_end["speech_started"], kinds  # no final before its utterance's start
            last_final = message
        if message["type"] == "utterance_end":
            # Every word of the utterance was sent before it, and it names the last word's end.
            assert since_end["final"] and since_end["speech_started"], kinds
            assert message["last_word_end_ms"] == last_final["end_ms"]
            since_end = {"speech_started": 0, "final": 0}
    assert count_errors(row.reference, text_of(messages)).rate < 0.35, text_of(messages)


async def test_ready_describes_the_session(server):
    async with websockets.connect(server.ws_url) as ws:
        ready = json.loads(await ws.recv())
    assert ready["model"] == "tiny.en" and ready["language"] == "en" and ready["session_id"].startswith("ws-")
    assert ready["settings"]["min_chunk"] == 0.5 and ready["settings"]["partials"] is False


async def test_three_concurrent_clients_get_their_own_transcripts(server, manifest):
    names = [JFK, "en/ljspeech_LJ001-0001.wav", "en/librispeech_1089-134686-0000.wav"]
    results = await asyncio.gather(*(stream_session(server.ws_url, pcm_of(manifest, n)) for n in names))
    for name, messages in zip(names, results):
        assert count_errors(manifest[name].reference, text_of(messages)).rate < 0.2, (name, text_of(messages))


async def bad_session(
    url: str, script: list[str | bytes | tuple[str | bytes, ...]]
) -> tuple[list[dict], int | None, str]:
    """Send the script (text or binary messages; a tuple's back to back), then the close message; collect everything."""
    async with websockets.connect(url) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        receiving = asyncio.create_task(receive_all(ws))
        for step in script:
            for message in step if isinstance(step, tuple) else (step,):
                await ws.send(message)
            await asyncio.sleep(0.05)
        try:
            await ws.send(json.dumps({"type": "close"}))
        except websockets.ConnectionClosed:
            pass
        messages = await receiving
    return messages, ws.close_code, ws.close_reason


async def test_bad_input_gets_errors_while_a_healthy_session_stays_correct(server, manifest):
    url = server.ws_url
    speech = pcm_of(manifest, "en/ljspeech_LJ001-0002.wav")  # "in being comparatively modern"
    close = json.dumps({"type": "close"})
    cases = {
        "bad_message": ["hello?", speech],
        "unknown_type": [json.dumps({"type": "pause"}), speech],
        "bad_value": [json.dumps({"type": "config", "partials": "yes"}), speech],
        "unknown_field": [json.dumps({"type": "config", "partial": True}), speech],
        "config_after_audio": [speech[:BLOCK], json.dumps({"type": "config", "partials": True}), speech[BLOCK:]],
        # Back to back: audio that reaches the server after its close frame cannot be answered.
        "closed": [speech, (close, speech[:BLOCK])],
        "odd_frame": [speech + b"\x01"],  # a message must hold whole samples (TCP carries the odd byte)
    }
    healthy = asyncio.create_task(stream_session(url, pcm_of(manifest, JFK)))
    bad = await asyncio.gather(*(bad_session(url, script) for script in cases.values()))
    for code, (messages, close_code, _) in zip(cases, bad):
        errors = [m for m in messages if m["type"] == "error"]
        assert [e["code"] for e in errors][:1] == [code], (code, messages)
        assert errors[0]["message"]
        assert close_code == 1000
        # The session went on: the speech it was sent is transcribed.
        assert "modern" in normalize_text(text_of(messages)), (code, messages)
    assert count_errors(manifest[JFK].reference, text_of(await healthy)).rate < 0.2
    assert "bad_message" in server.text  # a log line per bad message


async def test_oversized_message_is_refused_with_1009_after_the_last_finals(server, manifest):
    speech = pcm_of(manifest, "en/ljspeech_LJ001-0002.wav")
    messages, code, reason = await bad_session(server.ws_url, [speech[:60000], bytes(70000)])
    assert code == 1009 and "64000" in reason
    errors = [m for m in messages if m["type"] == "error"]
    assert errors and errors[0]["code"] == "frame_too_large" and "70000" in errors[0]["message"]
    assert "comparatively" in normalize_text(text_of(messages))  # audio before it was finished


async def test_abrupt_close_ends_only_that_session(server, manifest):
    healthy = asyncio.create_task(stream_session(server.ws_url, pcm_of(manifest, JFK)))
    async with websockets.connect(server.ws_url) as rude:
        await rude.recv()
        await send_paced(rude, pcm_of(manifest, "en/ljspeech_LJ001-0001.wav")[:64000])
    # the with-block sent a plain close frame: no last finals for it, nothing breaks
    assert count_errors(manifest[JFK].reference, text_of(await healthy)).rate < 0.2
    await asyncio.sleep(0.3)
    assert "client closed the connection" in server.text
    assert server.alive()


def test_health_and_readiness(server):
    assert httpx.get(server.http_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.http_url + "/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == "tiny.en"
    page = httpx.get(server.http_url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_ws_launcher_honours_the_environment():
    ws_port = free_port()
    env = {"STREAM_WS_PORT": str(ws_port), "STREAM_MIN_CHUNK": "0.6", "IP_ADDR": "127.0.0.1", "STREAM_HOST": "",
           "STREAM_MODEL": "tiny.en", "STREAM_LANG": "en"}
    with ServerProcess([], env=env, command=["bash", str(ROOT / "scripts" / "streaming_ws_server.sh")]) as proc:
        assert proc.ws_port == ws_port and proc.port is None  # WebSocket alone
        assert "min_chunk=0.6" in proc.text

        async def ready() -> dict:
            async with websockets.connect(proc.ws_url) as ws:
                return json.loads(await ws.recv())

        assert asyncio.run(ready())["settings"]["min_chunk"] == 0.6


def test_main_launcher_serves_tcp_and_websocket_and_prints_the_page_url():
    env = {"STREAM_PORT": str(free_port()), "STREAM_WS_PORT": str(free_port())}
    with ServerProcess([], env=env, command=["bash", str(ROOT / "scripts" / "streaming_server.sh")]) as proc:
        assert proc.port == int(env["STREAM_PORT"]) and proc.ws_port == int(env["STREAM_WS_PORT"])
        assert f"page http://127.0.0.1:{env['STREAM_WS_PORT']}/" in proc.text


def test_seed_ws_entry_point_starts_the_websocket_server():
    ws_port = free_port()
    command = [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "streaming" / "whisper_ws_server.py")]
    if not os.path.exists(command[0]):
        command[0] = "python3"
    with ServerProcess(["--ws-port", str(ws_port)], command=command) as proc:
        assert proc.ws_port == ws_port and proc.port is None
    assert subprocess.run(command + ["--help"], capture_output=True, text=True, cwd=ROOT).returncode == 0


async def test_sigterm_drains_open_sessions_before_exiting(manifest):
    """A shutdown finishes every session: its received audio is transcribed and sent."""
    pcm = pcm_of(manifest, JFK)
    proc = ServerProcess(["--tcp-port", str(free_port()), "--ws-port", str(free_port()), "--min-chunk", "0.5"]).start()
    try:
        async with websockets.connect(proc.ws_url) as ws:
            await ws.recv()
            reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
            receiving = asyncio.create_task(receive_all(ws))
            for i in range(0, 60 * BLOCK, BLOCK):  # 6 s: "And so my fellow Americans, ask not ..."
                await ws.send(pcm[i : i + BLOCK])
                writer.write(pcm[i : i + BLOCK])
                await asyncio.sleep(0.02)
            await writer.drain()
            proc.proc.terminate()
            messages = await asyncio.wait_for(receiving, 60)
            tcp_lines = (await asyncio.wait_for(reader.read(), 60)).decode()
            writer.close()
        assert ws.close_code == 1001
        assert "fellow americans" in normalize_text(text_of(messages))
        assert "fellow americans" in normalize_text(line_text(tcp_lines))
        assert proc.proc.wait(timeout=30) == 0
        assert "draining 2 session(s)" in proc.text and "stopped" in proc.text
    finally:
        proc.stop()


def test_pings_keep_an_idle_connection_open_and_drop_a_dead_peer(manifest):
    import base64
    import socket
    import time

    with ServerProcess(["--tcp-port", "0", "--ws-port", str(free_port()), "--ws-ping-interval", "0.5"]) as proc:

        async def idle_then_speak() -> list[dict]:
            # This client never pings by itself: only the server's pings (and its pongs) keep it up.
            async with websockets.connect(proc.ws_url, ping_interval=None) as ws:
                await ws.recv()
                await asyncio.sleep(3.0)
                receiving = asyncio.create_task(receive_all(ws))
                await ws.send(pcm_of(manifest, "en/ljspeech_LJ001-0002.wav"))
                await ws.send(json.dumps({"type": "close"}))
                return await receiving

        assert "modern" in normalize_text(text_of(asyncio.run(idle_then_speak())))

        # A peer that completes the handshake and then never answers a ping is disconnected.
        with socket.create_connection(("127.0.0.1", proc.ws_port), timeout=30) as dead:
            key = base64.b64encode(os.urandom(16)).decode()
            dead.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            began = time.monotonic()
            while dead.recv(65536):  # the handshake, ready, pings ... until the server hangs up
                pass
            assert time.monotonic() - began < 10
        time.sleep(0.3)
        assert "client closed the connection" in proc.text


async def test_sessions_over_capacity_are_refused_on_every_transport(manifest):
    """--max-sessions 1: a second session is refused clearly while the first one streams on."""
    speech = pcm_of(manifest, JFK)
    with ServerProcess(["--tcp-port", str(free_port()), "--ws-port", str(free_port()), "--max-sessions", "1",
                        "--min-chunk", "0.5"]) as proc:
        async with websockets.connect(proc.ws_url) as first:
            await first.recv()
            first_messages = asyncio.create_task(receive_all(first))
            await send_paced(first, speech[: 30 * BLOCK], pace=0.02)
            # WebSocket: an error event, then close 1013 "try again later".
            async with websockets.connect(proc.ws_url) as second:
                refused = await receive_all(second)
            assert [m["code"] for m in refused] == ["capacity"] and "try again later" in refused[0]["message"]
            assert second.close_code == 1013
            # TCP: an ERROR line, then the server closes.
            reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
            line = (await asyncio.wait_for(reader.read(), 30)).decode()
            writer.close()
            assert line.startswith("ERROR capacity ") and line.count("\n") == 1
            # HTTP: 503 with Retry-After.
            async with httpx.AsyncClient() as client:
                response = await client.post(proc.http_url + "/v1/audio/transcriptions",
                                             files={"file": ("jfk.wav", open(manifest[JFK].path, "rb"))})
            assert response.status_code == 503 and response.headers["retry-after"]
            assert response.json()["error"]["code"] == "capacity"
            # The admitted session was not disturbed.
            await send_paced(first, speech[30 * BLOCK :], pace=0.02)
            await first.send(json.dumps({"type": "close"}))
            assert count_errors(manifest[JFK].reference, text_of(await first_messages)).rate < 0.2
        metrics = httpx.get(proc.http_url + "/metrics").text
        for transport in ("ws", "tcp", "http"):
            assert f'woasr_refused_sessions_total{{reason="capacity",transport="{transport}"}} 1.0' in metrics
        assert "refused a ws session" in proc.text


async def test_capacity_is_estimated_from_measured_compute(manifest):
    """No hard limit: after a few updates the measured compute says a second session would not fit."""
    speech = pcm_of(manifest, JFK)
    with ServerProcess(["--tcp-port", "0", "--ws-port", str(free_port()), "--max-chunk", "0.02",
                        "--min-chunk", "0.5"]) as proc:
        async with websockets.connect(proc.ws_url) as first:
            await first.recv()
            await send_paced(first, speech[: 40 * BLOCK], pace=0.05)  # several model calls measured
            async with websockets.connect(proc.ws_url) as second:
                refused = await receive_all(second)
            assert refused[0]["code"] == "capacity" and "at capacity" in refused[0]["message"]
            assert second.close_code == 1013
            await first.send(json.dumps({"type": "close"}))
            assert "fellow americans" in normalize_text(text_of(await receive_all(first)))
        # Alone again, a session is admitted: one session is never refused by the estimate.
        messages = await stream_session(proc.ws_url, speech[: 20 * BLOCK])
        assert finals(messages)
