"""Batched vs sequential vs parallel model calls for several streams' windows (issue 7).

A server with N sessions runs N updates per round. This measures three ways to
run B updates of the same shape as the server's (``auto`` encoder window,
beam 5 or greedy, word-timestamp alignment) on CTranslate2 directly:

- ``sequential``: B calls one after the other on one worker;
- ``batched``: one ``encode`` + one ``generate`` + one ``align`` on a batch of B;
- ``parallel``: B calls on ``cores`` workers of one thread each (``inter_threads``),
  which is what ``woasr serve`` does by default;
- ``parallel batched``: the B windows split into one batch per worker.

The first two run once with every core on one call (``intra_threads = cores``)
and once with one thread.

Windows are B different 8 s cuts of a long real recording (so their lengths,
and their encoder input of 10 s, match: a batch needs equal shapes). Medians
of ``--repeats`` rounds after a warm-up. Prints a Markdown table of
milliseconds per window.

    .venv/bin/python benchmarks/batching.py [--batches 1,2,4,8] [--beam 5]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import ctranslate2
import numpy as np
from faster_whisper.audio import pad_or_trim
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer
from tokenizers import Tokenizer as HFTokenizer

from woasr.asr.models import resolve_model
from woasr.audio_io import load_audio
from woasr.core.audio import SAMPLE_RATE

from timing import median_ms

WINDOW_S = 8
FRAMES = 1000
"""The ``auto`` encoder input of an 8 s buffer (10 s floor)."""


class Calls:
    """Encode, generate and align a batch of mel windows, the way one streaming update does."""

    def __init__(self, model: ctranslate2.models.Whisper, tokenizer: Tokenizer, beam: int) -> None:
        self.model, self.tokenizer, self.beam = model, tokenizer, beam

    def run(self, mels: np.ndarray) -> None:
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mels))
        encoded = self.model.encode(features, to_cpu=False)
        prompt = list(self.tokenizer.sot_sequence)
        results = self.model.generate(encoded, [prompt] * len(mels), beam_size=self.beam, max_length=224)
        texts = [[t for t in r.sequences_ids[0] if t < self.tokenizer.eot] for r in results]
        self.model.align(encoded, prompt, texts, [WINDOW_S * 100] * len(mels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", default="../shared/audio/long/ljspeech_en_long.wav")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    path = resolve_model("tiny.en", "en").source
    audio = load_audio(args.audio)
    extractor = FeatureExtractor()
    batches = [int(b) for b in args.batches.split(",")]
    windows = [audio[(10 * i) * SAMPLE_RATE : (10 * i + WINDOW_S) * SAMPLE_RATE] for i in range(max(batches))]
    mels = np.stack([pad_or_trim(extractor(w)[:, :-1], FRAMES) for w in windows]).astype(np.float32)

    hf = HFTokenizer.from_file(os.path.join(path, "tokenizer.json"))
    wide = ctranslate2.models.Whisper(path, compute_type="int8", intra_threads=cores)
    narrow = ctranslate2.models.Whisper(path, compute_type="int8", inter_threads=cores, intra_threads=1)
    tokenizer = Tokenizer(hf, wide.is_multilingual, task="transcribe", language="en")
    on_wide, on_narrow = Calls(wide, tokenizer, args.beam), Calls(narrow, tokenizer, args.beam)
    pool = ThreadPoolExecutor(cores)

    def one_by_one(calls: Calls, b: int) -> None:
        for i in range(b):
            calls.run(mels[i : i + 1])

    def parallel(b: int) -> None:
        list(pool.map(lambda i: on_narrow.run(mels[i : i + 1]), range(b)))

    def parallel_batched(b: int) -> None:
        parts = [part for part in np.array_split(np.arange(b), cores) if len(part)]
        list(pool.map(lambda part: on_narrow.run(mels[part]), parts))

    columns: dict[str, Callable[[int], None]] = {
        f"sequential, {cores} threads": lambda b: one_by_one(on_wide, b),
        f"batched, {cores} threads": lambda b: on_wide.run(mels[:b]),
        "sequential, 1 thread": lambda b: one_by_one(on_narrow, b),
        "batched, 1 thread": lambda b: on_narrow.run(mels[:b]),
        f"parallel, {cores} workers x 1 thread": parallel,
        f"parallel batched, {cores} workers x 1 thread": parallel_batched,
    }
    print(f"tiny.en int8, {WINDOW_S} s windows, encoder input {FRAMES} frames, beam {args.beam}, {cores} cores; "
          "ms per window")
    print("| windows B | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for b in batches:
        row = [median_ms(lambda: run(b), args.repeats) / b for run in columns.values()]
        print(f"| {b} | " + " | ".join(f"{ms:.0f}" for ms in row) + " |", flush=True)


if __name__ == "__main__":
    main()
