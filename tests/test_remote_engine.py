"""The remote engine's routing and failover, the call's wire format and the front-ends' bookkeeping,
with scripted Triton clients (no server, no model); tests/test_triton.py runs the real thing."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from woasr.asr.loaded import DecodeSettings
from woasr.clients.ws_client import with_port
from woasr.core.records import Segment, Transcription, TranscriptionRequest, Word
from woasr.engine.triton import DOWN_FOR_S, NoInstanceError, TritonEngine, parse_urls
from woasr.engine.triton_backend import describe_parameters
from woasr.engine.triton_model import HostedModel
from woasr.engine.wire import (CallOptions, request_from_tensors, request_tensors, transcription_from_json,
                               transcription_to_json)
from woasr.protocol.events import Error
from woasr.protocol.websocket import decode_server_message, encode_event
from woasr.server.access import origin_allowed
from woasr.server.frontends import Frontend

HEARD = Transcription((Segment(0.0, 1.2, (Word(0.1, 0.5, " Hello", 0.9), Word(0.6, 1.1, " 世界", 0.8)),
                               no_speech_prob=0.01, avg_logprob=-0.2, compression_ratio=1.1),), "en", True)


class Answer:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def as_numpy(self, name: str) -> np.ndarray:
        return np.array([self.data], dtype=object)


class ScriptedClient:
    """A Triton client that answers after ``delay`` seconds, or fails."""

    def __init__(self, delay: float = 0.0, fails: bool = False) -> None:
        self.delay, self.fails, self.calls = delay, fails, 0

    async def infer(self, model, inputs, outputs=None, client_timeout=None):
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fails:
            raise ConnectionError("[StatusCode.UNAVAILABLE] failed to connect to all addresses")
        return Answer(transcription_to_json(HEARD))


def engine_with(*clients: ScriptedClient) -> TritonEngine:
    engine = TritonEngine([f"127.0.0.1:{9000 + i}" for i in range(len(clients))], DecodeSettings())
    for instance, client in zip(engine.instances, clients, strict=True):
        instance.client, instance.healthy = client, True
    return engine


REQUEST = TranscriptionRequest(np.zeros(16000, np.float32), "prompt", "en", "prefix")


def test_a_call_and_its_answer_survive_the_wire():
    options = CallOptions(True, tuple(sorted(dataclasses.asdict(DecodeSettings(beam_size=2)).items())))
    request, decoded = request_from_tensors(request_tensors(REQUEST, options))
    assert (request.prompt, request.language, request.prefix) == ("prompt", "en", "prefix")
    assert np.array_equal(request.audio, REQUEST.audio) and decoded == options and hash(decoded)
    detect, _ = request_from_tensors(request_tensors(dataclasses.replace(REQUEST, language=None), options))
    assert detect.language is None
    assert transcription_from_json(transcription_to_json(HEARD)) == HEARD


async def test_calls_go_to_the_least_busy_instance():
    first, second = ScriptedClient(delay=0.05), ScriptedClient(delay=0.05)
    engine = engine_with(first, second)
    results = await asyncio.gather(engine.transcribe(REQUEST), engine.transcribe(REQUEST))
    assert (first.calls, second.calls) == (1, 1)
    assert all(r.transcription == HEARD for r in results)


async def test_a_failed_call_is_retried_once_on_another_instance_and_counted():
    dead, alive = ScriptedClient(fails=True), ScriptedClient()
    engine = engine_with(dead, alive)
    engine.instances[1].in_flight = 5  # the dead one looks less busy: it is tried first
    result = await engine.transcribe(REQUEST)
    assert result.transcription == HEARD and (dead.calls, alive.calls) == (1, 1)
    assert engine.metrics.failovers._value.get() == 1
    assert engine.metrics.errors.labels("127.0.0.1:9000")._value.get() == 1
    assert not engine.instances[0].healthy
    engine.instances[0].healthy = True  # a health check says ready: still no calls for DOWN_FOR_S
    engine.instances[1].in_flight = 0
    await engine.transcribe(REQUEST)
    assert dead.calls == 1 and DOWN_FOR_S > 1


async def test_no_instance_left_is_an_error_not_a_hang():
    engine = engine_with(ScriptedClient(fails=True), ScriptedClient(fails=True))
    with pytest.raises(NoInstanceError, match="failed on"):
        await engine.transcribe(REQUEST)
    with pytest.raises(NoInstanceError, match="no Triton instance is up"):
        await engine.transcribe(REQUEST)


def test_triton_urls_are_checked():
    assert parse_urls("a:1, b:8001") == ("a:1", "b:8001")
    for bad in ("", "a", "a:x", ":80", "a:70000"):
        with pytest.raises(ValueError):
            parse_urls(bad)


class Variants:
    """A loaded model's ``with_decode`` and ``offline``, recorded."""

    def __init__(self, steps: tuple[str, ...] = ()) -> None:
        self.steps = steps

    def with_decode(self, **changes):
        return Variants((*self.steps, f"decode beam={changes['beam_size']}"))

    def offline(self):
        return Variants((*self.steps, "offline"))


