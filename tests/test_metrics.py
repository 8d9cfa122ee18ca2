"""Latency monitoring: ServerMetrics' hooks, its exposition and log line, and a real server's endpoints."""

from __future__ import annotations

import time
import types

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from woasr.server.metrics import LATENCY_BUCKETS, ServerMetrics

from tests.servers import ServerProcess, free_port

FAMILIES = {
    "woasr_committed_latency_seconds": "histogram",
    "woasr_partial_latency_seconds": "histogram",
    "woasr_queue_wait_seconds": "histogram",
    "woasr_inference_seconds": "histogram",
    "woasr_effective_chunk_seconds": "histogram",
    "woasr_realtime_factor": "histogram",
    "woasr_active_sessions": "gauge",
    "woasr_refused_sessions": "counter",
    "woasr_updates": "counter",
    "woasr_committed_words": "counter",
    "woasr_session_committed_latency_p50_seconds": "gauge",
    "woasr_session_committed_latency_p95_seconds": "gauge",
    "woasr_session_lag_seconds": "gauge",
    "woasr_session_effective_chunk_seconds": "gauge",
}


def families_of(text: str) -> dict[str, str]:
    """Family name -> type, without the ``*_created`` timestamps prometheus-client adds."""
    return {f.name: f.type for f in text_string_to_metric_families(text) if not f.name.endswith("_created")}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def exposition(metrics: ServerMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def value(metrics: ServerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# -- ServerMetrics ----------------------------------------------------------------------


def test_fresh_metrics_expose_every_family_with_zero_sessions() -> None:
    text = exposition(ServerMetrics())
    assert families_of(text) == FAMILIES
    found = samples(text)
    assert found[("woasr_active_sessions", (("transport", "tcp"),))] == 0
    assert found[("woasr_active_sessions", (("transport", "ws"),))] == 0
    assert found[("woasr_committed_latency_seconds_count", ())] == 0
    assert not any(name.startswith("woasr_session_") for name, _ in found)


def test_each_service_has_its_own_registry() -> None:
    first, second = ServerMetrics(), ServerMetrics()  # the global registry would refuse the second
    first.observe_partial("ws-1", 0.4)
    assert value(first, "woasr_partial_latency_seconds_count") == 1
    assert value(second, "woasr_partial_latency_seconds_count") == 0


def test_hooks_fill_the_histograms() -> None:
    m = ServerMetrics()
    m.observe_update("tcp-1", queue_wait_s=0.0, inference_s=0.2, chunk_s=1.0)
    m.observe_update("tcp-1", queue_wait_s=0.3, inference_s=0.4, chunk_s=2.0)
    m.observe_update("tcp-1", queue_wait_s=0.0, inference_s=0.1, chunk_s=0.0)  # a flush without new audio
    m.observe_committed("tcp-1", [0.6, 0.9, 2.5])
    m.observe_committed("tcp-1", [])
    m.observe_partial("tcp-1", 0.3)
    found = samples(exposition(m))

    def sample(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    assert sample("woasr_updates_total") == 3
    assert sample("woasr_committed_words_total") == 3
    assert sample("woasr_committed_latency_seconds_count") == 3
    assert sample("woasr_committed_latency_seconds_sum") == pytest.approx(4.0)
    assert sample("woasr_committed_latency_seconds_bucket", le="0.5") == 0
    assert sample("woasr_committed_latency_seconds_bucket", le="1.0") == 2
    assert sample("woasr_committed_latency_seconds_bucket", le="3.0") == 3
    assert sample("woasr_committed_latency_seconds_bucket", le="+Inf") == 3
    assert sample("woasr_partial_latency_seconds_count") == 1
    assert sample("woasr_queue_wait_seconds_count") == 3
    assert sample("woasr_queue_wait_seconds_sum") == pytest.approx(0.3)
    assert sample("woasr_inference_seconds_sum") == pytest.approx(0.7)
    assert sample("woasr_effective_chunk_seconds_sum") == pytest.approx(3.0)
    assert sample("woasr_realtime_factor_count") == 2  # the call without audio has no real-time factor
    assert sample("woasr_realtime_factor_sum") == pytest.approx(0.4)
    assert sample("woasr_realtime_factor_bucket", le="0.2") == 2
    latency_buckets = {labels for name, labels in found if name == "woasr_committed_latency_seconds_bucket"}
    assert len(latency_buckets) == len(LATENCY_BUCKETS) + 1
    assert sample("woasr_session_committed_latency_p50_seconds", session="tcp-1") == pytest.approx(0.9)
    assert sample("woasr_session_committed_latency_p95_seconds", session="tcp-1") == pytest.approx(2.34)
    assert sample("woasr_session_lag_seconds", session="tcp-1") == pytest.approx(2.5)
    assert sample("woasr_session_effective_chunk_seconds", session="tcp-1") == 2.0  # the call without audio: kept


def test_sessions_by_transport_and_refusals() -> None:
    m = ServerMetrics()
    m.session_started("tcp")
    m.session_started("ws")
    m.session_started("ws")
    m.session_ended("ws")
    m.session_refused("ws", "draining")
    m.session_refused("tcp", "overloaded")
    m.session_refused("tcp", "overloaded")
    assert value(m, "woasr_active_sessions", transport="tcp") == 1
    assert value(m, "woasr_active_sessions", transport="ws") == 1
    assert value(m, "woasr_refused_sessions_total", transport="tcp", reason="overloaded") == 2
    assert value(m, "woasr_refused_sessions_total", transport="ws", reason="draining") == 1
    assert "active=2 (tcp=1 ws=1) refused=3 (total 3)" in m.summary()
    assert m.summary().endswith("active=2 (tcp=1 ws=1) refused=0 (total 3)")


def test_forget_session_removes_its_series() -> None:
    m = ServerMetrics()
    m.observe_committed("ws-1", [0.5])
    m.observe_committed("ws-2", [0.7, 0.8])
    assert 'session="ws-1"' in exposition(m)
    m.forget_session("ws-1")
    text = exposition(m)
    assert 'session="ws-1"' not in text
    assert 'woasr_session_lag_seconds{session="ws-2"} 0.8' in text
    assert value(m, "woasr_committed_latency_seconds_count") == 3  # the global histogram keeps them
    m.forget_session("ws-1")  # twice, or a session that never committed: no error
    m.forget_session("tcp-9")
    m.observe_committed("ws-1", [2.0])  # an id used again starts afresh
    assert value(m, "woasr_session_committed_latency_p50_seconds", session="ws-1") == 2.0


def test_summary_gives_percentiles_of_the_last_interval() -> None:
    m = ServerMetrics()
    assert "no updates" in m.summary()
    m.observe_committed("tcp-1", [k / 10 for k in range(1, 12)])  # 0.1 .. 1.1 s
    m.observe_committed("ws-1", [k / 10 for k in range(12, 22)])  # 1.2 .. 2.1 s
    for inference in (0.1, 0.2, 0.3):
        m.observe_update("tcp-1", queue_wait_s=0.01, inference_s=inference, chunk_s=0.5)
    m.observe_partial("ws-1", 0.25)
    line = m.summary()
    assert "updates=3 words=21" in line
    assert "committed p50=1100ms p95=2000ms" in line
    assert "partial p50=250ms p95=250ms" in line
    assert "queue_wait p50=10ms p95=10ms" in line
    assert "inference p50=200ms p95=290ms" in line
    assert "chunk p50=0.50s p95=0.50s" in line
    assert "rtf p50=0.40 p95=0.58" in line
    assert "active=0" in line
    assert "no updates" in m.summary()  # the next interval starts empty


def test_summary_marks_metrics_without_values() -> None:
    m = ServerMetrics()
    m.observe_update("tcp-1", queue_wait_s=0.0, inference_s=0.2, chunk_s=1.0)
    assert "partial p50=- p95=-" in m.summary()


def test_metrics_route_of_the_app() -> None:
    """In-process app over a stand-in service: GET /metrics is the registry's exposition."""
    from woasr.transports.web.app import create_app

    metrics = ServerMetrics()
    metrics.observe_committed("ws-1", [1.5])
    service = types.SimpleNamespace(ready=False, asr=None, active_sessions=0, draining=False, metrics=metrics)
    with TestClient(create_app(service)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert samples(response.text)[("woasr_committed_latency_seconds_count", ())] == 1


# -- a real server ----------------------------------------------------------------------


@pytest.mark.model
def test_real_server_exposes_metrics_and_logs_them() -> None:
    metrics_port = free_port()
    with ServerProcess(["--tcp-port", str(free_port()), "--ws-port", str(free_port()),
                        "--metrics-port", str(metrics_port), "--metrics-log-interval", "2"]) as server:
        assert f"listening metrics http://127.0.0.1:{metrics_port}/metrics" in server.text
        for url in (f"{server.http_url}/metrics", f"http://127.0.0.1:{metrics_port}/metrics"):
            response = httpx.get(url, timeout=10)
            assert response.status_code == 200, url
            assert response.headers["content-type"].startswith("text/plain; version=")
            assert families_of(response.text) == FAMILIES, url
            found = samples(response.text)
            assert found[("woasr_active_sessions", (("transport", "tcp"),))] == 0
            assert found[("woasr_active_sessions", (("transport", "ws"),))] == 0
            assert found[("woasr_updates_total", ())] == 0
        deadline = time.monotonic() + 15
        while "woasr.metrics:" not in server.text and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = [line for line in server.output if "woasr.metrics:" in line]
        assert lines, server.text
        assert "no updates" in lines[0] and "active=0 (tcp=0 ws=0)" in lines[0]
        assert server.alive(), server.text
        output = server.stop()
    assert server.proc.returncode == 0, output
    assert "stopped" in output


@pytest.mark.model
def test_metrics_follow_real_streams(manifest) -> None:
    """The runner reports every update: latencies, queue wait, inference, chunk, sessions."""
    import asyncio
    import json

    import websockets

    from woasr.audio_io import load_audio
    from woasr.clients.sources import to_pcm16

    pcm = to_pcm16(load_audio(manifest["en/jfk_inaugural_1961.wav"].path))
    with ServerProcess(["--tcp-port", str(free_port()), "--ws-port", str(free_port()), "--min-chunk", "0.5",
                        "--metrics-log-interval", "2"]) as server:
        url = f"{server.http_url}/metrics"

        async def stream() -> float:
            async with websockets.connect(server.ws_url) as ws:
                await ws.recv()
                await ws.send(json.dumps({"type": "config", "partials": True}))
                for i in range(0, len(pcm), 3200):
                    await ws.send(pcm[i : i + 3200])
                    await asyncio.sleep(0.03)
                active = samples(httpx.get(url, timeout=10).text)[("woasr_active_sessions", (("transport", "ws"),))]
                lag = [v for (name, _), v in samples(httpx.get(url, timeout=10).text).items()
                       if name == "woasr_session_lag_seconds"]
                assert lag and 0 < lag[0] < 10  # this session's newest committed word
                await ws.send(json.dumps({"type": "close"}))
                async for _ in ws:
                    pass
                return active

        assert asyncio.run(stream()) == 1
        found = samples(httpx.get(url, timeout=10).text)
        assert found[("woasr_active_sessions", (("transport", "ws"),))] == 0
        assert found[("woasr_updates_total", ())] >= 5
        assert found[("woasr_committed_words_total", ())] >= 15
        for family in ("committed_latency", "partial_latency", "queue_wait", "inference", "effective_chunk"):
            assert found[(f"woasr_{family}_seconds_count", ())] > 0, family
        assert found[("woasr_realtime_factor_count", ())] > 0
        # The chunk is at least --min-chunk (but the closing call, which has none of its own).
        assert found[("woasr_effective_chunk_seconds_bucket", (("le", "0.25"),))] <= 1
        assert not any(name == "woasr_session_lag_seconds" for name, _ in found)  # forgotten at the end
        deadline = time.monotonic() + 15
        while not any("committed p50=" in line and "words=" in line and "no updates" not in line
                      for line in server.output) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("committed p50=" in line and "no updates" not in line for line in server.output), server.text
