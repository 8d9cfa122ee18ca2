"""``woasr eval``: streaming vs offline accuracy, latency and cost on a manifest.

Definitions (docs/eval.md is the long form):

- committed latency of a word = simulated emission time - the word's end time;
- partial latency of a word = when it first appeared in a partial - its end time;
- ``rtf`` = model compute seconds / audio seconds of the streaming runs;
- WER/CER pooled over clips (errors summed / reference tokens summed).
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from woasr.asr.faster_whisper_backend import FasterWhisperASR
from woasr.audio_io import load_audio
from woasr.core.audio import SAMPLE_RATE, FloatAudio
from woasr.core.processor import OnlineASRProcessor, ProcessorSettings
from woasr.core.records import Word, join_words
from woasr.tools.simulate import PartialTracker, simulate
from woasr.tools.textnorm import ErrorCount, count_errors


@dataclass(frozen=True, slots=True)
class ManifestRow:
    path: Path
    name: str
    seconds: float
    language: str
    reference: str


def read_manifest(path: str | Path, pattern: str | None = None, limit: int | None = None) -> list[ManifestRow]:
    """Rows of a TSV manifest (``file seconds language reference ...``), paths resolved.

    ``pattern`` is a glob on the file column; several may be given, comma-separated.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = [
            ManifestRow(path.parent / r["file"], r["file"], float(r["seconds"]), r["language"], r["reference"])
            for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if pattern is None or any(fnmatch.fnmatch(r["file"], p.strip()) for p in pattern.split(","))
        ]
    return rows[:limit] if limit else rows


@dataclass(slots=True)
class StreamRun:
    """Everything one simulated stream produced, with its timings."""

    committed: list[Word] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    partial_latencies: list[float] = field(default_factory=list)
    compute_s: float = 0.0
    updates: int = 0
    max_buffer_s: float = 0.0

    @property
    def text(self) -> str:
        return join_words(self.committed)


def run_stream(processor: OnlineASRProcessor, audio: FloatAudio, min_chunk: float, aware: bool = True) -> StreamRun:
    """Simulate one stream and collect committed words with their latencies."""
    run = StreamRun()
    tracker = PartialTracker()
    for step in simulate(processor, audio, min_chunk, aware):
        run.updates += 1
        run.compute_s += step.compute
        run.max_buffer_s = max(run.max_buffer_s, step.buffer_s)
        for word in step.update.committed:
            run.committed.append(word)
            run.latencies.append(step.emission - word.end)
            run.partial_latencies.append(tracker.first_seen(word, step.emission) - word.end)
        tracker.see(step.update.partial, step.emission)
    return run


def percentiles_ms(values: list[float], keys: tuple[str, ...] = ("p50", "p95", "max")) -> dict[str, float | None]:
    if not values:
        return {k: None for k in keys}
    points = {"p50": 50, "p95": 95, "max": 100}
    return {k: round(float(np.percentile(values, points[k])) * 1000, 1) for k in keys}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate(
    rows: list[ManifestRow],
    asr: FasterWhisperASR,
    min_chunk: float,
    language: str | None = None,
    aware: bool = True,
    settings: ProcessorSettings | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Stream and transcribe offline every clip; return the JSON-ready report.

    ``language`` None takes each clip's language from the manifest; ``"auto"``
    lets the model detect it.
    """
    offline = asr.with_decode(encoder_window="full", silence_pad_s=0.0, single_pass=False)  # plain faster-whisper
    clips: list[dict[str, Any]] = []
    streaming_errors, offline_errors = ErrorCount(), ErrorCount()
    latencies: list[float] = []
    partial_latencies: list[float] = []
    compute_s = audio_s = offline_s = 0.0
    for row in tqdm(rows, desc=f"eval min-chunk {min_chunk}", disable=not progress, file=sys.stderr):
        audio = load_audio(row.path)
        clip_language = None if language == "auto" else language or row.language
        processor = OnlineASRProcessor(asr, clip_language, settings)
        run = run_stream(processor, audio, min_chunk, aware)
        began = time.perf_counter()
        offline_text = join_words(offline.transcribe(audio, "", clip_language).words)
        offline_s += time.perf_counter() - began
        s_err = count_errors(row.reference, run.text, row.language)
        o_err = count_errors(row.reference, offline_text, row.language)
        streaming_errors += s_err
        offline_errors += o_err
        latencies += run.latencies
        partial_latencies += run.partial_latencies
        compute_s += run.compute_s
        seconds = len(audio) / SAMPLE_RATE
        audio_s += seconds
        clips.append({
            "file": row.name,
            "language": row.language,
            "audio_s": round(seconds, 3),
            "wer_streaming": round(s_err.rate, 4),
            "wer_offline": round(o_err.rate, 4),
            "latency_ms": percentiles_ms(run.latencies),
            "partial_latency_ms": percentiles_ms(run.partial_latencies, ("p50", "p95")),
            "rtf": round(run.compute_s / seconds, 3) if seconds else None,
            "updates": run.updates,
            "max_buffer_s": round(run.max_buffer_s, 2),
            "streaming_text": run.text,
            "offline_text": offline_text,
        })
    return {
        "model": asr.choice.name,
        "language": language or "manifest",
        "min_chunk_s": min_chunk,
        "computation_aware": aware,
        "beam_size": asr.decode.beam_size,
        "encoder_window": asr.decode.encoder_window,
        "single_pass": asr.decode.single_pass,
        "settings": dataclasses.asdict(settings or ProcessorSettings()),
        "n_clips": len(clips),
        "audio_s": round(audio_s, 2),
        "wer_streaming": round(streaming_errors.rate, 4),
        "wer_offline": round(offline_errors.rate, 4),
        "latency_ms": percentiles_ms(latencies),
        "partial_latency_ms": percentiles_ms(partial_latencies, ("p50", "p95")),
        "rtf": round(compute_s / audio_s, 3) if audio_s else None,
        "rtf_offline": round(offline_s / audio_s, 3) if audio_s else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "clips": clips,
    }


def markdown_table(report: dict[str, Any]) -> str:
    """One summary row, the shape docs/eval.md uses."""
    lat, part = report["latency_ms"], report["partial_latency_ms"]
    header = "| model | min-chunk s | clips | audio s | WER stream | WER offline | latency p50/p95/max ms | partial p50 ms | RTF | peak RSS MB |"
    rule = "|" + "---|" * 10
    row = (
        f"| {report['model']} | {report['min_chunk_s']} | {report['n_clips']} | {report['audio_s']} "
        f"| {report['wer_streaming']:.2%} | {report['wer_offline']:.2%} "
        f"| {lat['p50']}/{lat['p95']}/{lat['max']} | {part['p50']} | {report['rtf']} | {report['peak_rss_mb']} |"
    )
    return "\n".join((header, rule, row))


def write_report(report: dict[str, Any], out: str | Path | None) -> None:
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
