"""Optional authentication (tokens) and TLS, against a real ``woasr serve`` with the real tiny.en model.

The server takes its tokens from ``STREAM_TOKEN`` and ``--tokens-file``; WebSocket and REST clients
present one as ``Authorization: Bearer`` or ``?token=``, TCP clients as a first line ``AUTH <token>``.
TLS is checked with a self-signed certificate made here by ``openssl``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import wave
from pathlib import Path

import httpx
import pytest
import websockets

from woasr.audio_io import load_audio
from woasr.clients.sources import to_pcm16
from woasr.protocol.tcp import decode_auth, encode_auth
from woasr.tools.textnorm import count_errors, normalize_text

from tests.servers import ROOT, WOASR, ServerProcess, free_port, line_text
from tests.test_ws import receive_all

pytestmark = pytest.mark.model

SHORT = "en/ljspeech_LJ001-0002.wav"  # "in being comparatively modern." (1.9 s)
LONG = "en/ljspeech_LJ001-0001.wav"  # "Printing, in the only sense ..." (9.7 s)
ENV_TOKEN, FILE_TOKEN, WRONG = "env-secret-1", "file-secret-2", "nope-3"
BLOCK = 3200  # 100 ms of PCM16 at 16 kHz
ENDPOINT = "/v1/audio/transcriptions"


def pcm_of(manifest, name: str) -> bytes:
    return to_pcm16(load_audio(manifest[name].path))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server requiring one of two tokens: one from the environment, one from a tokens file."""
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(f"# who: the test suite\n\n  {FILE_TOKEN}  \n")
    with ServerProcess(["--tcp-port", str(free_port()), "--ws-port", str(free_port()), "--min-chunk", "0.5",
                        "--tokens-file", str(tokens)], env={"STREAM_TOKEN": ENV_TOKEN}) as proc:
        assert "authentication on: 2 token(s)" in proc.text
        yield proc
        assert proc.alive(), proc.text
        assert FILE_TOKEN not in proc.text and ENV_TOKEN not in proc.text and WRONG not in proc.text


async def ws_session(url: str, pcm: bytes, ssl_context: ssl.SSLContext | None = None,
                     headers: dict[str, str] | None = None) -> tuple[list[dict], int | None, str]:
    """Connect, send the audio (4x real time) and the close message; every message, the close code and reason."""
    async with websockets.connect(url, additional_headers=headers, ssl=ssl_context) as ws:
        receiving = asyncio.create_task(receive_all(ws))
        try:
            for i in range(0, len(pcm), BLOCK):
                await ws.send(pcm[i : i + BLOCK])
                await asyncio.sleep(0.025)
            await ws.send(json.dumps({"type": "close"}))
        except websockets.ConnectionClosed:
            pass  # refused: the server closed first
        messages = await asyncio.wait_for(receiving, 120)
    return messages, ws.close_code, ws.close_reason


def text_of(messages: list[dict]) -> str:
    return " ".join(m["text"] for m in messages if m["type"] == "final")


def test_the_auth_line_round_trips_and_rejects_what_it_cannot_carry():
    assert decode_auth(encode_auth(FILE_TOKEN).rstrip(b"\n")) == FILE_TOKEN
    assert decode_auth(b"AUTH tok\r") == "tok"
    for line in (b"", b"AUTH ", b"auth tok", b"\x00\x01AUTH tok", b"AUTH \xff", b"AUTH " + b"x" * 1100):
        assert decode_auth(line) is None, line
    for token in ("", "two words", "new\nline", "x" * 1100):
        with pytest.raises(ValueError):
            encode_auth(token)


async def test_websocket_without_a_valid_token_is_closed_with_1008(server, manifest):
    speech = pcm_of(manifest, SHORT)
    for headers, query in ((None, ""), ({"Authorization": f"Bearer {WRONG}"}, ""), (None, f"?token={WRONG}"),
                           ({"Authorization": f"Basic {FILE_TOKEN}"}, "")):
        messages, code, reason = await ws_session(server.ws_url + "/v1/stream" + query, speech, headers=headers)
        assert [m["type"] for m in messages] == ["error"] and messages[0]["code"] == "unauthorized", messages
        assert code == 1008 and "unauthorized" in reason
    assert "missing or wrong token" in server.text
    assert "/v1/stream?token=***" in server.text  # uvicorn's handshake log line, redacted
    assert FILE_TOKEN not in server.text and ENV_TOKEN not in server.text and WRONG not in server.text


