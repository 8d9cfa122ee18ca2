"""``woasr eval``: streaming vs offline accuracy, latency and cost on a manifest.

Definitions (docs/eval.md is the long form):

- committed latency of a word = simulated emission time - the word's end time;
- partial latency of a word = when it first appeared in a partial - its end time;
- ``rtf`` = model compute seconds / audio seconds of the streaming runs;
- WER/CER pooled over clips (errors summed / reference tokens summed).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from woasr.asr.loaded import LoadedASR
from woasr.audio_io import load_audio
from woasr.core.audio import SAMPLE_RATE, FloatAudio
from woasr.core.processor import OnlineASRProcessor, ProcessorSettings
from woasr.core.records import Word, join_words
from woasr.core.vac import VoiceGate
from woasr.core.vad import VadSettings
from woasr.percentiles import percentiles_ms
from woasr.tools.errors import Breakdown, RecordingBackend, UpdateTrace, explain, trace_update
from woasr.tools.manifest import ManifestRow
from woasr.tools.simulate import PartialTracker, simulate
from woasr.tools.textnorm import ErrorCount, count_errors
from woasr.tools.timing import BoundaryOffsets, boundary_offsets, utterances_beside


@dataclass(slots=True)
class StreamRun:
    """Everything one simulated stream produced, with its timings and a trace of its updates."""

    committed: list[Word] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    partial_latencies: list[float] = field(default_factory=list)
    compute_s: float = 0.0
    updates: int = 0
    max_buffer_s: float = 0.0
    trace: list[UpdateTrace] = field(default_factory=list)
    end_latencies: list[float] = field(default_factory=list)
    """Per finished utterance (or stream): emission of its last word - that word's end."""

    @property
    def text(self) -> str:
        return join_words(self.committed)


def run_stream(processor: OnlineASRProcessor, audio: FloatAudio, min_chunk: float, aware: bool = True,
               gate: VoiceGate | None = None) -> StreamRun:
    """Simulate one stream and collect committed words with their latencies.

    The processor's backend is wrapped for the run, so that every update's raw
    hypothesis and prompt are traced (for the error breakdown).
    """
    run = StreamRun()
    tracker = PartialTracker()
    recorder = RecordingBackend(processor.asr)
    processor.asr = recorder
    settings = processor.settings
    try:
        buffer_start = processor.buffer_offset / SAMPLE_RATE
        for step in simulate(processor, audio, min_chunk, aware, gate=gate):
            run.updates += 1
            run.compute_s += step.compute
            run.max_buffer_s = max(run.max_buffer_s, step.buffer_s)
            pad = settings.finish_pad_s if step.finished else 0.0
            run.trace.append(trace_update(recorder.take(), buffer_start, pad, step.update.committed, step.final,
                                          processor.heard))
            buffer_start = processor.buffer_offset / SAMPLE_RATE
            for word in step.update.committed:
                run.committed.append(word)
                run.latencies.append(step.emission - word.end)
                run.partial_latencies.append(tracker.first_seen(word, step.emission) - word.end)
            tracker.see(step.update.partial, step.emission)
            if step.finished and step.update.committed:
                run.end_latencies.append(step.emission - step.update.committed[-1].end)
    finally:
        processor.asr = recorder.asr
    return run


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rate(errors: ErrorCount, scored: bool) -> float | None:
    return round(errors.rate, 4) if scored else None


@dataclass(slots=True)
class _Totals:
    """Pooled figures of one pass over the clips (or of all passes)."""

    streaming: ErrorCount = field(default_factory=ErrorCount)
    offline: ErrorCount = field(default_factory=ErrorCount)
    vs_offline: ErrorCount = field(default_factory=ErrorCount)
    referenced: int = 0
    latencies: list[float] = field(default_factory=list)
    partial_latencies: list[float] = field(default_factory=list)
    end_latencies: list[float] = field(default_factory=list)
    compute_s: float = 0.0
    audio_s: float = 0.0
    repeated: list[str] = field(default_factory=list)
    breakdown: Breakdown = field(default_factory=Breakdown)
    timing: dict[str, BoundaryOffsets] = field(default_factory=dict)
    """Word times against ``.segments.json`` utterance boundaries, ``streaming`` and ``offline``."""

    def add(self, other: _Totals) -> None:
        self.streaming += other.streaming
        self.offline += other.offline
        self.vs_offline += other.vs_offline
        self.referenced += other.referenced
        self.latencies += other.latencies
        self.partial_latencies += other.partial_latencies
        self.end_latencies += other.end_latencies
        self.compute_s += other.compute_s
        self.audio_s += other.audio_s
        self.repeated += other.repeated
        self.breakdown += other.breakdown
        for words, offsets in other.timing.items():
            self.timing.setdefault(words, BoundaryOffsets()).add(offsets)

    @property
    def wer(self) -> float | None:
        """The run's headline error rate: against the references where there are any, else against offline."""
        return _rate(self.streaming, True) if self.referenced else _rate(self.vs_offline, True)

    def summary(self) -> dict[str, Any]:
        return {
            "wer_streaming": _rate(self.streaming, self.referenced > 0),
            "wer_offline": _rate(self.offline, self.referenced > 0),
            "wer_vs_offline": _rate(self.vs_offline, True),
            "latency_ms": percentiles_ms(self.latencies),
            "partial_latency_ms": percentiles_ms(self.partial_latencies, ("p50", "p95")),
            "utterance_end_latency_ms": percentiles_ms(self.end_latencies, ("p50", "p95")),
            "rtf": round(self.compute_s / self.audio_s, 3) if self.audio_s else None,
            "compute_s": round(self.compute_s, 2),
            "repeated_ngrams": len(self.repeated),
        }


