"""Where one streaming update's compute goes, on real recordings, by buffer length.

Default (``stream``): replays recordings through the processor exactly as a
stream at the shipped defaults would see them (one update per ``--min-chunk``
of audio, compute not simulated as time, so every run is the same sequence of
updates) and times every model call of every update: mel features, encoder,
decoder (calls, generated tokens, beam size), word alignment, faster-whisper's
own Python, and the streaming policy (guards + agreement). Prints one Markdown
row per buffer-length bin and a total, including CPU core-seconds per audio
second (``time.process_time``, so waiting is not counted).

``--windows 2,5,10``: the older sweep, one buffer of each length cut from one
recording, full vs ``auto`` encoder window and beam 5 vs greedy.

    .venv/bin/python benchmarks/update_cost.py                 # conv/ and unref/, 60 s each
    .venv/bin/python benchmarks/update_cost.py --files '../shared/audio/conv/*.wav' --seconds 0
    .venv/bin/python benchmarks/update_cost.py --windows 2,5,10,15,20,25
"""

from __future__ import annotations

import argparse
import glob
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper.audio import pad_or_trim

from woasr.asr.faster_whisper_backend import FasterWhisperASR
from woasr.audio_io import load_audio
from woasr.cli import build_asr, build_parser, processor_settings
from woasr.core.audio import SAMPLE_RATE
from woasr.core.processor import OnlineASRProcessor

from timing import median_ms

BINS = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, float("inf"))
SOT_TOKENS = (50257, 50258)
"""<|startoftranscript|> of the English-only and of the multilingual vocabularies."""
PARTS = ("features", "encode", "generate", "align", "other")


@dataclass
class Tally:
    """Summed costs of the updates in one buffer-length bin (seconds, counts)."""

    updates: int = 0
    buffer_s: float = 0.0
    wall: float = 0.0
    cpu: float = 0.0
    policy: float = 0.0
    parts: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    generate_calls: int = 0
    tokens: int = 0
    beams: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, other: Tally) -> None:
        self.updates += other.updates
        self.buffer_s += other.buffer_s
        self.wall += other.wall
        self.cpu += other.cpu
        self.policy += other.policy
        for key, value in other.parts.items():
            self.parts[key] += value
        self.generate_calls += other.generate_calls
        self.tokens += other.tokens
        for key, value in other.beams.items():
            self.beams[key] += value


def forced_tokens(prompt: list[int]) -> int:
    """Text tokens after the start-of-transcript token: a forced prefix, returned in the result."""
    start = max((i for i, token in enumerate(prompt) if token in SOT_TOKENS), default=len(prompt))
    return sum(1 for token in prompt[start + 1 :] if token < 50256)


class TimedModel:
    """Stands in for the CTranslate2 model and times each call into it."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.tally = Tally()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _timed(self, part: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.tally.parts[part] += time.perf_counter() - began

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("encode", self._model.encode, *args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        results = self._timed("generate", self._model.generate, *args, **kwargs)
        prompts = args[1] if len(args) > 1 else kwargs["prompts"]
        self.tally.generate_calls += 1
        self.tally.beams[int(kwargs.get("beam_size", 1))] += 1
        self.tally.tokens += sum(len(r.sequences_ids[0]) - forced_tokens(p) for r, p in zip(results, prompts))
        return results

    def align(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("align", self._model.align, *args, **kwargs)

    def detect_language(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("encode", self._model.detect_language, *args, **kwargs)


class TimedFeatures:
    """Stands in for faster-whisper's feature extractor and times it."""

    def __init__(self, extractor: Any, model: TimedModel) -> None:
        self._extractor = extractor
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._extractor, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._model._timed("features", self._extractor, *args, **kwargs)


def profile_stream(asr: FasterWhisperASR, processor: OnlineASRProcessor, audio: np.ndarray, min_chunk: float,
                   bins: dict[int, Tally]) -> None:
    """Feed ``audio`` in ``min_chunk`` pieces, one update each, and add each update's costs to its bin."""
    whisper = asr.whisper
    timed = TimedModel(whisper.model)
    whisper.model, whisper.feature_extractor = timed, TimedFeatures(whisper.feature_extractor, timed)
    step = round(min_chunk * SAMPLE_RATE)
    try:
        processor.reset()
        for start in range(0, len(audio), step):
            processor.insert_audio(audio[start : start + step])
            last = start + step >= len(audio)
            request = processor.finish_request() if last else processor.prepare()
            if request is None:
                continue
            timed.tally = Tally()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            result = asr.transcribe(request.audio, request.prompt, request.language, request.prefix)
            model_wall = time.perf_counter() - wall0
            policy0 = time.perf_counter()
            processor.apply_finish(result) if last else processor.apply(result)
            tally = timed.tally
            tally.policy = time.perf_counter() - policy0
            tally.wall = time.perf_counter() - wall0
            tally.cpu = time.process_time() - cpu0
            tally.parts["other"] = model_wall - sum(tally.parts[p] for p in PARTS if p != "other")
            tally.updates, tally.buffer_s = 1, len(request.audio) / SAMPLE_RATE
            index = next(i for i, edge in enumerate(BINS[1:]) if tally.buffer_s <= edge)
            bins[index].add(tally)
    finally:
        whisper.model, whisper.feature_extractor = timed._model, whisper.feature_extractor._extractor


