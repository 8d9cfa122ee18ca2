"""The measuring tools end to end: `woasr simulate`, `woasr eval` and `woasr bench` write what they promise.

Plus, without a model, how the bench tells a refusal over capacity from an error.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest
from websockets.asyncio.server import serve

from woasr.clients.tcp_client import TcpConnection
from woasr.clients.ws_client import WsConnection
from woasr.core.audio import SAMPLE_RATE
from woasr.tools.bench import ClientResult, Playlist, ServerUnderTest, Timings, is_refusal, run_client, settle

from tests.servers import ROOT, WOASR


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*WOASR, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.model
def test_simulate_prints_the_ufal_line_format_and_json(audio_dir):
    clip = str(ROOT / "examples" / "jfk_inaugural_1961.wav")
    lines = run("simulate", clip, "--min-chunk", "1.0").stdout.splitlines()
    emission, beg, end, _ = lines[0].split(" ", 3)
    assert float(emission) > 0 and int(beg) <= int(end)
    assert lines[-1].lower().rstrip(".").endswith("country")
    events = [json.loads(line) for line in run("simulate", clip, "--json").stdout.splitlines()]
    assert events[-1]["final"] and {"emission_ms", "compute_ms", "committed", "partial"} <= set(events[0])


@pytest.mark.model
def test_eval_writes_the_documented_keys(audio_dir, tmp_path):
    out = tmp_path / "eval.json"
    table = run("eval", "--manifest", str(audio_dir / "manifest.tsv"), "--glob", "en/ljspeech_LJ001-000[12].wav",
                "--min-chunk", "1.0", "--json", str(out)).stdout
    report = json.loads(out.read_text())
    assert {"model", "min_chunk_s", "n_clips", "audio_s", "wer_streaming", "wer_offline", "latency_ms",
            "partial_latency_ms", "rtf", "peak_rss_mb", "clips"} <= set(report)
    assert set(report["latency_ms"]) == {"p50", "p95", "max"} and set(report["partial_latency_ms"]) == {"p50", "p95"}
    assert report["model"] == "tiny.en" and report["n_clips"] == 2
    assert report["wer_streaming"] < 0.2 and report["latency_ms"]["p50"] > 0
    assert "| tiny.en |" in table


@pytest.mark.model
def test_bench_runs_concurrent_tcp_streams(audio_dir, tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    run("bench", "--manifest", str(audio_dir / "manifest.tsv"), "--streams", "1,2", "--seconds", "6",
        "--json", str(out), "--plot", str(png))
    report = json.loads(out.read_text())
    assert [r["streams"] for r in report["runs"]] == [1, 2]
    for r in report["runs"]:
        assert {"latency_ms", "partial_latency_ms", "wer", "refused", "admitted", "cpu_percent", "rss_mb"} <= set(r)
        assert r["refused"] == 0 and r["admitted"] == r["streams"]
        assert r["wer"] < 0.3 and r["latency_ms"]["p50"] > 0  # stream 0 holds one whole referenced clip
        # A stream whose last clip was cut has no reference: its WER is against offline only.
        assert len(r["wer_per_stream"]) == r["streams"] and all(w is None or w < 0.5 for w in r["wer_per_stream"])
        # Scored against offline too, and against the same audio streamed alone (what load cost).
        assert r["wer_vs_offline"] < 0.3 and len(r["wer_vs_offline_per_stream"]) == r["streams"]
        assert r["max_wer_increase_vs_alone"] is not None and abs(r["max_wer_increase_vs_alone"]) < 0.2
        # Server CPU time per second of audio streamed: a loaded server's real cost, not zero, not absurd.
        assert 0.05 < r["core_seconds_per_audio_second"] < 3.0
    assert "max_streams_p95_under_2s" in report and report["model"] == "tiny.en"
    assert report["playlists"][0]["referenced"] and len(report["playlists"]) == 2
    assert all(p["wer_alone"] < 0.3 for p in report["playlists"])
    image = png.read_bytes()
    assert image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) > 10_000


@pytest.mark.model
def test_bench_runs_websocket_streams_with_partials(audio_dir, tmp_path):
    out = tmp_path / "bench.json"
    table = run("bench", "--manifest", str(audio_dir / "manifest.tsv"), "--transport", "ws", "--partials",
                "--streams", "1,2", "--seconds", "6", "--json", str(out)).stdout
    report = json.loads(out.read_text())
    assert report["transport"] == "ws" and report["partials"] is True
    assert {"server", "cpu_count", "runs", "max_streams_p95_under_2s"} <= set(report)
    assert [r["streams"] for r in report["runs"]] == [1, 2]
    for r in report["runs"]:
        assert {"latency_ms", "partial_latency_ms", "wer", "refused", "cpu_percent", "rss_mb",
                "audio_s_per_stream", "errors"} <= set(r)
        assert r["refused"] == 0 and not r["errors"] and r["wer"] < 0.3
        assert r["latency_ms"]["p50"] > 0
        assert isinstance(r["partial_latency_ms"]["p50"], float) and r["partial_latency_ms"]["p50"] > 0
    assert "| 2 |" in table


@pytest.mark.model
def test_bench_scores_a_manifest_without_references_against_offline(audio_dir, tmp_path):
    out = tmp_path / "bench.json"
    run("bench", "--playlist", f"{audio_dir}/unref/manifest.tsv:ibm_call_center_25s.wav", "--streams", "1",
        "--seconds", "8", "--json", str(out))
    report = json.loads(out.read_text())
    (only,) = report["runs"]
    assert only["wer"] is None and only["wer_per_stream"] == [None]  # nothing to compare with but offline
    assert only["wer_vs_offline"] is not None and only["wer_vs_offline"] < 0.4
    assert report["playlists"][0]["clips"] == ["ibm_call_center_25s.wav"]
    assert report["playlists"][0]["seconds"] == pytest.approx(8.5, abs=0.1)  # cut to 8 s, plus the gap


def test_bench_playlists_mix_the_sets_in_turn_and_cut_only_long_clips(audio_dir):
    from woasr.tools.bench import clip_set, default_sets, playlists

    sets = [clip_set(spec) for spec in default_sets(str(audio_dir))]
    assert {r.name.split("/")[0] for r in sets[0]} == {"en", "long"} and all(r.reference for r in sets[0])
    assert all(r.name.startswith("conv/") for r in sets[1]) and all(r.reference is None for r in sets[2])
    three = playlists(sets, 3, 20.0)
    first = sets[0][0]
    assert three[0].clips[:2] == (first.name, sets[1][0].name)  # one clip of each set in turn
    assert all(19.5 <= p.seconds <= 20.0 + 2 * first.seconds + 1 for p in three)
    assert three[0].reference is None  # the conversational clip was cut: no reference for the whole
    assert playlists(sets, 1, 20.0)[0].pcm == three[0].pcm  # stream k is the same audio in every run
    (whole,) = playlists([sets[0]], 1, 5.0)
    assert whole.clips == (first.name,) and whole.reference == first.reference  # short clips stay whole


async def tcp_client_reading(data: bytes) -> tuple[ClientResult, Timings]:
    """What a bench client makes of ``data`` from a TCP server, parsed by the TCP transport."""
    result = ClientResult()
    timings = Timings(result)
    timings.sent(SAMPLE_RATE * 2)  # 1 s of audio went out
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    await TcpConnection(reader, None, timings).receive()  # type: ignore[arg-type]  # receive never writes
    return result, timings


async def test_bench_counts_a_tcp_capacity_error_before_any_final_as_refused():
    result, timings = await tcp_client_reading(b"ERROR capacity 4 sessions open, the limit\n")
    assert result.refused and result.error is None and timings.refusal.is_set()
    assert settle(result, "the server closed the connection").error is None  # the close that follows is no error

    late, timings = await tcp_client_reading(b"0 900 Hello.\nERROR capacity full\n")
    assert not late.refused and late.error == "capacity full" and not timings.refusal.is_set()
    other, _ = await tcp_client_reading(b"ERROR internal boom\n")
    assert not other.refused and other.error == "internal boom"


async def test_bench_counts_a_websocket_capacity_error_or_close_1013_as_refused():
    result = ClientResult()
    timings = Timings(result)
    WsConnection(None, timings)._dispatch(  # type: ignore[arg-type]  # dispatching never touches the socket
        json.dumps({"type": "error", "code": "capacity", "message": "4 sessions open, the limit"}))
    assert result.refused and result.error is None and timings.refusal.is_set()

    closed = settle(ClientResult(), "the server closed with 1013 try again later", close_code=1013)
    assert closed.refused and closed.error is None
    late = settle(ClientResult(latencies=[0.4], text=["Hello."]), "the server closed with 1013", close_code=1013)
    assert not late.refused and late.error == "the server closed with 1013"
    finished = settle(ClientResult(latencies=[0.4], text=["Hello."]), close_code=1000)
    assert not finished.refused and finished.error is None
    assert is_refusal(error_code="capacity") and is_refusal(close_code=1013)
    assert not is_refusal(error_code="internal") and not is_refusal(close_code=1011)


SILENCE = Playlist(bytes(5 * SAMPLE_RATE * 2), "", "en")
"""5 s of audio: a client that streamed it all took 5 s."""


async def test_a_refused_tcp_bench_client_stops_at_once_without_retrying():
    connections = 0

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.write(b"ERROR capacity 1 session open, the limit\n")  # and keep the connection open
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with ServerUnderTest(f"tcp://127.0.0.1:{port}", []) as target:
            started = time.monotonic()
            result = await run_client(target, SILENCE)
    assert result.refused and result.error is None and not result.text
    assert time.monotonic() - started < 1.0 and connections == 1


@pytest.mark.parametrize("send_error", [True, False], ids=["error-and-1013", "1013-only"])
async def test_a_refused_websocket_bench_client_stops_at_once_without_retrying(send_error):
    connections = 0

    async def refuse(ws) -> None:
        nonlocal connections
        connections += 1
        if send_error:
            await ws.send(json.dumps({"type": "error", "code": "capacity", "message": "1 session open"}))
        await ws.close(1013, "try again later")

    async with serve(refuse, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        # Entered in a thread: it asks the server's /readyz for the model, and the server runs on this loop.
        target = await asyncio.to_thread(ServerUnderTest(f"ws://127.0.0.1:{port}/", [], partials=True).__enter__)
        started = time.monotonic()
        result = await run_client(target, SILENCE)
    assert result.refused and result.error is None and not result.text
    assert time.monotonic() - started < 1.0 and connections == 1


@pytest.mark.model
def test_bench_soak_loops_sessions_and_samples_the_server_rss(tmp_path):
    import math

    out, png = tmp_path / "soak.json", tmp_path / "soak.png"
    started = time.monotonic()
    table = run("bench", "--soak", "20", "--streams", "2", "--seconds", "10", "--no-baselines", "--json", str(out),
                "--plot", str(png), timeout=120).stdout
    report = json.loads(out.read_text())
    assert {"soak_seconds", "rss_samples", "rss_slope_mb_per_hour", "rss_start_mb", "rss_end_mb", "rss_warmup_s",
            "sessions_completed", "sessions_refused", "sessions_failed", "errors", "latency_ms"} <= set(report)
    assert "runs" not in report and report["streams"] == 2 and report["soak_seconds"] == 20
    assert report["errors"] == [] and report["sessions_refused"] == report["sessions_failed"] == 0
    assert report["sessions_completed"] > 2  # each stream looped: sessions ended and new ones began
    assert 20 <= report["soak_elapsed_s"] < 30 and time.monotonic() - started < 60
    times = [t for t, _ in report["rss_samples"]]
    assert len(times) >= 15 and times[0] == 0 and times[-1] >= 20
    assert all(0.5 < b - a < 2 for a, b in zip(times[:-2], times[1:-1]))  # every second (the last: at the end)
    assert math.isfinite(report["rss_slope_mb_per_hour"]) and report["rss_warmup_s"] == 10
    assert 0 < report["rss_start_mb"] <= report["rss_peak_mb"] and report["rss_end_mb"] > 0
    assert report["latency_ms"]["p50"] > 0 and report["latency_ms"]["p95"] >= report["latency_ms"]["p50"]
    assert "| 2 |" in table and "RSS slope" in table
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_rss_slope_fits_the_samples_after_the_warmup_in_mb_per_hour():
    from woasr.tools.bench import rss_slope, soak_warmup

    warming = [(t, 100.0 + t) for t in range(0, 60, 5)]  # fast growth while warming up
    steady = [(t, 300.0 + 0.01 * t) for t in range(60, 600, 5)]  # 0.01 MB/s = 36 MB/h
    assert rss_slope(warming + steady, warmup_s=60) == pytest.approx(36.0)
    assert rss_slope(warming + steady) > 100  # the warm-up, kept, would dominate
    assert rss_slope([(t, 250.0) for t in range(10)]) == 0.0
    assert rss_slope([[0, 1.0], [3600, 0.0]]) == pytest.approx(-1.0)  # the report's [t, mb] lists work too
    assert rss_slope([(5.0, 200.0)]) is None and rss_slope([]) is None
    assert rss_slope([(1.0, 200.0), (1.0, 210.0)]) is None  # no time between them: no slope
    assert rss_slope(steady, warmup_s=1000) is None
    assert (soak_warmup(20), soak_warmup(300), soak_warmup(1800)) == (10, 60, 180)
    assert (soak_warmup(300, loop_s=77.5), soak_warmup(20, loop_s=10.5)) == (77.5, 10)  # a whole loop, at most half


def test_a_soak_of_a_server_the_bench_did_not_start_has_no_rss_figures():
    from woasr.tools.bench import SoakRun, soak_figures

    finished = ClientResult(latencies=[0.5, 0.7], text=["Hello."])
    figures = soak_figures(SoakRun([(10.0, finished), (3.0, ClientResult(error="boom"))], None, 20.5, None), 20)
    assert all(figures[k] is None for k in ("rss_samples", "rss_slope_mb_per_hour", "rss_start_mb", "rss_end_mb",
                                            "cpu_percent"))
    assert figures["sessions_completed"] == figures["sessions_failed"] == 1 and figures["errors"] == ["boom"]
    assert figures["latency_ms"]["p50"] == 600.0 and figures["audio_s_streamed"] == 13.0


async def test_a_soak_session_that_never_ends_fails_and_the_soak_still_ends(monkeypatch):
    from woasr.tools import bench

    monkeypatch.setattr(bench, "SOAK_SESSION_GRACE_S", 0.5)

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the audio and the end, answers nothing
        await asyncio.sleep(30)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with ServerUnderTest(f"tcp://127.0.0.1:{port}", []) as target:
            loop = asyncio.get_running_loop()
            sessions: list = []
            clip = Playlist(bytes(int(1.5 * SAMPLE_RATE) * 2), "", "en")
            await bench.soak_stream(target, clip, clip.seconds, loop.time() + 2.0, sessions)
    ((seconds, result),) = sessions  # 1.5 s of audio, 0.5 s of grace, 1 s to wait: past the deadline
    assert seconds == 1.5 and "had not ended 0.5 s after its audio" in result.error and not result.refused
