"""``POST /v1/audio/transcriptions`` over real HTTP, with the real tiny.en model and real speech.

The server is ``woasr serve`` in a subprocess; the client is plain ``httpx``
sending the multipart form an OpenAI client sends.
"""

from __future__ import annotations

import io
import json
import re
import socket
import types

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
from starlette.testclient import TestClient
from websockets.sync.client import connect

from woasr.audio_io import load_audio
from woasr.tools.textnorm import count_errors

from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.model

JFK = "en/jfk_inaugural_1961.wav"
ENDPOINT = "/v1/audio/transcriptions"
MAX_WER = 0.2
CUE_TIME = r"(\d{2,}):(\d{2}):(\d{2})[,.](\d{3})"


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--tcp-port", "0", "--ws-port", str(free_port())]) as proc:
        yield proc
        assert proc.alive(), proc.text


@pytest.fixture(scope="module")
def jfk(manifest):
    row = manifest[JFK]
    return types.SimpleNamespace(data=row.path.read_bytes(), reference=row.reference, seconds=row.seconds,
                                 path=row.path)


def transcribe(server, data: bytes, filename: str = "clip.wav", **fields) -> httpx.Response:
    """The multipart request an OpenAI client makes (lists become repeated fields)."""
    return httpx.post(f"{server.http_url}{ENDPOINT}", files={"file": (filename, data)},
                      data={"model": "whisper-1", **fields}, timeout=120)


def wer(reference: str, text: str) -> float:
    return count_errors(reference, text).rate


def assert_openai_error(response: httpx.Response, status: int, param: str | None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and isinstance(error["message"], str)
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def seconds_of(stamp: tuple[str, str, str, str]) -> float:
    hours, minutes, secs, millis = map(int, stamp)
    return hours * 3600 + minutes * 60 + secs + millis / 1000


def parse_cues(text: str, marker: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each cue of an SRT/VTT body, checking each timing line's shape."""
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        timing = next(i for i, line in enumerate(lines) if "-->" in line)
        match = re.fullmatch(rf"{CUE_TIME.replace('[,.]', marker)} --> {CUE_TIME.replace('[,.]', marker)}",
                             lines[timing])
        assert match, lines[timing]
        start, end = seconds_of(match.groups()[:4]), seconds_of(match.groups()[4:])
        cues.append((start, end, " ".join(lines[timing + 1:])))
    return cues


def assert_cue_times(cues: list[tuple[float, float, str]], seconds: float) -> None:
    assert cues
    previous_start = 0.0
    for start, end, text in cues:
        assert text.strip()
        assert previous_start <= start <= end <= seconds + 1e-3, cues
        previous_start = start


# -- formats -------------------------------------------------------------------


def test_json_is_the_default(server, jfk) -> None:
    response = transcribe(server, jfk.data)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"text"}
    assert wer(jfk.reference, body["text"]) < MAX_WER, body["text"]


def test_text(server, jfk) -> None:
    response = transcribe(server, jfk.data, response_format="text")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert not response.text.lstrip().startswith("{")
    assert wer(jfk.reference, response.text) < MAX_WER, response.text


def test_verbose_json_segments(server, jfk) -> None:
    response = transcribe(server, jfk.data, response_format="verbose_json", language="en", temperature="0.4",
                          prompt="President Kennedy's inaugural address.")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"task", "language", "duration", "text", "segments"}  # words only when asked
    assert body["task"] == "transcribe" and body["language"] == "en"
    assert body["duration"] == pytest.approx(jfk.seconds, abs=0.05)
    assert wer(jfk.reference, body["text"]) < MAX_WER, body["text"]
    segments = body["segments"]
    assert segments and [s["id"] for s in segments] == list(range(len(segments)))
    keys = {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
            "no_speech_prob"}
    previous = 0.0
    for segment in segments:
        assert set(segment) == keys
        assert previous <= segment["start"] <= segment["end"] <= body["duration"]
        previous = segment["start"]
        assert segment["text"] and segment["text"] == segment["text"].strip()
        assert segment["avg_logprob"] <= 0 and 0 <= segment["no_speech_prob"] <= 1
        assert segment["temperature"] == 0.0
    assert " ".join(s["text"] for s in segments) == body["text"]


@pytest.mark.parametrize("granularities", [["word"], ["word", "segment"]])
def test_verbose_json_words(server, jfk, granularities) -> None:
    response = transcribe(server, jfk.data, response_format="verbose_json",
                          **{"timestamp_granularities[]": granularities})
    assert response.status_code == 200, response.text
    body = response.json()
    assert ("segments" in body) == ("segment" in granularities)
    words = body["words"]
    assert [w["word"] for w in words] == body["text"].split()
    previous = 0.0
    for word in words:
        assert set(word) == {"word", "start", "end"}
        assert previous <= word["start"] <= word["end"] <= body["duration"]
        previous = word["start"]
    assert words[-1]["end"] > body["duration"] / 2  # the words span the speech, not a sliver of it


