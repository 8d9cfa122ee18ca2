"""The measuring tools end to end: `woasr simulate`, `woasr eval` and `woasr bench` write what they promise."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.servers import ROOT, WOASR

pytestmark = pytest.mark.model


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*WOASR, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


def test_simulate_prints_the_ufal_line_format_and_json(audio_dir):
    clip = str(ROOT / "examples" / "jfk_inaugural_1961.wav")
    lines = run("simulate", clip, "--min-chunk", "1.0").stdout.splitlines()
    emission, beg, end, _ = lines[0].split(" ", 3)
    assert float(emission) > 0 and int(beg) <= int(end)
    assert lines[-1].lower().rstrip(".").endswith("country")
    events = [json.loads(line) for line in run("simulate", clip, "--json").stdout.splitlines()]
    assert events[-1]["final"] and {"emission_ms", "compute_ms", "committed", "partial"} <= set(events[0])


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


def test_bench_runs_concurrent_tcp_streams(audio_dir, tmp_path):
    out = tmp_path / "bench.json"
    run("bench", "--manifest", str(audio_dir / "manifest.tsv"), "--streams", "1,2", "--seconds", "6",
        "--json", str(out))
    report = json.loads(out.read_text())
    assert [r["streams"] for r in report["runs"]] == [1, 2]
    for r in report["runs"]:
        assert {"latency_ms", "partial_latency_ms", "wer", "refused", "cpu_percent", "rss_mb"} <= set(r)
        assert r["refused"] == 0 and r["wer"] < 0.3 and r["latency_ms"]["p50"] > 0
    assert "max_streams_p95_under_2s" in report


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