def row(label: str, tally: Tally, audio_s: float | None = None) -> str:
    n = max(tally.updates, 1)
    ms = lambda seconds: f"{1000 * seconds / n:.0f}"  # noqa: E731
    beams = ", ".join(f"b{k}: {v}" for k, v in sorted(tally.beams.items()))
    cells = [label, str(tally.updates), f"{tally.buffer_s / n:.1f}", ms(tally.wall)]
    cells += [ms(tally.parts[p]) for p in PARTS] + [ms(tally.policy)]
    cells += [f"{tally.generate_calls / n:.2f}", f"{tally.tokens / n:.1f}", beams]
    cells += [f"{tally.cpu / audio_s:.3f}" if audio_s else ""]
    return "| " + " | ".join(cells) + " |"


def stream_mode(args: argparse.Namespace) -> None:
    cli_args = build_parser().parse_args(["simulate", "unused.wav", *args.options])
    asr = build_asr(cli_args)
    processor = OnlineASRProcessor(asr, asr.language, processor_settings(cli_args))
    files = sorted(f for pattern in args.files.split(",") for f in glob.glob(pattern))
    bins: dict[int, Tally] = defaultdict(Tally)
    audio_s = 0.0
    for path in files:
        audio = load_audio(path)
        if args.seconds > 0:
            audio = audio[: round(args.seconds * SAMPLE_RATE)]
        audio_s += len(audio) / SAMPLE_RATE
        profile_stream(asr, processor, audio, cli_args.min_chunk, bins)
        print(f"  {path}: {len(audio) / SAMPLE_RATE:.0f} s", flush=True)
    print(f"\n{len(files)} recordings, {audio_s:.0f} s of audio, options: {' '.join(args.options) or 'defaults'}\n")
    print("| buffer s | updates | mean buffer s | update ms | features ms | encoder ms | decoder ms | "
          "alignment ms | faster-whisper Python ms | policy ms | decoder calls | tokens generated | beams | "
          "CPU core-s per audio s |")
    print("|---" * 14 + "|")
    total = Tally()
    for index in sorted(bins):
        print(row(f"{BINS[index]:g}-{BINS[index + 1]:g}", bins[index]))
        total.add(bins[index])
    print(row("all", total, audio_s))


def windows_mode(args: argparse.Namespace) -> None:
    audio = load_audio(args.audio)
    base = FasterWhisperASR("tiny.en", "en")
    variants = {
        "full b5": base.with_decode(encoder_window="full", beam_size=5, silence_pad_s=0.0),
        "auto b5": base.with_decode(encoder_window="auto", beam_size=5),
        "auto b1": base.with_decode(encoder_window="auto", beam_size=1),
    }
    model = base.whisper
    print("| buffer s | encoder 3000 frames ms | encoder auto frames ms | "
          + " | ".join(f"update {name} ms" for name in variants) + " |")
    print("|---" * (3 + len(variants)) + "|")
    for seconds in (float(w) for w in args.windows.split(",")):
        window = audio[60 * SAMPLE_RATE : int((60 + seconds) * SAMPLE_RATE)]
        features = model.feature_extractor(window)[:, :-1]
        frames = base.with_decode(encoder_window="auto").encoder_frames(len(window))

        def encode(n: int) -> None:
            x = np.ascontiguousarray(pad_or_trim(features, n)[None])
            model.model.encode(ctranslate2.StorageView.from_array(x), to_cpu=False)

        cells = [median_ms(lambda: encode(3000), args.repeats), median_ms(lambda: encode(frames), args.repeats)]
        cells += [median_ms(lambda v=v: v.transcribe(window, "", "en"), args.repeats) for v in variants.values()]
        print(f"| {seconds:g} | " + " | ".join(f"{x:.0f}" for x in cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", default="../shared/audio/conv/*.wav,../shared/audio/unref/*.wav",
                        help="comma-separated globs of recordings (stream mode)")
    parser.add_argument("--seconds", type=float, default=60.0, help="first seconds of each recording (0: all)")
    parser.add_argument("--windows", help="buffer lengths for the window sweep (e.g. 2,5,10,15,20,25)")
    parser.add_argument("--audio", default="../shared/audio/long/ljspeech_en_long.wav", help="window sweep audio")
    parser.add_argument("--repeats", type=int, default=3, help="window sweep: timed runs per cell")
    parser.add_argument("options", nargs=argparse.REMAINDER,
                        help="after --: `woasr simulate` options (e.g. -- --beam 1 --min-chunk 1)")
    args = parser.parse_args()
    args.options = [o for o in args.options if o != "--"]
    windows_mode(args) if args.windows else stream_mode(args)


if __name__ == "__main__":
    main()