def test_srt(server, jfk) -> None:
    response = transcribe(server, jfk.data, response_format="srt")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(("application/x-subrip", "text/plain"))
    blocks = response.text.strip().split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [str(n) for n in range(1, len(blocks) + 1)]
    cues = parse_cues(response.text, ",")
    assert_cue_times(cues, jfk.seconds)
    assert wer(jfk.reference, " ".join(text for _, _, text in cues)) < MAX_WER, response.text


def test_vtt(server, jfk) -> None:
    response = transcribe(server, jfk.data, response_format="vtt")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/vtt")
    assert response.text.startswith("WEBVTT\n\n")
    cues = parse_cues(response.text.removeprefix("WEBVTT\n\n"), r"\.")
    assert_cue_times(cues, jfk.seconds)
    assert wer(jfk.reference, " ".join(text for _, _, text in cues)) < MAX_WER, response.text


@pytest.mark.parametrize(("name", "rate", "channels", "format", "subtype"), [
    ("clip.flac", 44_100, 2, "FLAC", "PCM_16"),
    ("clip.ogg", 48_000, 1, "OGG", "OPUS"),
    ("clip.mp3", 44_100, 1, "MP3", "MPEG_LAYER_III"),
])
def test_compressed_upload(server, jfk, name, rate, channels, format, subtype) -> None:
    """A file made here at another rate (and in stereo) decodes and resamples server-side."""
    audio = soxr.resample(load_audio(jfk.path), 16_000, rate)
    if channels == 2:
        audio = np.stack([audio, audio * 0.5], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=format, subtype=subtype)
    data = buffer.getvalue()
    assert len(data) < len(jfk.data) * (rate / 16_000) * channels  # really compressed
    response = transcribe(server, data, filename=name, response_format="verbose_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] == pytest.approx(jfk.seconds, abs=0.1)
    assert wer(jfk.reference, body["text"]) < MAX_WER, body["text"]


# -- errors --------------------------------------------------------------------


def test_missing_file(server) -> None:
    response = httpx.post(f"{server.http_url}{ENDPOINT}", data={"model": "whisper-1"})
    assert_openai_error(response, 400, "file", "missing_required_parameter")
    not_multipart = httpx.post(f"{server.http_url}{ENDPOINT}", json={"file": "clip.wav"})
    assert_openai_error(not_multipart, 400, "file")
    text_not_file = httpx.post(f"{server.http_url}{ENDPOINT}", files={"model": (None, "x"), "file": (None, "abc")})
    assert_openai_error(text_not_file, 400, "file")


@pytest.mark.parametrize("data", [b"this is not audio at all " * 40, b"", b"RIFF\x24\x00\x00\x00WAVEfmt "])
def test_undecodable_file(server, data) -> None:
    assert_openai_error(transcribe(server, data, filename="clip.mp3"), 400, "file", "invalid_file_format")


def test_bad_response_format(server, jfk) -> None:
    error = assert_openai_error(transcribe(server, jfk.data, response_format="xml"), 400, "response_format")
    assert "xml" in error["message"]


def test_language_the_model_does_not_know(server, jfk) -> None:
    error = assert_openai_error(transcribe(server, jfk.data, language="de"), 400, "language", "unsupported_language")
    assert "tiny.en" in error["message"]


@pytest.mark.parametrize(("fields", "param"), [
    ({"timestamp_granularities[]": ["word", "character"]}, "timestamp_granularities[]"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": "1.5"}, "temperature"),
])
def test_bad_options(server, jfk, fields, param) -> None:
    assert_openai_error(transcribe(server, jfk.data, response_format="verbose_json", **fields), 400, param)


def test_file_over_25_mb(server) -> None:
    big = b"\0" * (25 * 1024 * 1024 + 1)
    assert_openai_error(transcribe(server, big), 413, "file", "file_too_large")

    def chunks():  # no Content-Length: the limit is counted while the body streams in
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for _ in range(27):
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--b--\r\n"

    streamed = httpx.post(f"{server.http_url}{ENDPOINT}", content=chunks(),
                          headers={"content-type": "multipart/form-data; boundary=b"}, timeout=60)
    assert_openai_error(streamed, 413, "file", "file_too_large")


# -- limits: the audio cap, and REST jobs in admission ---------------------------------

CAP_S = 5


@pytest.fixture(scope="module")
def limited():
    """A server with a 5 s audio cap per request and room for one session (or one REST job)."""
    with ServerProcess(["--tcp-port", "0", "--ws-port", str(free_port()), "--rest-max-seconds", str(CAP_S),
                        "--max-sessions", "1"]) as proc:
        yield proc
        assert proc.alive(), proc.text


def encoded(audio: np.ndarray, format: str = "WAV", subtype: str = "PCM_16") -> bytes:
    """16 kHz audio as a file of ``format``."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16_000, format=format, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "format", "subtype"), [("clip.wav", "WAV", "PCM_16"), ("clip.ogg", "OGG", "OPUS")])
def test_audio_over_the_cap_is_413(limited, jfk, name, format, subtype) -> None:
    """11 s of speech against a 5 s cap: refused in OpenAI's error shape, the cap named."""
    response = transcribe(limited, encoded(load_audio(jfk.path), format, subtype), filename=name)
    error = assert_openai_error(response, 413, "file", "audio_too_long")
    assert f"limit of {CAP_S} s" in error["message"] and name in error["message"]
    assert "refused: 413 audio_too_long" in limited.text


def test_decoding_stops_at_the_cap_whatever_the_header_says(monkeypatch) -> None:
    """Ten minutes of audio, a 30 s cap: a header stating the length refuses before decoding; without
    one (or a lying one) decoding stops just past the cap, so memory is bounded by the cap, not the file."""
    from woasr.transports.web import transcriptions

    data = encoded(np.zeros(600 * 16_000, np.float32), "FLAC")  # silence compresses: a small file

    def decode(cap: float) -> np.ndarray:
        return transcriptions._decode(types.SimpleNamespace(file=io.BytesIO(data), filename="long.flac"), cap)

    with pytest.raises(transcriptions._AudioTooLong) as declared:
        decode(30)
    assert declared.value.declared and declared.value.seconds == pytest.approx(600)
    monkeypatch.setattr(transcriptions, "HEADER_SLACK", float("inf"))  # as if the header said nothing
    with pytest.raises(transcriptions._AudioTooLong) as decoded:
        decode(30)
    assert not decoded.value.declared
    assert 30 < decoded.value.seconds <= 30 + transcriptions.DECODE_GROUP_SAMPLES / 16_000
    assert len(decode(0)) == 600 * 16_000  # 0: no cap


def read_head(sock: socket.socket) -> bytes:
    """One HTTP response head (status line and headers), read byte by byte up to its blank line."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, head
        head += byte
    return head


def test_a_rest_job_in_flight_takes_a_session_place(limited, jfk) -> None:
    """--max-sessions 1: from the moment an upload is admitted until it is answered, a WebSocket
    session is refused (a file takes the workers as a session does); after the answer there is room.

    ``Expect: 100-continue`` makes it deterministic: the server asks for the body only once it has
    admitted the request (and counted it), and the test sends the body only after the refusal."""
    boundary = "woasr-test"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="four.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n").encode()
    body += encoded(load_audio(jfk.path)[: 4 * 16_000])  # under the cap
    body += f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="response_format"\r\n\r\ntext' \
            f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST {ENDPOINT} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nExpect: 100-continue\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", limited.ws_port), timeout=60) as http:
        http.sendall(head.encode())
        assert read_head(http).startswith(b"HTTP/1.1 100 ")  # admitted: the job holds the one place
        with connect(limited.ws_url, open_timeout=30) as refused:
            message = json.loads(refused.recv(timeout=30))
        assert message["type"] == "error" and message["code"] == "capacity", message
        assert "file transcriptions" in message["message"]
        http.sendall(body)
        status = read_head(http)
        text = b"".join(iter(lambda: http.recv(65536), b"")).decode()
    assert status.startswith(b"HTTP/1.1 200 "), status + text.encode()
    assert "fellow americans" in text.lower()
    with connect(limited.ws_url, open_timeout=30) as admitted:  # the answer freed the place
        assert json.loads(admitted.recv(timeout=30))["type"] == "ready"


def test_not_ready_is_503_with_retry_after() -> None:
    """In-process app over a service whose model has not loaded yet."""
    from woasr.transports.web.app import create_app

    from woasr.server.access import Tokens

    loading = types.SimpleNamespace(ready=False, asr=None, active_sessions=0, tokens=Tokens())
    with TestClient(create_app(loading)) as client:
        response = client.post(ENDPOINT, files={"file": ("clip.wav", b"RIFF....")}, data={"model": "whisper-1"})
        assert_openai_error(response, 503, None, "model_not_ready")
        assert int(response.headers["retry-after"]) >= 1
        assert client.get("/healthz").status_code == 200


# -- the server around it -------------------------------------------------------------


def test_health_and_readiness(server) -> None:
    for path in ("/healthz", "/readyz"):
        response = httpx.get(f"{server.http_url}{path}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json()["status"] in ("ok", "ready")
    assert httpx.get(f"{server.http_url}/readyz").json()["model"] == "tiny.en"


def test_openapi_documents_the_form(server) -> None:
    schema = httpx.get(f"{server.http_url}/openapi.json").json()
    body = schema["paths"][ENDPOINT]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"]
    assert {"file", "model", "language", "prompt", "response_format", "temperature",
            "timestamp_granularities[]"} <= set(body["properties"])


def test_still_alive_and_logged_every_request(server, jfk) -> None:
    """Runs last: after every bad request above, the server still transcribes, and logged each one."""
    response = transcribe(server, jfk.data, response_format="text")
    assert response.status_code == 200 and wer(jfk.reference, response.text) < MAX_WER
    assert server.alive()
    log = server.text
    assert re.search(r"transcriptions: transcription text: 11\.00 s of audio in \d+\.\d\d s compute", log)
    assert "refused: 400 unsupported_language" in log
    assert "refused: 413 file_too_large" in log