@dataclass(frozen=True, slots=True)
class _Setup:
    """How every clip of one evaluation is streamed; kept together so the passes and the report agree."""

    asr: LoadedASR
    min_chunk: float
    language: str | None
    aware: bool
    settings: ProcessorSettings
    vac: VadSettings | None

    def clip_language(self, row: ManifestRow) -> str | None:
        """The language the clip is decoded in: None (the model detects it) for ``"auto"``, unset: the manifest's."""
        return None if self.language == "auto" else self.language or row.language

    def stream(self, row: ManifestRow, audio: FloatAudio) -> StreamRun:
        """One simulated stream of the clip, on a fresh processor (and voice gate) so runs do not interact."""
        gate = VoiceGate(self.vac) if self.vac is not None else None
        processor = OnlineASRProcessor(self.asr, self.clip_language(row), self.settings)
        return run_stream(processor, audio, self.min_chunk, self.aware, gate)

    def configuration(self) -> dict[str, Any]:
        """The report's leading keys: what was run, so reports of different runs can be compared."""
        return {
            "model": self.asr.choice.name,
            "backend": self.asr.backend,
            "language": self.language or "manifest",
            "min_chunk_s": self.min_chunk,
            "computation_aware": self.aware,
            "beam_size": self.asr.decode.beam_size,
            "encoder_window": self.asr.decode.encoder_window,
            "single_pass": self.asr.decode.single_pass,
            "settings": dataclasses.asdict(self.settings),
            "vac": dataclasses.asdict(self.vac) if self.vac is not None else None,
        }


@dataclass(slots=True)
class _OfflineTranscripts:
    """Each clip's offline words, transcribed once however many passes stream it (and the time that took)."""

    backend: LoadedASR
    words: dict[str, tuple[Word, ...]] = field(default_factory=dict)
    seconds: float = 0.0

    def of(self, row: ManifestRow, audio: FloatAudio, language: str | None) -> tuple[Word, ...]:
        """The clip's offline words; only the first pass pays (and times) the transcription."""
        if row.name not in self.words:
            began = time.perf_counter()
            self.words[row.name] = self.backend.transcribe(audio, "", language).words
            self.seconds += time.perf_counter() - began
        return self.words[row.name]


def evaluate(
    rows: list[ManifestRow],
    asr: LoadedASR,
    min_chunk: float,
    language: str | None = None,
    aware: bool = True,
    settings: ProcessorSettings | None = None,
    progress: bool = True,
    repeat: int = 1,
    vac: VadSettings | None = None,
) -> dict[str, Any]:
    """Stream (``repeat`` times) and transcribe offline every clip; return the JSON-ready report.

    ``language`` None takes each clip's language from the manifest; ``"auto"``
    lets the model detect it. Clips without a reference are scored against the
    offline transcription only (``wer_vs_offline``, which every clip also gets).
    ``vac`` streams with voice-activity control.
    """
    setup = _Setup(asr, min_chunk, language, aware, settings or ProcessorSettings(), vac)
    offline = _OfflineTranscripts(asr.offline())  # the whole-file decoding
    clips: list[dict[str, Any]] = []
    passes: list[_Totals] = []
    total = _Totals()
    for attempt in range(repeat):
        label = f"eval min-chunk {min_chunk}" + (f" run {attempt + 1}/{repeat}" if repeat > 1 else "")
        pass_rows = tqdm(rows, desc=label, disable=not progress, file=sys.stderr)
        totals, pass_clips = _evaluate_pass(setup, offline, pass_rows, attempt)
        clips += pass_clips
        passes.append(totals)
        total.add(totals)
    return {**setup.configuration(), **_figures(rows, passes, total, offline.seconds, repeat), "clips": clips}