async def test_websocket_with_a_bearer_header_or_a_query_token_is_transcribed(server, manifest):
    speech = pcm_of(manifest, SHORT)
    by_header = ws_session(server.ws_url + "/", speech, headers={"Authorization": f"Bearer {ENV_TOKEN}"})
    by_query = ws_session(server.ws_url + f"/v1/stream?token={FILE_TOKEN}", speech)
    for messages, code, _ in await asyncio.gather(by_header, by_query):
        assert messages[0]["type"] == "ready" and code == 1000, messages
        assert count_errors(manifest[SHORT].reference, text_of(messages)).rate < 0.2, text_of(messages)


def tcp_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` in one write, half-close, read until the server closes (a reset ends it too)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        try:
            while part := sock.recv(65536):
                received += part
        except ConnectionResetError:
            pass
    return received


@pytest.mark.parametrize("first", [b"", b"AUTH " + WRONG.encode() + b"\n", b"auth " + FILE_TOKEN.encode() + b"\n"],
                         ids=["no-auth-line", "wrong-token", "lower-case"])
def test_tcp_without_a_valid_auth_line_gets_error_unauthorized_then_close(server, manifest, first):
    received = tcp_exchange(server.port, first + pcm_of(manifest, SHORT)[:BLOCK * 5])
    assert received.startswith(b"ERROR unauthorized ") and received.count(b"\n") == 1, received


def test_tcp_client_that_sends_nothing_is_refused_after_a_few_seconds(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        began = time.monotonic()
        assert sock.recv(65536).startswith(b"ERROR unauthorized ")
        assert 4 < time.monotonic() - began < 15  # AUTH_TIMEOUT_S = 5
        assert sock.recv(65536) == b""  # then closed


def test_tcp_auth_line_with_audio_in_the_same_write_loses_no_audio(server, manifest):
    """The server's first read holds the line and ~2 s of audio: the audio must reach the session."""
    received = tcp_exchange(server.port, encode_auth(FILE_TOKEN) + pcm_of(manifest, LONG))
    text = line_text(received.decode())
    assert normalize_text(text).startswith("printing in the only sense"), text
    assert count_errors(manifest[LONG].reference, text).rate < 0.2, text
    env_token = tcp_exchange(server.port, encode_auth(ENV_TOKEN) + pcm_of(manifest, SHORT))
    assert "modern" in normalize_text(line_text(env_token.decode()))


def test_rest_requires_a_token_and_answers_401_in_openai_shape(server, manifest):
    url = server.http_url + ENDPOINT
    clip = Path(manifest[SHORT].path).read_bytes()
    for headers, query in ((None, ""), ({"Authorization": f"Bearer {WRONG}"}, ""), (None, f"?token={WRONG}")):
        response = httpx.post(url + query, files={"file": ("clip.wav", clip)}, headers=headers, timeout=60)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
        assert error["param"] is None and error["message"]
    for headers, query in (({"Authorization": f"Bearer {FILE_TOKEN}"}, ""), (None, f"?token={ENV_TOKEN}")):
        response = httpx.post(url + query, files={"file": ("clip.wav", clip)}, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        assert "modern" in normalize_text(response.json()["text"])
    # Probes, scrapers and the page stay open; the page's own socket carries the token.
    for path in ("/", "/healthz", "/readyz", "/metrics", "/static/app.js"):
        assert httpx.get(server.http_url + path).status_code == 200, path
    assert 'searchParams.set("token"' in httpx.get(server.http_url + "/static/app.js").text
    metrics = httpx.get(server.http_url + "/metrics").text
    assert 'woasr_refused_sessions_total{reason="unauthorized",transport="http"} 3.0' in metrics


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_client_with_a_token_streams_end_to_end(server, manifest, transport):
    where = ["--host", "127.0.0.1", "--port", str(server.port)] if transport == "tcp" else ["--ws", server.ws_url]
    by_flag = subprocess.run([*WOASR, "client", *where, "--file", str(manifest[SHORT].path), "--fast",
                              "--token", FILE_TOKEN], cwd=ROOT, capture_output=True, text=True, timeout=120)
    by_env = subprocess.run([*WOASR, "client", *where, "--file", str(manifest[SHORT].path), "--fast"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "STREAM_TOKEN": ENV_TOKEN})
    for result in (by_flag, by_env):
        assert result.returncode == 0, result.stderr
        assert "modern" in normalize_text(line_text(result.stdout)), result.stdout + result.stderr
        assert "unauthorized" not in result.stderr
    # A wrong token is final: one line and exit 1, no reconnecting with backoff.
    wrong = subprocess.run([*WOASR, "client", *where, "--file", str(manifest[SHORT].path), "--fast",
                            "--token", "wrong"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1 and "refused" in wrong.stderr, wrong.stderr
    assert "retry" not in wrong.stderr and "reconnecting" not in wrong.stderr, wrong.stderr


def test_an_unreadable_tokens_file_stops_the_server_with_one_line(tmp_path):
    result = subprocess.run([*WOASR, "serve", "--tcp-port", "0", "--ws-port", str(free_port()), "--tokens-file",
                             str(tmp_path / "missing")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--tokens-file: cannot read" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.browser
def test_the_page_hands_its_own_token_to_its_socket(server, manifest, tmp_path):
    """Opened as ``/?token=...`` the page streams; opened without, it shows the server's refusal."""
    from tests.test_browser import CHROMIUM, launch, open_page, state, wait_for_status

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/browser_deps.sh")
    from playwright.sync_api import sync_playwright

    wav = tmp_path / "microphone.wav"
    with wave.open(str(manifest[SHORT].path), "rb") as source, wave.open(str(wav), "wb") as out:
        out.setparams(source.getparams())
        out.writeframes(source.readframes(source.getnframes()) + bytes(2 * 3 * source.getframerate()))
    with sync_playwright() as playwright:
        browser = launch(playwright, wav)
        try:
            page = open_page(browser, server.http_url + f"/?token={FILE_TOKEN}")
            assert page.evaluate("socketUrl()") == f"{server.ws_url}/v1/stream?token={FILE_TOKEN}"
            page.click("#toggle")
            wait_for_status(page, "live", timeout=30)
            page.wait_for_function("() => window.woasr.finals.some(f => /modern/i.test(f.text))", timeout=60_000)
            assert state(page)["errors"] == []
            refused = open_page(browser, server.http_url)
            refused.click("#toggle")
            refused.wait_for_function("() => window.woasr.errors.some(e => e.includes('unauthorized'))",
                                      timeout=30_000)
            wait_for_status(refused, "stopped", timeout=10)  # refused for good: no retrying
            assert any("refused this page" in e for e in state(refused)["errors"])
        finally:
            browser.close()


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (certificate, key), made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


async def test_tls_serves_wss_and_https_with_the_certificate(manifest, certificate):
    cert, key = certificate
    trusting = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    with ServerProcess(["--tcp-port", "0", "--ws-port", str(port), "--min-chunk", "0.5",
                        "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]) as proc:
        assert f"listening wss://127.0.0.1:{port}/" in proc.text and f"page https://127.0.0.1:{port}/" in proc.text
        messages, code, _ = await ws_session(f"wss://127.0.0.1:{port}/v1/stream", pcm_of(manifest, SHORT),
                                             ssl_context=trusting)
        assert messages[0]["type"] == "ready" and code == 1000
        assert "modern" in normalize_text(text_of(messages)), messages
        assert httpx.get(f"https://127.0.0.1:{port}/readyz", verify=trusting).json()["status"] == "ready"
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # untrusted without it
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=ssl.create_default_context())
        client = subprocess.run([*WOASR, "client", "--ws", f"wss://127.0.0.1:{port}/", "--file",
                                 str(manifest[SHORT].path), "--fast"], cwd=ROOT, capture_output=True, text=True,
                                timeout=120, env={**os.environ, "SSL_CERT_FILE": str(cert)})
        assert client.returncode == 0 and "modern" in normalize_text(line_text(client.stdout)), client.stderr


def test_a_wrong_certificate_stops_the_server_with_one_line(tmp_path):
    bogus = tmp_path / "cert.pem"
    bogus.write_text("not a certificate\n")
    result = subprocess.run([*WOASR, "serve", "--tcp-port", "0", "--ws-port", str(free_port()),
                             "--ssl-certfile", str(bogus)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "cannot load the certificate" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