def test_the_model_server_decodes_a_whole_file_with_the_front_ends_settings_then_as_a_file():
    hosted = HostedModel(Variants())  # type: ignore[arg-type]
    settings = DecodeSettings(beam_size=3)
    assert CallOptions.of(settings, True).decode == tuple(sorted(dataclasses.asdict(settings).items()))
    assert hosted.variant(CallOptions.of(settings, True)).steps == ("decode beam=3", "offline")
    assert hosted.variant(CallOptions.of(settings)).steps == ("decode beam=3",)
    assert hosted.variant(CallOptions.of(settings, True)) is hosted.variant(CallOptions.of(settings, True))


@pytest.mark.parametrize(("parameters", "model", "english_only"), [
    ({"model": "tiny.en", "language": "en"}, "tiny.en", True),
    ({"language": "en"}, "tiny.en", True),  # no model: the language's default, as the loader picks it
    ({}, "base", False),
    ({"language": "de", "backend": "Whisper_Timestamped"}, "base", False),
])
def test_the_containers_info_model_names_what_its_whisper_model_loads(parameters, model, english_only):
    described = describe_parameters(parameters)
    assert (described["model"], described["english_only"]) == (model, english_only)
    assert (described["languages"] == ["en"]) == english_only
    assert described["backend"] == ("whisper-timestamped" if "backend" in parameters else "faster-whisper")


def test_front_ends_name_their_sessions_and_each_others_ports(monkeypatch):
    monkeypatch.setenv("WOASR_FRONTEND", "1/3")
    frontend = Frontend.from_env(43008)
    assert frontend is not None and frontend.own_ws_port == 43010 and frontend.session_prefix == "f1."
    assert frontend.owner_of("f2.ws-7") == 2 and frontend.owner_of("ws-7") is None
    assert frontend.owner_of("f3.ws-1") is None  # no such front-end
    error = Error("resume_failed", "elsewhere", resume_port=43009)
    assert decode_server_message(encode_event(error)) == error
    assert with_port("ws://127.0.0.1:43008/v1/stream?x=1", 43009) == "ws://127.0.0.1:43009/v1/stream?x=1"
    assert with_port("wss://[::1]:43008/", 43010) == "wss://[::1]:43010/"


def test_a_page_of_the_shared_port_may_resume_on_a_front_ends_own_port():
    assert origin_allowed("http://127.0.0.1:43008", "127.0.0.1:43010", (), page_port=43008)
    assert not origin_allowed("http://127.0.0.1:43008", "127.0.0.1:43010", ())
    assert not origin_allowed("http://evil.example:43008", "127.0.0.1:43010", (), page_port=43008)
    assert origin_allowed("http://[::1]:43008", "[::1]:43010", (), page_port=43008)
