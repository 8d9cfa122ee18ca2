"""Session resume: a proxy cuts the WebSocket connection abruptly, again and again, while
``woasr client --ws`` streams a long real clip; the session goes on where it was.

The same client streams the same clip twice through a loopback proxy: once untouched, once with
the proxy resetting the connection (TCP RST, no close frame) at random moments. The second run
must resume the one server session after every cut, receive every final once (seq contiguous),
resend exactly the audio the server did not get, and print the same transcript.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
import websockets

from tests.proxy import CuttingProxy
from tests.servers import ROOT, WOASR, ServerProcess, free_port, parse_lines
from woasr.audio_io import load_audio
from woasr.tools.textnorm import count_errors, normalize_text

pytestmark = pytest.mark.model

CLIP = "long/ljspeech_en_long.wav"
SECONDS = 43  # a pause between two sentences of the clip
CUTS = 6


def stream_through_proxy(ws_port: int, clip: str, cuts: int, seed: int = 7) -> tuple[str, str, int]:
    """Run the client (paced as a live source) through a proxy that cuts ``cuts`` times, at random
    moments of a connection that has been up for a while; (stdout, stderr, cuts made)."""
    rng = random.Random(seed)
    with CuttingProxy(ws_port) as proxy:
        client = subprocess.Popen(
            [*WOASR, "client", "--ws", f"ws://127.0.0.1:{proxy.port}/", "--file", clip, "--backoff", "0.2",
             "--backoff-cap", "0.5"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            while proxy.cuts < cuts and client.poll() is None:
                time.sleep(rng.uniform(2.0, 5.0))
                if proxy.oldest_age() > 0.8:  # a connection that has had time to resume and send
                    proxy.cut()
            out, err = client.communicate(timeout=300)
        finally:
            client.kill()
    assert client.returncode == 0, err
    return out, err, proxy.cuts


def test_a_session_resumed_after_abrupt_cuts_gives_the_uninterrupted_transcript(manifest, audio_dir, tmp_path):
    clip = tmp_path / "clip.wav"
    audio = load_audio(manifest[CLIP].path)[: SECONDS * 16000]
    sf.write(clip, audio, 16000)
    segments = json.loads((audio_dir / CLIP.replace(".wav", ".segments.json")).read_text())["segments"]
    reference = " ".join(segment["text"] for segment in segments if segment["end_s"] <= SECONDS)
    ws_port = free_port()
    with ServerProcess(["--tcp-port", "0", "--ws-port", str(ws_port), "--min-chunk", "1.0"]) as server:
        whole, _, _ = stream_through_proxy(ws_port, str(clip), cuts=0)
        offset = len(server.text)
        out, err, cuts = stream_through_proxy(ws_port, str(clip), cuts=CUTS)
        log = server.text[offset:]
    print(err)
    assert cuts >= 5
    assert len(re.findall(r"resumed session ws-\d+", err)) >= 5, err
    assert "could not resume" not in err and "missing" not in err and "received again" not in err, err
    # One server session got all of the audio, exactly once; the sessions opened by the
    # reconnects were given up at once in its favour.
    ends = re.findall(r"session (ws-\d+) end .*\((.*)\) audio=([\d.]+)s", log)
    carried = [(sid, float(audio_s)) for sid, why, audio_s in ends if float(audio_s) > 0]
    assert carried == [(carried[0][0], SECONDS)], ends
    assert all("resumed" in why for _, why, audio_s in ends if float(audio_s) == 0), ends
    assert len(re.findall(rf"session {carried[0][0]} resumed", log)) >= 5, log
    lines = parse_lines(out)
    assert all(a[1] <= b[0] + 50 for a, b in zip(lines, lines[1:])), out  # no final twice, times go on
    resumed_words = normalize_text(" ".join(t for _, _, t in lines))
    whole_words = normalize_text(" ".join(t for _, _, t in parse_lines(whole)))
    difference = count_errors(whole_words, resumed_words).rate
    print(f"resumed vs uninterrupted: {difference:.3f} word difference, cuts={cuts}")
    # The same audio in the same session: only the update boundaries (timing) can differ.
    assert difference <= 0.05, (whole, out)
    assert count_errors(reference, resumed_words).rate < 0.25  # the clip's last words may be cut off


def test_a_resume_with_a_wrong_token_or_an_unknown_session_goes_on_as_a_new_session():
    async def run(port: int) -> None:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as first:
            ready = json.loads(await first.recv())
            assert ready["resume_token"] and ready["session_id"]
            await first.send(np.zeros(16000, np.int16).tobytes())
        for session_id, token in ((ready["session_id"], "wrong"), ("ws-999", ready["resume_token"])):
            async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send(json.dumps({"type": "resume", "session_id": session_id, "token": token,
                                          "last_seq": -1}))
                fresh = json.loads(await ws.recv())
                assert fresh["type"] == "ready" and fresh["session_id"] != ready["session_id"]
                failed = json.loads(await ws.recv())
                assert failed["type"] == "error" and failed["code"] == "resume_failed", failed
                await ws.send(json.dumps({"type": "close"}))  # the new session works as any other
                async for _ in ws:
                    pass
                assert ws.close_code == 1000
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.recv()
            await ws.send(np.zeros(1600, np.int16).tobytes())
            await ws.send(json.dumps({"type": "resume", "session_id": "x", "token": "y", "last_seq": 0}))
            late = json.loads(await ws.recv())
            assert late["code"] == "resume_failed" and "first message" in late["message"]

    with ServerProcess(["--tcp-port", "0", "--ws-port", str(free_port())]) as server:
        asyncio.run(run(server.ws_port))


def test_a_session_not_resumed_within_the_window_is_given_up():
    async def run(port: int) -> dict:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/")
        ready = json.loads(await ws.recv())
        await ws.send(np.zeros(8000, np.int16).tobytes())
        ws.transport.abort()  # dropped, no close frame
        await asyncio.sleep(2.5)
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as again:
            await again.send(json.dumps({"type": "resume", "session_id": ready["session_id"],
                                         "token": ready["resume_token"], "last_seq": -1}))
            await again.recv()
            return json.loads(await again.recv())

    with ServerProcess(["--tcp-port", "0", "--ws-port", str(free_port()), "--resume-window", "1"]) as server:
        answer = asyncio.run(run(server.ws_port))
        log = server.text
    assert answer["code"] == "resume_failed", answer
    assert "kept 1 s for a resume" in log and "(not resumed within 1 s:" in log, log