def _evaluate_pass(setup: _Setup, offline: _OfflineTranscripts, rows: Iterable[ManifestRow],
                   attempt: int) -> tuple[_Totals, list[dict[str, Any]]]:
    """Stream every clip once: the pass's pooled figures, and its clips' JSON entries tagged with ``attempt``."""
    totals = _Totals()
    clips: list[dict[str, Any]] = []
    for row in rows:
        audio = load_audio(row.path)
        run = setup.stream(row, audio)
        offline_words = offline.of(row, audio, setup.clip_language(row))
        clip, clip_totals = _score_clip(row, run, offline_words, len(audio) / SAMPLE_RATE, setup.settings)
        clip["run"] = attempt
        clips.append(clip)
        totals.add(clip_totals)
    return totals, clips


def _figures(rows: list[ManifestRow], passes: list[_Totals], total: _Totals, offline_s: float,
             repeat: int) -> dict[str, Any]:
    """The report's pooled results, after its configuration and before its clips."""
    wers = [p.wer for p in passes if p.wer is not None]
    return {
        "n_clips": len(rows),
        "n_referenced": sum(row.reference is not None for row in rows),
        "audio_s": round(total.audio_s / repeat, 2),
        **total.summary(),
        "rtf_offline": round(offline_s * repeat / total.audio_s, 3) if total.audio_s else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "repeat": repeat,
        "runs": [p.summary() for p in passes],
        "wer_spread": round(max(wers) - min(wers), 4) if wers else None,
        "error_breakdown": total.breakdown.as_json(),
        "word_timing": {words: offsets.summary() for words, offsets in total.timing.items()} or None,
        "repeated_phrases": total.repeated,
        "error_examples": total.breakdown.examples,
    }


def _score_clip(row: ManifestRow, run: StreamRun, offline_words: tuple[Word, ...], seconds: float,
                settings: ProcessorSettings) -> tuple[dict[str, Any], _Totals]:
    """One clip's JSON entry and its share of the pooled figures."""
    offline_text = join_words(offline_words)
    totals = _Totals(latencies=run.latencies, partial_latencies=run.partial_latencies,
                     end_latencies=run.end_latencies, compute_s=run.compute_s, audio_s=seconds)
    if row.reference is not None:
        totals.streaming = count_errors(row.reference, run.text, row.language)
        totals.offline = count_errors(row.reference, offline_text, row.language)
        totals.referenced = 1
    totals.vs_offline = count_errors(offline_text, run.text, row.language)
    totals.breakdown, totals.repeated = explain(row.name, run.trace, offline_words, row.language,
                                                settings.max_buffer_s)
    utterances = utterances_beside(row.path)
    if utterances:
        totals.timing = {"streaming": boundary_offsets(run.committed, utterances),
                         "offline": boundary_offsets(offline_words, utterances)}
    clip = {
        "file": row.name,
        "language": row.language,
        "audio_s": round(seconds, 3),
        **totals.summary(),
        "updates": run.updates,
        "max_buffer_s": round(run.max_buffer_s, 2),
        "error_breakdown": totals.breakdown.as_json(),
        "repeated_phrases": totals.repeated,
        "word_timing": {words: offsets.as_json() for words, offsets in totals.timing.items()} or None,
        "streaming_text": run.text,
        "offline_text": offline_text,
    }
    return clip, totals


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def markdown_table(report: dict[str, Any]) -> str:
    """One summary row, the shape docs/eval.md uses."""
    lat, part = report["latency_ms"], report["partial_latency_ms"]
    header = ("| model | min-chunk s | clips | audio s | WER stream | WER offline | WER vs offline | repeats "
              "| latency p50/p95/max ms | partial p50 ms | RTF | peak RSS MB |")
    rule = "|" + "---|" * 12
    row = (
        f"| {report['model']} | {report['min_chunk_s']} | {report['n_clips']} | {report['audio_s']} "
        f"| {_percent(report['wer_streaming'])} | {_percent(report['wer_offline'])} "
        f"| {_percent(report['wer_vs_offline'])} | {report['repeated_ngrams']} "
        f"| {lat['p50']}/{lat['p95']}/{lat['max']} | {part['p50']} | {report['rtf']} | {report['peak_rss_mb']} |"
    )
    lines = [header, rule, row]
    if report["repeat"] > 1:
        lines.append(f"\nWER of each run: {', '.join(_percent(r['wer_streaming'] if r['wer_streaming'] is not None else r['wer_vs_offline']) for r in report['runs'])} "
                     f"(spread {_percent(report['wer_spread'])})")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: str | Path | None) -> None:
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
