"""The second backend (whisper-timestamped on converted weights) against the same contract as
faster-whisper, on the same real clips; the converter is lossless; streaming works through
``woasr simulate`` and a real server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

from woasr.audio_io import load_audio
from woasr.clients.sources import to_pcm16
from woasr.tools.textnorm import count_errors, normalize_text

from tests.servers import ROOT, WOASR, ServerProcess, free_port

pytestmark = pytest.mark.model

JFK = "en/jfk_inaugural_1961.wav"
CLIPS = ["en/ljspeech_LJ001-0001.wav", JFK]
BACKENDS = ["faster-whisper", "whisper-timestamped"]


def backend(name: str, model: str, language: str | None):
    if name == "faster-whisper":
        from woasr.asr.faster_whisper_backend import FasterWhisperASR

        return FasterWhisperASR(model, language)
    from woasr.asr.whisper_timestamped_backend import WhisperTimestampedASR

    return WhisperTimestampedASR(model, language)


@pytest.fixture(scope="module", params=BACKENDS)
def tiny(request):
    return request.param, backend(request.param, "tiny.en", "en")


def test_the_converted_checkpoint_holds_the_source_weights_exactly():
    import torch

    from woasr.asr.checkpoint import openai_whisper_checkpoint, read_ct2_variables
    from woasr.asr.models import resolve_model

    choice = resolve_model("tiny.en", "en")
    source = read_ct2_variables(Path(choice.source) / "model.bin")
    state = torch.load(openai_whisper_checkpoint(choice), weights_only=False)["model_state_dict"]
    layer = "decoder/layer_2"
    fused = source[f"{layer}/self_attention/linear_0/weight"]
    rebuilt = torch.cat([state["decoder.blocks.2.attn.query.weight"], state["decoder.blocks.2.attn.key.weight"],
                         state["decoder.blocks.2.attn.value.weight"]]).numpy()
    assert rebuilt.dtype == np.float16 and np.array_equal(rebuilt, fused)
    kv = source[f"{layer}/attention/linear_1/weight"]
    assert np.array_equal(torch.cat([state["decoder.blocks.2.cross_attn.key.weight"],
                                     state["decoder.blocks.2.cross_attn.value.weight"]]).numpy(), kv)
    for ours, theirs in [("encoder.conv1.weight", "encoder/conv1/weight"),
                         ("decoder.token_embedding.weight", "decoder/embeddings/weight"),
                         ("encoder.blocks.3.mlp.2.weight", "encoder/layer_3/ffn/linear_1/weight"),
                         ("decoder.ln.weight", "decoder/layer_norm/gamma")]:
        assert np.array_equal(state[ours].numpy(), source[theirs]), ours
    import whisper

    checkpoint = torch.load(openai_whisper_checkpoint(choice), weights_only=False)
    model = whisper.Whisper(whisper.ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(state, strict=True)  # every tensor of the model, and nothing else


def test_models_convert_writes_once_checks_a_clip_and_redoes_a_damaged_file(tmp_path):
    env = {**os.environ, "WOASR_CACHE": str(tmp_path)}
    convert = [*WOASR, "models", "convert", "tiny.en", "--to", "openai-whisper"]
    first = subprocess.run(convert, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0 and "same words" in first.stdout, first.stderr
    checkpoint = tmp_path / "models" / "openai-whisper" / "tiny.en.pt"
    assert "converting" in first.stderr and checkpoint.is_file()
    again = subprocess.run(convert, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "converting" not in again.stderr  # the cached file, checked by its sha256
    with checkpoint.open("r+b") as file:
        file.seek(4096)
        file.write(b"\0" * 64)
    damaged = subprocess.run(convert, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert damaged.returncode == 0 and "does not match its record" in damaged.stderr, damaged.stderr


@pytest.mark.parametrize("clip", CLIPS)
def test_both_backends_give_timed_words_and_the_guards_inputs(tiny, manifest, clip):
    name, asr = tiny
    audio = load_audio(manifest[clip].path)
    result = asr.transcribe(audio, "", "en")
    words = result.words
    assert words, name
    seconds = len(audio) / 16000
    assert all(0 <= w.start <= w.end <= seconds + 0.05 for w in words), words
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False)), words
    assert all(0 < w.probability <= 1 for w in words)
    assert all(s.avg_logprob < 0 and 0 <= s.no_speech_prob <= 1 and s.compression_ratio > 0 for s in result.segments)
    error = count_errors(manifest[clip].reference, " ".join(w.text for w in words)).rate
    print(f"{name} {clip}: WER {error:.3f}")
    assert error < 0.2


def test_the_prompt_reaches_the_decoder(tiny, manifest):
    """A prompt written in capitals makes Whisper continue in its style: the words change case."""
    name, asr = tiny
    audio = load_audio(manifest[JFK].path)
    plain = " ".join(w.text for w in asr.transcribe(audio, "", "en").words)
    prompted = " ".join(w.text for w in asr.transcribe(audio, "AND SO, MY FELLOW AMERICANS.", "en").words)
    assert normalize_text(plain) != "" and prompted != plain, (name, plain, prompted)


def test_concurrent_calls_on_one_backend_give_what_each_gives_alone(manifest):
    """The server runs a call per worker on one loaded model; whisper-timestamped hooks the model
    during a call, so each concurrent call must have weights of its own."""
    from concurrent.futures import ThreadPoolExecutor

    asr = backend("whisper-timestamped", "tiny.en", "en")
    clips = [load_audio(manifest[clip].path) for clip in CLIPS]
    alone = [asr.transcribe(audio, "", "en").words for audio in clips]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda audio: asr.transcribe(audio, "", "en").words, clips))
    assert together == alone


def test_language_detection_with_base_on_both_backends(manifest):
    for name in BACKENDS:
        asr = backend(name, "base", None)
        for clip, language in [("xx/picovoice_leopard_de.wav", "de"), ("xx/picovoice_leopard_es.wav", "es")]:
            result = asr.transcribe(load_audio(manifest[clip].path), "", None)
            assert result.language == language, (name, clip, result.language)


def test_simulate_streams_with_whisper_timestamped_as_well_as_with_faster_whisper(manifest):
    clip = manifest[JFK]
    runs = {}
    for name in BACKENDS:
        result = subprocess.run([*WOASR, "simulate", str(clip.path), "--backend", name.replace("-", "_")],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        runs[name] = " ".join(line.split(" ", 3)[3] for line in result.stdout.splitlines() if line.strip())
    errors = {name: count_errors(clip.reference, text).rate for name, text in runs.items()}
    print(f"simulate WER: {errors}")
    assert errors["whisper-timestamped"] <= errors["faster-whisper"] + 0.1, runs


def test_a_server_chosen_by_env_streams_and_answers_rest_with_whisper_timestamped(manifest):
    """``STREAM_BACKEND=whisper_timestamped`` (the seed's spelling) for ``serve``: WebSocket and REST."""
    clip = manifest[JFK]

    async def stream(port: int) -> tuple[dict, str]:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            ready = json.loads(await ws.recv())
            await ws.send(to_pcm16(load_audio(clip.path)))
            await ws.send(json.dumps({"type": "close"}))
            finals = [m["text"] for m in map(json.loads, [t async for t in ws]) if m["type"] == "final"]
            return ready, " ".join(finals)

    with ServerProcess(["--tcp-port", "0", "--ws-port", str(free_port())],
                       env={"STREAM_BACKEND": "whisper_timestamped"}) as server:
        ready, text = asyncio.run(stream(server.ws_port))
        rest = httpx.post(f"{server.http_url}/v1/audio/transcriptions", timeout=120,
                          files={"file": ("jfk.wav", clip.path.read_bytes())}, data={"model": "whisper-1"})
        assert "backend=whisper-timestamped" in server.text
    assert ready["settings"]["backend"] == "whisper-timestamped"
    assert count_errors(clip.reference, text).rate < 0.2, text
    assert rest.status_code == 200 and count_errors(clip.reference, rest.json()["text"]).rate < 0.2, rest.text


def test_eval_and_bench_take_the_backend(audio_dir, tmp_path):
    report, bench = tmp_path / "eval.json", tmp_path / "bench.json"
    for command in (["eval", "--manifest", str(audio_dir / "manifest.tsv"), "--glob",
                     "en/ljspeech_LJ001-0001.wav,conv/pyannote_phone_call.wav",
                     "--backend", "whisper-timestamped", "--json", str(report)],
                    ["bench", "--manifest", str(audio_dir / "manifest.tsv"), "--streams", "1", "--seconds", "8",
                     "--serve-args", "--backend whisper_timestamped", "--json", str(bench)]):
        result = subprocess.run([*WOASR, *command], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(report.read_text())
    assert evaluated["backend"] == "whisper-timestamped" and evaluated["wer_streaming"] < 0.3
    # The phone call's turns (.segments.json): its streamed words start near the annotated boundaries.
    timing = evaluated["word_timing"]["streaming"]
    assert timing["utterances"] >= 10 and timing["start_error_ms"]["p50"] < 500, timing
    run = json.loads(bench.read_text())["runs"][0]
    assert run["admitted"] == 1 and run["wer"] < 0.3, run


def test_an_unknown_backend_is_one_clear_line(manifest):
    result = subprocess.run([*WOASR, "simulate", str(manifest[JFK].path), "--backend", "bogus"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "faster-whisper, whisper-timestamped" in result.stderr
