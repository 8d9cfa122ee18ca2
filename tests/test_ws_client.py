"""`woasr client --ws` against a real server: output format, partials on a terminal, lossless reconnect."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from woasr.audio_io import load_audio
from woasr.tools.textnorm import count_errors, normalize_text

from tests.servers import ROOT, WOASR, ServerProcess, free_port, line_text, parse_lines

pytestmark = pytest.mark.model

JFK = "en/jfk_inaugural_1961.wav"
LONG = ["en/ljspeech_LJ001-0001.wav", "en/ljspeech_LJ001-0003.wav"]


def server_args(ws_port: int) -> list[str]:
    return ["--tcp-port", "0", "--ws-port", str(ws_port), "--min-chunk", "0.5"]


def assert_times_increase(lines: list[tuple[int, int, str]]) -> None:
    assert all(beg <= end for beg, end, _ in lines), lines
    assert all(a[1] <= b[0] + 50 for a, b in zip(lines, lines[1:])), [
        (a, b) for a, b in zip(lines, lines[1:]) if a[1] > b[0] + 50]


@pytest.fixture(scope="module")
def server():
    with ServerProcess(server_args(free_port())) as proc:
        yield proc
        assert proc.alive(), proc.text


def test_file_client_prints_final_lines(server, manifest):
    result = subprocess.run([*WOASR, "client", "--ws", server.ws_url + "/", "--file", str(manifest[JFK].path),
                             "--fast"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = parse_lines(result.stdout)  # every stdout line is a final: the TCP client's format
    assert lines and normalize_text(" ".join(t for _, _, t in lines)).endswith("for your country")
    assert_times_increase(lines)
    assert "\x1b" not in result.stdout  # not a terminal: no partials drawn


def test_ctrl_c_sends_what_was_captured_and_prints_the_last_lines(server, manifest):
    client = subprocess.Popen([*WOASR, "client", "--ws", server.ws_url, "--file", str(manifest[JFK].path)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(5.0)  # "And so my fellow Americans, ask not" has been spoken by now
    client.send_signal(signal.SIGINT)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    text = normalize_text(line_text(out))
    assert "fellow americans" in text, out
    assert "for your country" not in text  # it stopped early, and said what it had


def test_partials_are_drawn_in_place_on_a_terminal(server, manifest):
    leader, follower = pty.openpty()
    client = subprocess.Popen([*WOASR, "client", "--ws", server.ws_url, "--file", str(manifest[JFK].path)],
                              cwd=ROOT, stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    screen = b""
    try:
        while chunk := _read(leader):
            screen += chunk
    finally:
        os.close(leader)
        client.wait(timeout=60)
    text = screen.decode()
    assert client.returncode == 0
    assert "\r\x1b[2K\x1b[90m" in text, text  # a grey partial drawn over the last line
    # Each partial is erased before its final is printed: what is left after the last erase is the final.
    finals = [line.rsplit("\x1b[2K", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
    lines = parse_lines("\n".join(line for line in finals if line.strip()))
    assert normalize_text(" ".join(t for _, _, t in lines)).endswith("for your country")


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the client exited and closed the terminal
        return b""


def test_reconnect_resends_uncommitted_audio_and_times_go_on(manifest, tmp_path):
    """The server is restarted mid-clip: the transcript is whole and its times do not restart at 0."""
    clip = tmp_path / "two.wav"
    audio = [load_audio(manifest[name].path) for name in LONG]
    sf.write(clip, np.concatenate([audio[0], np.zeros(8000, np.float32), audio[1]]), 16000)
    reference = " ".join(manifest[name].reference for name in LONG)
    ws_port = free_port()
    first = ServerProcess(server_args(ws_port)).start()
    client = subprocess.Popen(
        [*WOASR, "client", "--ws", f"ws://127.0.0.1:{ws_port}/", "--file", str(clip), "--backoff", "0.2",
         "--backoff-cap", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(6.0)
        first.stop()
        with ServerProcess(server_args(ws_port)) as second:
            out, err = client.communicate(timeout=120)
            second_log = second.stop()
    finally:
        client.kill()
    assert client.returncode == 0, err
    assert "reconnecting" in err or "cannot connect" in err, err
    assert "could not resume" in err, err  # a restarted server holds no session: a new one, losslessly
    assert "session ws-1 end" in second_log  # the rest went to a new session
    lines = parse_lines(out)
    assert_times_increase(lines)
    assert lines[-1][1] > 15000, out  # times continue from the first session's
    words = normalize_text(" ".join(t for _, _, t in lines)).split()
    assert count_errors(reference, " ".join(words)).rate < 0.15, out
    assert len(words) <= len(normalize_text(reference).split()) + 2, out  # little duplication
