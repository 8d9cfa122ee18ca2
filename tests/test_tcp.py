"""The TCP server over real sockets, with the real tiny.en model and real speech."""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import threading
import time

import pytest

from woasr.audio_io import load_audio
from woasr.clients.sources import to_pcm16
from woasr.core.processor import OnlineASRProcessor
from woasr.tools.evaluate import run_stream
from woasr.tools.textnorm import count_errors, normalize_text

from tests.servers import ROOT, WOASR, ServerProcess, free_port, line_text, parse_lines

pytestmark = pytest.mark.model

JFK = "en/jfk_inaugural_1961.wav"


def pcm_of(manifest, name: str) -> bytes:
    return to_pcm16(load_audio(manifest[name].path))


def stream(port: int, data: bytes, chunk: int = 3200, pace: float = 0.0, half_close: bool = True) -> list[str]:
    """Send ``data`` in ``chunk``-byte pieces (``pace`` seconds apart), half-close, read all lines."""
    lines: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        received = bytearray()

        def receive() -> None:
            while part := sock.recv(65536):
                received.extend(part)

        reader = threading.Thread(target=receive)
        reader.start()
        for i in range(0, len(data), chunk):
            sock.sendall(data[i : i + chunk])
            if pace:
                time.sleep(pace)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reader.join(timeout=180)
        lines = received.decode().splitlines()
    return lines


def parse(lines: list[str]) -> list[tuple[int, int, str]]:
    return parse_lines("\n".join(lines))


def transcript(lines: list[str]) -> str:
    return line_text("\n".join(lines))


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--tcp-port", str(free_port()), "--min-chunk", "0.5"]) as proc:
        yield proc
        assert proc.alive(), proc.text


def test_real_time_stream_then_half_close_gives_every_word(server, manifest, tiny_en):
    row = manifest[JFK]
    lines = stream(server.port, pcm_of(manifest, JFK), chunk=3200, pace=0.1)
    parsed = parse(lines)
    assert len(parsed) >= 3, "committed lines should arrive while streaming"
    assert all(b <= e for b, e, _ in parsed)
    assert all(a[1] <= b[0] + 50 for a, b in zip(parsed, parsed[1:])), "timestamps increase"
    text = transcript(lines)
    assert normalize_text(text).endswith("for your country")
    simulated = run_stream(OnlineASRProcessor(tiny_en, "en"), load_audio(row.path), 0.5, aware=False)
    assert count_errors(row.reference, text).rate <= count_errors(row.reference, simulated.text).rate + 0.1


def test_odd_chunk_sizes_give_the_same_transcript_as_aligned_chunks(manifest):
    data = pcm_of(manifest, "en/ljspeech_LJ001-0002.wav")
    # One update at the end of each stream, so only the byte handling can differ.
    with ServerProcess(["--tcp-port", str(free_port()), "--min-chunk", "1000"]) as proc:
        aligned = transcript(stream(proc.port, data, chunk=3200))
        for size in (1, 3, 4097):
            assert transcript(stream(proc.port, data, chunk=size)) == aligned
    assert normalize_text(aligned) == "in being comparatively modern"


