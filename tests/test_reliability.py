"""No client can hurt another: backpressure, idle sessions, per-address and origin limits, bad input,
a failing model, shutdown. Real servers (tiny.en) over real sockets, except the failing model,
which is injected in-process behind the real lifecycle."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import threading
import time

import httpx
import pytest
import websockets

from woasr.audio_io import load_audio
from woasr.clients.sources import to_pcm16
from woasr.tools.textnorm import count_errors

from tests.servers import ServerProcess, free_port, line_text

pytestmark = pytest.mark.model

JFK = "en/jfk_inaugural_1961.wav"


def pcm_of(manifest, name: str) -> bytes:
    return to_pcm16(load_audio(manifest[name].path))


def wer(reference: str, text: str) -> float:
    return count_errors(reference, text).rate


def tcp_transcript(port: int, pcm: bytes, block: int = 1 << 16) -> str:
    """Send everything at wire speed, half-close, read every line."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for i in range(0, len(pcm), block):
            sock.sendall(pcm[i:i + block])
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.decode()


def chunk_buckets(ws_port: int) -> dict[float, float]:
    """The effective-chunk histogram's cumulative bucket counts from /metrics (le -> count)."""
    text = httpx.get(f"http://127.0.0.1:{ws_port}/metrics").text
    pattern = r'woasr_effective_chunk_seconds_bucket\{le="([^"]+)"\} (\S+)'
    return {float(le): float(count) for le, count in re.findall(pattern, text)}


def test_a_sender_faster_than_real_time_is_slowed_not_served_in_one_huge_call(manifest):
    long = "long/mixed_en_long.wav"  # 208 s, sent at wire speed
    pcm = pcm_of(manifest, long)
    with ServerProcess(["--tcp-port", str(free_port()), "--ws-port", str(free_port()), "--max-backlog", "3"]) as server:
        started = time.monotonic()
        text = line_text(tcp_transcript(server.port, pcm))
        took = time.monotonic() - started
        buckets = chunk_buckets(server.ws_port)
    assert wer(manifest[long].reference, text) < 0.12, text  # every part of the audio was transcribed
    # No model call covered more than the backlog plus one read (3 s + 2 s): before, the whole backlog
    # went into one call of minutes.
    assert buckets[5.0] == buckets[float("inf")] > 20, buckets
    assert took > 5  # the server set the pace


@pytest.fixture(scope="module")
def guarded():
    """A server with short idle timeout and one session per address."""
    args = ["--tcp-port", str(free_port()), "--ws-port", str(free_port()), "--idle-timeout", "2",
            "--max-sessions-per-address", "2", "--allowed-origins", "https://app.example"]
    with ServerProcess(args) as proc:
        yield proc
        assert proc.alive(), proc.text


async def ws_session(port: int, **kw):
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/", **kw)
    ready = json.loads(await ws.recv())
    assert ready["type"] == "ready"
    return ws


def test_a_websocket_that_sends_no_audio_is_closed_after_the_idle_timeout(guarded):
    async def run():
        ws = await ws_session(guarded.ws_port)
        started = time.monotonic()
        await ws.send(json.dumps({"type": "flush"}))  # commands do not keep a session alive
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        return time.monotonic() - started, ws.close_code

    took, code = asyncio.run(run())
    assert 1.5 < took < 6 and code == 1000
    assert "idle for 2 s (no audio)" in guarded.text


