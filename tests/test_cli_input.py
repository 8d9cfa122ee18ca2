"""Bad input to ``woasr`` (flags, ``STREAM_*`` values, files) ends with one clear line and a non-zero exit.

Each case runs the real command in a subprocess and checks the exit code, that no
traceback was printed, and that the last line of stderr names the problem. The
checks come before any model loads or connection is made, so none of these loads one.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.servers import ROOT, WOASR, free_port

CLIP = str(ROOT / "examples" / "jfk_inaugural_1961.wav")
MODEL_LOADED = "woasr.asr.faster_whisper_backend: model "
"""What the backend logs once it loaded the default model: none of these cases may get that far."""


def woasr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``woasr ARGS`` with no ``STREAM_*`` variable set but those of ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_") and k != "IP_ADDR"}
    return subprocess.run([*WOASR, *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})})


def refused(result: subprocess.CompletedProcess[str], *names: str, one_line: bool = True) -> str:
    """The line that refused the input: exit code 2, no traceback, every one of ``names`` in it.

    ``one_line``: stderr is that line alone (our own refusals); argparse's print the usage first.
    """
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert MODEL_LOADED not in result.stderr
    lines = result.stderr.strip().splitlines()
    if one_line:
        assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[-1], lines[-1]
    return lines[-1]


# Environment values are checked as the flags they feed are.

def test_a_backend_from_the_environment_is_checked_against_the_choices():
    line = refused(woasr("simulate", CLIP, env={"STREAM_BACKEND": "bogus"}), "STREAM_BACKEND", "'bogus'",
                   "faster-whisper")
    assert "woasr.simulate" in line


@pytest.mark.parametrize(("variable", "value", "what"), [
    ("STREAM_LANG", "xx", "language code"),
    ("STREAM_MIN_CHUNK", "0", "> 0"),
    ("STREAM_MIN_CHUNK", "-1", "> 0"),
    ("STREAM_MIN_CHUNK", "abc", "number"),
    ("STREAM_VAC", "maybe", "boolean"),
])
def test_a_bad_environment_value_names_its_variable_before_the_file_is_read(variable, value, what):
    refused(woasr("simulate", "missing.wav", env={variable: value}), variable, repr(value), what)


def test_an_environment_value_is_checked_only_by_the_commands_that_use_it(tmp_path):
    """``client`` has no --backend: a bad ``STREAM_BACKEND`` is not its problem."""
    refused(woasr("client", "--file", str(tmp_path / "missing.wav"), env={"STREAM_BACKEND": "bogus"}),
            "cannot read audio")


def test_the_engine_and_the_triton_addresses_are_checked():
    refused(woasr("serve", env={"STREAM_ENGINE": "cloud"}), "STREAM_ENGINE", "'cloud'", "local or triton")
    refused(woasr("serve", "--engine", "triton"), "woasr.serve", "--triton-url host:port", "no Triton address")
    refused(woasr("serve", "--triton-url", "localhost"), "woasr.serve", "'localhost' is not host:port")


# Ports: with a Triton address where nothing listens no model loads, so serve gets to its ports at once.

def serve_without_a_model(*args: str) -> subprocess.CompletedProcess[str]:
    return woasr("serve", "--triton-url", f"127.0.0.1:{free_port()}", "--tcp-port", "0", "--metrics-port", "0",
                 *args)


@pytest.mark.parametrize("flag", ["--ws-port", "--tcp-port", "--metrics-port"])
def test_serve_a_port_in_use(flag):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = serve_without_a_model("--ws-port", str(free_port()), flag, str(port))
    refused(result, "woasr.serve", f"{flag}: cannot listen on 127.0.0.1:{port}", "in use", one_line=False)


def test_serve_processes_a_front_end_that_cannot_start_stops_the_others():
    """Front-end 1's own port (--ws-port + 2) is taken: it exits at once, and the supervisor does not
    start it again in a loop but stops front-end 0 and exits with its code."""
    while True:
        ws_port = free_port()
        try:
            taken = socket.create_server(("127.0.0.1", ws_port + 2))
            break
        except OSError:
            continue
    with taken:
        result = serve_without_a_model("--ws-port", str(ws_port), "--processes", "2")
    refused(result, one_line=False)
    assert f"front-end 1's own port (--ws-port + 2): cannot listen on 127.0.0.1:{ws_port + 2}" in result.stderr
    assert "front-end 1 (pid " in result.stderr and "after its start: stopping the others" in result.stderr
    assert "starting it again" not in result.stderr


# Files that are missing or not audio, for every command that reads one.

def not_audio(tmp_path: Path) -> Path:
    path = tmp_path / "notes.wav"
    path.write_text("not audio at all\n")
    return path


def test_simulate_a_missing_file():
    line = refused(woasr("simulate", "missing.wav"), "woasr.simulate", "cannot read audio 'missing.wav'",
                   "No such file")
    assert "LibsndfileError" not in line


def test_simulate_a_file_that_is_not_audio_or_a_folder(tmp_path):
    refused(woasr("simulate", str(not_audio(tmp_path))), "cannot read audio", "notes.wav", "Format not recognised")
    refused(woasr("simulate", str(tmp_path)), "cannot read audio", "Is a directory")


def test_client_a_missing_file_fails_before_connecting(tmp_path):
    port = free_port()  # nothing listens: a connection attempt would say so instead
    refused(woasr("client", "--file", str(tmp_path / "missing.wav"), "--port", str(port), "--attempts", "1"),
            "woasr.client", "cannot read audio", "missing.wav")


def test_client_a_microphone_that_is_not_there_fails_before_connecting():
    port = free_port()
    refused(woasr("client", "--device", "no-such-device-xyz", "--port", str(port), "--attempts", "1"),
            "woasr.client", "microphone")


def manifest(tmp_path: Path, clip: str) -> Path:
    path = tmp_path / "manifest.tsv"
    path.write_text(f"file\tseconds\tlanguage\treference\n{clip}\t1.0\ten\thello\n")
    return path


def test_eval_a_missing_manifest(tmp_path):
    refused(woasr("eval", "--manifest", str(tmp_path / "none.tsv")), "woasr.eval", "cannot read manifest",
            "none.tsv", "No such file")


def test_eval_a_file_that_is_not_a_manifest(tmp_path):
    table = tmp_path / "table.tsv"
    table.write_text("name\tsize\nx\t1\n")
    refused(woasr("eval", "--manifest", str(table)), "woasr.eval", "is not a manifest", "'file'")
    refused(woasr("eval", "--manifest", str(not_audio(tmp_path))), "woasr.eval", "lists no clips")


def test_eval_a_missing_clip_fails_before_the_model_loads(tmp_path):
    refused(woasr("eval", "--manifest", str(manifest(tmp_path, "gone.wav"))), "woasr.eval", "cannot read audio",
            "gone.wav", "No such file")


def test_eval_a_clip_that_is_not_audio(tmp_path):
    not_audio(tmp_path)
    refused(woasr("eval", "--manifest", str(manifest(tmp_path, "notes.wav"))), "cannot read audio", "notes.wav")


def test_bench_a_missing_playlist_manifest(tmp_path):
    refused(woasr("bench", "--playlist", str(tmp_path / "none.tsv"), "--no-baselines"), "woasr.bench",
            "cannot read manifest", "none.tsv")


def test_bench_a_missing_clip_fails_before_any_server_starts(tmp_path):
    result = woasr("bench", "--manifest", str(manifest(tmp_path, "gone.wav")), "--glob", "*", "--streams", "1",
                   "--seconds", "1", "--no-baselines")
    refused(result, "woasr.bench", "cannot read audio", "gone.wav")


def test_capture_a_missing_file_makes_no_output_folder(tmp_path):
    out = tmp_path / "out"
    refused(woasr("capture", "--file", str(tmp_path / "missing.wav"), "--out", str(out)), "woasr.capture",
            "cannot read audio", "missing.wav")
    assert not out.exists()


# Flags whose values would only fail later (or never): refused as argparse refuses a malformed one.

@pytest.mark.parametrize(("args", "names"), [
    (["simulate", CLIP, "--min-chunk", "0"], ["--min-chunk", "> 0"]),
    (["simulate", CLIP, "--min-chunk", "-1"], ["--min-chunk", "> 0"]),
    (["simulate", CLIP, "--min-chunk", "nan"], ["--min-chunk", "> 0"]),
    (["simulate", CLIP, "--lang", "xx"], ["--lang", "'xx'", "language code"]),
    (["simulate", CLIP, "--backend", "bogus"], ["--backend", "faster-whisper"]),
    (["simulate", CLIP, "--agreement", "0"], ["--agreement", ">= 1"]),
    (["simulate", CLIP, "--threads", "-1"], ["--threads", ">= 0"]),
    (["eval", "--manifest", "m.tsv", "--repeat", "0"], ["--repeat", ">= 1"]),
    (["client", "--file", CLIP, "--block", "0"], ["--block", "> 0"]),
])
def test_a_flag_out_of_range_is_refused_by_the_parser(args, names):
    refused(woasr(*args), "error: argument", *names, one_line=False)


def test_a_wrong_model_name():
    refused(woasr("simulate", CLIP, "--model", "nosuch"), "woasr.simulate", "'nosuch'", "tiny.en")


def test_a_folder_that_is_not_a_model(tmp_path):
    refused(woasr("simulate", CLIP, "--model", str(tmp_path)), "no model.bin")


def test_voice_activity_options_out_of_range():
    refused(woasr("simulate", CLIP, "--vac", "--vad-threshold", "2"), "woasr.simulate", "threshold")


@pytest.mark.parametrize("streams", ["a,b", "0", "1,,2", ""])
def test_bench_streams_that_are_not_counts(streams):
    refused(woasr("bench", "--streams", streams, "--no-baselines"), "woasr.bench", "--streams", repr(streams))


def test_bench_no_seconds():
    refused(woasr("bench", "--seconds", "0", "--no-baselines"), "woasr.bench", "--seconds")


def test_client_a_malformed_websocket_url():
    refused(woasr("client", "--ws", "not-a-url", "--file", CLIP), "woasr.client", "--ws", "not-a-url")