def test_four_concurrent_clients_get_their_own_transcripts(server, manifest):
    names = [JFK, "en/ljspeech_LJ001-0001.wav", "en/librispeech_1089-134686-0000.wav", "en/ljspeech_LJ001-0009.wav"]
    results: dict[str, list[str]] = {}

    def client(name: str) -> None:
        results[name] = stream(server.port, pcm_of(manifest, name), chunk=3200, pace=0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for name in names:
        assert count_errors(manifest[name].reference, transcript(results[name])).rate < 0.2, (name, results[name])


def test_abrupt_disconnect_leaves_other_sessions_intact(server, manifest):
    healthy: list[str] = []
    worker = threading.Thread(
        target=lambda: healthy.extend(stream(server.port, pcm_of(manifest, JFK), chunk=3200, pace=0.05))
    )
    worker.start()
    with socket.create_connection(("127.0.0.1", server.port)) as rude:
        rude.sendall(pcm_of(manifest, "en/ljspeech_LJ001-0001.wav")[:64000])
        time.sleep(1.0)
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
    worker.join(timeout=300)
    assert count_errors(manifest[JFK].reference, transcript(healthy)).rate < 0.2
    assert "disconnected" in server.text or "end" in server.text
    again = transcript(stream(server.port, pcm_of(manifest, "en/ljspeech_LJ001-0002.wav")))
    assert "modern" in again.lower()


def test_random_bytes_end_the_session_normally(server):
    noise = random.Random(7).randbytes(16000 * 2 * 3 + 1)  # 3 s and an odd byte
    lines = stream(server.port, noise, chunk=4096)
    assert all(line.startswith("ERROR") or parse([line]) for line in lines)
    assert server.alive()


def test_file_client_survives_a_server_restart(manifest):
    port = free_port()
    first = ServerProcess(["--tcp-port", str(port), "--min-chunk", "0.5"]).start()
    client = subprocess.Popen(
        [*WOASR, "client", "--port", str(port), "--file", str(manifest[JFK].path), "--backoff", "0.2",
         "--backoff-cap", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(4.0)
        first.stop()
        time.sleep(1.0)
        with ServerProcess(["--tcp-port", str(port), "--min-chunk", "0.5"]) as second:
            out, err = client.communicate(timeout=120)
            assert "session tcp-1 end" in second.stop()
    finally:
        client.kill()
    assert client.returncode == 0, err
    assert "reconnecting" in err or "cannot connect" in err
    assert "country" in out.lower(), out
    # Lines came from both servers: timestamps restart with the new session.
    begs = [int(line.split()[0]) for line in out.splitlines()]
    assert any(b < a for a, b in zip(begs, begs[1:])), out


def test_launcher_scripts_honour_the_environment(manifest):
    port = free_port()
    env = {"STREAM_PORT": str(port), "STREAM_WS_PORT": str(free_port()), "STREAM_MIN_CHUNK": "0.7", "IP_ADDR": "127.0.0.1", "STREAM_HOST": "",
           "STREAM_MODEL": "tiny.en", "STREAM_LANG": "en"}
    with ServerProcess([], env=env, command=["bash", str(ROOT / "scripts" / "streaming_server.sh")]) as proc:
        assert proc.port == port
        assert "min_chunk=0.7" in proc.text and "host=127.0.0.1" in proc.text
        client = subprocess.run(
            ["bash", str(ROOT / "scripts" / "streaming_client.sh"), "--file", str(manifest[JFK].path), "--fast"],
            cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
        )
        assert client.returncode == 0, client.stderr
        assert "country" in client.stdout.lower()
    # A flag wins over the environment.
    with ServerProcess(["--min-chunk", "0.9"], env=env, command=["bash", str(ROOT / "scripts" / "streaming_server.sh")]) as proc:
        assert "min_chunk=0.9" in proc.text


def test_seed_example_fails_clearly_offline():
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "streaming_server.sh")], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "STREAM_MODEL": "small", "STREAM_LANG": "ko",
             "STREAM_MIN_CHUNK": "0.3", "STREAM_PORT": str(free_port()),
             "STREAM_WS_PORT": str(free_port())}, timeout=120,
    )
    assert result.returncode != 0
    assert "--model base" in result.stderr and "'ko'" in result.stderr


def test_idle_connection_is_closed_with_a_log_line(manifest):
    with ServerProcess(["--tcp-port", str(free_port()), "--idle-timeout", "1.5"]) as proc:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=30) as sock:
            sock.sendall(pcm_of(manifest, "en/ljspeech_LJ001-0002.wav"))
            received = b""
            while part := sock.recv(65536):  # the server finishes the session and closes
                received += part
        assert "modern" in received.decode().lower()
        time.sleep(0.2)
        assert "idle for 1.5 s" in proc.text


def test_client_ctrl_c_sends_what_it_has_and_prints_the_last_lines(server, manifest):
    import signal

    client = subprocess.Popen(
        [*WOASR, "client", "--port", str(server.port), "--file", str(manifest[JFK].path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(5.0)  # "And so my fellow Americans, ask not" has been spoken by now
    client.send_signal(signal.SIGINT)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    text = normalize_text(transcript(out.splitlines()))
    assert "fellow americans" in text, out
    assert "for your country" not in text  # it stopped early, and said what it had


def test_an_auth_line_sent_to_a_server_without_auth_is_not_taken_for_audio(server, manifest):
    """A client configured with a token (9 bytes: odd) must not shift every sample of its stream."""
    from woasr.protocol.tcp import encode_auth

    lines = stream(server.port, encode_auth("tok") + pcm_of(manifest, JFK))
    assert count_errors(manifest[JFK].reference, transcript(lines)).rate < 0.2, lines
    assert "ignored its AUTH line" in server.text
