"""The hosted APIs' streaming protocols, spoken to by their official SDKs on loopback:
``deepgram-sdk`` on ``/v1/listen`` and ``openai``'s realtime client on ``/v1/realtime``.

Real speech, a real server with authentication on. The SDKs parse leniently, so every message
is also validated against the SDK's own typed model: a missing required field fails here
instead of in a typed client later. Raw WebSocket tests cover the error paths.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
import soxr
import websockets

from tests.servers import ServerProcess, free_port
from woasr.audio_io import load_audio
from woasr.clients.sources import to_pcm16
from woasr.tools.textnorm import count_errors, normalize_text

pytestmark = pytest.mark.model

TOKEN = "compat-token"
FIRST, SECOND = "en/ljspeech_LJ001-0001.wav", "en/ljspeech_LJ001-0002.wav"
BLOCK_S = 0.1
PACE = 2.0
"""Audio is sent this many times faster than real time."""


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--tcp-port", "0", "--ws-port", str(free_port()), "--min-chunk", "0.5"],
                       env={"STREAM_TOKEN": TOKEN}) as proc:
        yield proc
        assert proc.alive(), proc.text


def pcm(manifest, name: str, rate: int = 16000) -> bytes:
    audio = load_audio(manifest[name].path)
    return to_pcm16(audio if rate == 16000 else soxr.resample(audio, 16000, rate))


def silence(seconds: float, rate: int = 16000) -> bytes:
    return bytes(2 * round(seconds * rate))


def blocks(data: bytes, rate: int = 16000):
    size = 2 * round(BLOCK_S * rate)
    for start in range(0, len(data), size):
        yield data[start:start + size]


# -- Deepgram ----------------------------------------------------------------------------------


def deepgram_models():
    from deepgram.listen.v1.types import (
        ListenV1ConfigureSuccess,
        ListenV1Error,
        ListenV1Metadata,
        ListenV1Results,
        ListenV1SpeechStarted,
        ListenV1UtteranceEnd,
    )

    return {"Results": ListenV1Results, "Metadata": ListenV1Metadata, "SpeechStarted": ListenV1SpeechStarted,
            "UtteranceEnd": ListenV1UtteranceEnd, "Error": ListenV1Error, "ConfigureSuccess": ListenV1ConfigureSuccess}


def strictly(models: dict, message) -> dict:
    """The message as the SDK parsed it, validated again against the SDK's typed model (required
    fields and types); returned as a dict."""
    data = message.model_dump(exclude_unset=True)
    models[data["type"]].model_validate(data)
    return data


def test_deepgram_sdk_streams_interim_and_final_results_finalize_keepalive_and_close(server, manifest):
    from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
    from deepgram.core.events import EventType
    from deepgram.listen.v1.types import ListenV1Configure

    http, ws = server.http_url, server.ws_url
    client = AsyncDeepgramClient(api_key=TOKEN, environment=DeepgramClientEnvironment(
        base=http, production=ws, agent=ws, agent_rest=http))
    models = deepgram_models()
    received: list[tuple[float, dict]] = []
    sent: dict[str, float] = {}
    rate = 24000  # not 16 kHz: the server resamples

    async def run() -> None:
        async with client.listen.v1.connect(
                model="nova-3", encoding="linear16", sample_rate=str(rate), channels="1", interim_results="true",
                punctuate="true", smart_format="true", utterance_end_ms="1000", vad_events="true",
                endpointing="500", keyterm="Exhibition") as socket:
            socket.on(EventType.MESSAGE, lambda m: received.append((time.monotonic(), strictly(models, m))))
            listening = asyncio.create_task(socket.start_listening())
            for block in blocks(pcm(manifest, FIRST, rate) + silence(1.5, rate), rate):
                await socket.send_media(block)
                await asyncio.sleep(BLOCK_S / PACE)
            await socket.send_keep_alive()
            await socket.send_configure(ListenV1Configure(type="Configure", keyterms=["Gutenberg", "movable types"]))
            second = pcm(manifest, SECOND, rate)
            for block in blocks(second[: len(second) // 2], rate):
                await socket.send_media(block)
                await asyncio.sleep(BLOCK_S / PACE)
            sent["finalize"] = time.monotonic()
            await socket.send_finalize()
            for block in blocks(second[len(second) // 2:] + silence(0.5, rate), rate):
                await socket.send_media(block)
                await asyncio.sleep(BLOCK_S / PACE)
            sent["close"] = time.monotonic()
            await socket.send_close_stream()
            await asyncio.wait_for(listening, 60)

    asyncio.run(run())
    kinds = [m["type"] for _, m in received]
    assert kinds[-1] == "Metadata" and kinds.count("Metadata") == 1, kinds
    assert {"Results", "SpeechStarted", "UtteranceEnd", "ConfigureSuccess"} <= set(kinds), kinds
    assert "Error" not in kinds, kinds  # KeepAlive and Configure were understood
    results = [m for _, m in received if m["type"] == "Results"]
    finals = [m for m in results if m["is_final"]]
    assert any(not m["is_final"] for m in results), "no interim results"
    # Finals tile the stream, and the words of each lie inside its window, in order.
    for before, after in zip(finals, finals[1:], strict=False):
        assert abs(before["start"] + before["duration"] - after["start"]) < 0.002
    words = [w for m in finals for w in m["channel"]["alternatives"][0]["words"]]
    assert all(a["end"] <= b["start"] + 0.05 for a, b in zip(words, words[1:], strict=False))
    assert all(0 < w["confidence"] <= 1 and w["punctuated_word"] for w in words)
    # Speech ends: a final with speech_final, then UtteranceEnd at its last word's end.
    ends = [i for i, k in enumerate(kinds) if k == "UtteranceEnd"]
    first_end = received[ends[0]][1]
    spoken = [m for _, m in received[: ends[0]] if m["type"] == "Results" and m["is_final"]]
    assert spoken[-1]["speech_final"], spoken[-1]  # (an empty final when its words went out earlier)
    last_words = [m["channel"]["alternatives"][0]["words"] for m in spoken if m["channel"]["alternatives"][0]["words"]]
    assert abs(last_words[-1][-1]["end"] - first_end["last_word_end"]) < 0.002
    # Finalize: the words so far come back at once, marked from_finalize, before the rest.
    finalized = [(t, m) for t, m in received if m["type"] == "Results" and m.get("from_finalize")]
    assert finalized and sent["finalize"] < finalized[0][0] < sent["close"], finalized
    transcript = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in finals)
    reference = f"{manifest[FIRST].reference} {manifest[SECOND].reference}"
    error = count_errors(reference, transcript).rate
    print(f"deepgram sdk: WER {error:.3f}, {len(finals)} finals, kinds {sorted(set(kinds))}")
    assert error < 0.2, transcript
    assert received[-1][1]["duration"] == pytest.approx(
        (len(pcm(manifest, FIRST, rate)) + len(pcm(manifest, SECOND, rate))) / 2 / rate + 2.0, abs=0.01)


async def _raw(url: str, messages: list, headers: dict | None = None, wait: float = 2.0) -> tuple[list, int | None]:
    """Send ``messages`` (bytes or text) on a raw socket; (JSON replies, close code) after ``wait`` s
    or the close."""
    replies = []
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        try:
            for message in messages:
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass  # the server closed first (e.g. no token): what it said is still there to read
        try:
            while True:
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), wait)))
        except (TimeoutError, websockets.ConnectionClosed):
            pass
        return replies, ws.close_code


def test_deepgram_error_paths_on_a_raw_socket(server):
    listen = server.ws_url + "/v1/listen"
    auth = {"Authorization": f"Token {TOKEN}"}

    async def run():
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(listen + "?encoding=opus", additional_headers=auth)
        assert refused.value.response.status_code == 400
        assert b"linear16" in refused.value.response.body
        with pytest.raises(websockets.InvalidStatus) as stereo:
            await websockets.connect(listen + "?channels=2", additional_headers=auth)
        assert stereo.value.response.status_code == 400
        replies, _ = await _raw(listen, ["not json", '{"type":"Dance"}', '{"type":"config","partials":true}',
                                         '{"type":"CloseStream"}'], auth)
        assert [r["type"] for r in replies] == ["Error", "Error", "Error", "Metadata"], replies
        assert replies[0]["variant"] == "SchemaError" and "moved to / and /v1/stream" in replies[2]["description"]
        replies, code = await _raw(listen, ['{"type":"CloseStream"}'])  # no token
        assert code == 1008 and replies[0]["type"] == "Error", replies

    asyncio.run(run())


# -- OpenAI Realtime ---------------------------------------------------------------------------


def realtime_event_adapter():
    from openai.types.realtime.realtime_server_event import RealtimeServerEvent
    from pydantic import TypeAdapter

    return TypeAdapter(RealtimeServerEvent)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_openai_realtime_transcription_with_server_vad_deltas_and_completed(server, manifest):
    from openai import AsyncOpenAI

    adapter = realtime_event_adapter()
    client = AsyncOpenAI(api_key=TOKEN, base_url=server.http_url + "/v1")
    events: list[dict] = []

    async def run() -> None:
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
            await connection.session.update(session={
                "type": "transcription",
                "audio": {"input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": "Exhibition"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                       "silence_duration_ms": 600},
                }},
            })
            audio = pcm(manifest, FIRST, 24000) + silence(1.5, 24000) + pcm(manifest, SECOND, 24000) + silence(
                1.5, 24000)

            async def send() -> None:
                for block in blocks(audio, 24000):
                    await connection.input_audio_buffer.append(audio=b64(block))
                    await asyncio.sleep(BLOCK_S / PACE)

            sending = asyncio.create_task(send())
            completed = 0
            async for event in connection:
                data = event.model_dump(exclude_unset=True)
                adapter.validate_python(data)
                events.append(data)
                completed += data["type"] == "conversation.item.input_audio_transcription.completed"
                if completed == 2:
                    break
            await sending

    asyncio.run(asyncio.wait_for(run(), 120))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["session.created", "session.updated"], kinds
    updated = events[1]["session"]["audio"]["input"]
    assert updated["turn_detection"]["silence_duration_ms"] == 600
    assert updated["transcription"]["prompt"] == "Exhibition"
    turns: dict[str, list[str]] = {}
    for event in events[2:]:
        turns.setdefault(event.get("item_id"), []).append(event["type"])
    items = [item for item in turns if item]
    assert len(items) == 2, turns
    for item in items:  # each turn in order: started, deltas, stopped, committed, completed
        order = [k.rsplit(".", 1)[-1] for k in turns[item]]
        assert order[0] == "speech_started" and order[-3:] == ["speech_stopped", "committed", "completed"], order
        assert "delta" in order
    completed = [e for e in events if e["type"].endswith("transcription.completed")]
    deltas = {item: "".join(e["delta"] for e in events if e["type"].endswith(".delta") and e["item_id"] == item)
              for item in items}
    for done in completed:
        assert done["transcript"] == deltas[done["item_id"]] and done["usage"]["type"] == "duration"
        assert done["usage"]["seconds"] > 1
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert committed[1]["previous_item_id"] == committed[0]["item_id"]
    for done, name in zip(completed, (FIRST, SECOND), strict=True):
        error = count_errors(manifest[name].reference, done["transcript"]).rate
        print(f"openai realtime: {name} WER {error:.3f}")
        assert error < 0.2, done


def test_openai_realtime_manual_commit_and_clear(server, manifest):
    """Without turn detection a turn ends at commit; clear discards what was not committed."""
    from openai import AsyncOpenAI

    adapter = realtime_event_adapter()
    client = AsyncOpenAI(api_key=TOKEN, base_url=server.http_url + "/v1")
    events: list[dict] = []

    async def until(connection, kind: str) -> dict:
        async for event in connection:
            data = event.model_dump(exclude_unset=True)
            adapter.validate_python(data)
            events.append(data)
            if data["type"] == kind:
                return data
        raise AssertionError(f"closed before {kind}")

    async def run() -> tuple[dict, dict]:
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
            await connection.session.update(session={"type": "transcription", "audio": {"input": {
                "transcription": {"language": "en"}, "turn_detection": None}},
                "include": ["item.input_audio_transcription.logprobs"]})
            await until(connection, "session.updated")
            for block in blocks(pcm(manifest, FIRST, 24000), 24000):
                await connection.input_audio_buffer.append(audio=b64(block))
            await connection.input_audio_buffer.commit()
            first = await until(connection, "conversation.item.input_audio_transcription.completed")
            # Mid-stream, the transcription settings change for what comes next.
            await connection.session.update(session={"type": "transcription", "audio": {"input": {
                "transcription": {"language": "en", "prompt": "Printing, comparatively."}, "turn_detection": None}}})
            changed = await until(connection, "session.updated")
            assert changed["session"]["audio"]["input"]["transcription"]["prompt"] == "Printing, comparatively."
            # Audio that is cleared before a commit is never transcribed.
            for block in blocks(pcm(manifest, "en/jfk_inaugural_1961.wav", 24000), 24000):
                await connection.input_audio_buffer.append(audio=b64(block))
            await connection.input_audio_buffer.clear()
            await until(connection, "input_audio_buffer.cleared")
            for block in blocks(pcm(manifest, SECOND, 24000), 24000):
                await connection.input_audio_buffer.append(audio=b64(block))
            await connection.input_audio_buffer.commit()
            second = await until(connection, "conversation.item.input_audio_transcription.completed")
            return first, second

    first, second = asyncio.run(asyncio.wait_for(run(), 120))
    assert count_errors(manifest[FIRST].reference, first["transcript"]).rate < 0.2, first
    assert count_errors(manifest[SECOND].reference, second["transcript"]).rate < 0.2, second
    deltas = [e for e in events if e["type"].endswith(".delta")]
    assert deltas and all(e["logprobs"] and all(p["logprob"] <= 0 for p in e["logprobs"]) for e in deltas)
    text = normalize_text(" ".join(e.get("delta", "") for e in events))
    assert "country" not in text and "americans" not in text, text  # the cleared JFK clip


def test_openai_realtime_error_paths_on_a_raw_socket(server):
    url = server.ws_url + "/v1/realtime?intent=transcription"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def run():
        replies, _ = await _raw(url, ["not json", '{"type":"response.create"}',
                                      '{"type":"input_audio_buffer.append","audio":"***"}',
                                      json.dumps({"type": "session.update", "session": {"type": "transcription",
                                                  "audio": {"input": {"format": {"type": "audio/pcmu"}}}}}),
                                      json.dumps({"type": "session.update", "session": {"type": "realtime"}})], auth)
        adapter = realtime_event_adapter()
        for reply in replies:
            adapter.validate_python(reply)
        assert [r["type"] for r in replies] == ["session.created"] + ["error"] * 5, replies
        assert "transcription sessions only" in replies[-1]["error"]["message"]
        replies, code = await _raw(url, [])  # no token
        assert code == 1008 and replies[0]["type"] == "error", replies

    asyncio.run(run())


def test_a_native_client_still_works_on_the_new_paths(server, manifest):
    async def run(path: str) -> str:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with websockets.connect(server.ws_url + path, additional_headers=headers) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            audio = pcm(manifest, FIRST)
            await ws.send(audio[:32000])
            await ws.send(json.dumps({"type": "config", "prompt": "Exhibition."}))  # mid-stream: allowed
            await ws.send(audio[32000:])
            await ws.send(json.dumps({"type": "close"}))
            messages = [json.loads(m) async for m in ws]
            configured = next(m for m in messages if m["type"] in ("configured", "error"))
            assert configured["type"] == "configured" and configured["settings"]["prompt"] == "Exhibition."
            return " ".join(m["text"] for m in messages if m["type"] == "final")

    for path in ("/", "/v1/stream"):
        text = asyncio.run(run(path))
        assert count_errors(manifest[FIRST].reference, text).rate < 0.2, text