def test_a_byte_now_and_then_does_not_keep_a_tcp_session_alive(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        started = time.monotonic()
        sock.settimeout(0.4)
        closed = False
        while time.monotonic() - started < 8 and not closed:
            try:
                sock.sendall(b"\0\0")  # one sample every 0.4 s: bytes, but hardly any audio
                closed = sock.recv(1) == b""
            except TimeoutError:
                pass
            except OSError:
                closed = True
        assert closed and time.monotonic() - started < 6


def test_one_address_cannot_take_every_session(guarded):
    async def run():
        first, second = await ws_session(guarded.ws_port), await ws_session(guarded.ws_port)
        third = await websockets.connect(f"ws://127.0.0.1:{guarded.ws_port}/")
        refused = json.loads(await third.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await third.recv()
        await first.close(), await second.close()
        return refused, third.close_code

    refused, code = asyncio.run(run())
    assert refused["type"] == "error" and refused["code"] == "capacity" and "limit 2" in refused["message"]
    assert code == 1013


@pytest.mark.parametrize(("origin", "allowed"), [
    ("https://evil.example", False),
    ("https://app.example", True),  # listed
    (None, True),  # a program, not a browser page
])
def test_only_allowed_web_origins_open_sessions(guarded, origin, allowed):
    async def run():
        headers = {"Origin": origin} if origin else {}
        ws = await ws_session(guarded.ws_port, additional_headers=headers)
        await ws.close()

    if allowed:
        asyncio.run(run())
    else:
        with pytest.raises(websockets.InvalidStatus) as refused:
            asyncio.run(run())
        assert refused.value.response.status_code == 403


def test_the_servers_own_page_origin_is_allowed(guarded):
    async def run():
        ws = await ws_session(guarded.ws_port, additional_headers={"Origin": f"http://127.0.0.1:{guarded.ws_port}"})
        await ws.close()

    asyncio.run(run())


def test_an_odd_sized_message_and_deep_json_do_not_derail_the_stream(guarded, manifest):
    pcm = pcm_of(manifest, JFK)

    async def run():
        ws = await ws_session(guarded.ws_port)
        await ws.send(b"\x01")  # one stray byte: before, every later sample was shifted into noise
        await ws.send("[" * 100_000)  # before, a RecursionError killed the reader
        for i in range(0, len(pcm), 32000):
            await ws.send(pcm[i:i + 32000])
        await ws.send(json.dumps({"type": "close"}))
        return [json.loads(m) async for m in ws]

    messages = asyncio.run(run())
    codes = [m["code"] for m in messages if m["type"] == "error"]
    assert codes[:2] == ["odd_frame", "bad_message"]
    text = " ".join(m["text"] for m in messages if m["type"] == "final")
    assert wer(manifest[JFK].reference, text) < 0.15, text


def test_a_model_failure_is_an_error_and_close_1011_and_others_go_on():
    from woasr.asr.faster_whisper_backend import FasterWhisperASR
    from woasr.core.processor import ProcessorSettings
    from woasr.engine import LocalEngine
    from woasr.protocol.ending import Ending
    from woasr.server.config import ServerConfig
    from woasr.server.lifecycle import serve_session
    from woasr.server.service import StreamingService

    class BrokenEngine(LocalEngine):
        async def transcribe(self, request, *, since=None):
            raise RuntimeError("CUDA out of memory (injected)")

    class Scripted:
        transport, peer, address, resumable = "ws", "test", "127.0.0.1", True

        def __init__(self):
            self.inputs = [(b"\0\0" * 16000,), (b"\0\0" * 16000,)]
            self.sent, self.closed = [], None

        async def receive(self):
            if self.inputs:
                return self.inputs.pop(0)
            await asyncio.sleep(3600)

        async def send(self, events):
            self.sent += events

        async def close(self, ending, reason):
            self.closed = (ending, reason)

    config = ServerConfig("127.0.0.1", 0, 0.5, 60.0, 1, ProcessorSettings())
    asr = FasterWhisperASR("tiny.en", "en")

    async def run():
        service = StreamingService(lambda: asr, config, engine=BrokenEngine(lambda: asr, 1))
        await service.load()
        connection = Scripted()
        await asyncio.wait_for(serve_session(service, connection), 30)
        return connection, service

    connection, service = asyncio.run(run())
    assert connection.closed[0] is Ending.FAILED and "RuntimeError" in connection.closed[1]
    assert [e.code for e in connection.sent if type(e).__name__ == "Error"] == ["server_error"]
    assert service.active_sessions == 0


def test_a_second_signal_stops_at_once(manifest):
    """First signal: drain (an upload in progress may finish). Second: stop now."""
    server = ServerProcess(["--tcp-port", "0", "--ws-port", str(free_port()), "--drain-timeout", "60"]).start()
    stop_sending = threading.Event()

    def slow_upload():
        def body():
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
            while not stop_sending.is_set():
                yield b"\0" * 1024
                time.sleep(0.2)

        try:
            httpx.post(f"http://127.0.0.1:{server.ws_port}/v1/audio/transcriptions", content=body(),
                       headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=60)
        except httpx.HTTPError:
            pass

    uploading = threading.Thread(target=slow_upload, daemon=True)
    uploading.start()
    time.sleep(1.0)
    try:
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(2.0)
        assert server.proc.poll() is None  # still draining: the upload is open
        server.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = server.proc.wait(timeout=10)
        assert time.monotonic() - started < 3 and code == 1
        assert "stopped at once" in server.text
    finally:
        stop_sending.set()
        if server.proc.poll() is None:
            server.proc.kill()
        server.stop()
