"""Where one streaming update's compute goes, by buffer length and decoding settings.

Times ``FasterWhisperASR.transcribe`` (one update) on buffers of 2-25 s cut
from a long real recording, for the full 30 s encoder window vs the ``auto``
window, beam 5 vs greedy, and the encoder call alone at both input lengths.
Medians of ``--repeats`` runs after one warm-up. Prints a Markdown table.

    .venv/bin/python benchmarks/update_cost.py [--audio ../shared/audio/long/ljspeech_en_long.wav]
"""

from __future__ import annotations

import argparse

import ctranslate2
import numpy as np
from faster_whisper.audio import pad_or_trim

from woasr.asr.faster_whisper_backend import FasterWhisperASR
from woasr.audio_io import load_audio
from woasr.core.audio import SAMPLE_RATE

from timing import median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", default="../shared/audio/long/ljspeech_en_long.wav")
    parser.add_argument("--windows", default="2,5,10,15,20,25")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

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

        row = [median_ms(lambda: encode(3000), args.repeats), median_ms(lambda: encode(frames), args.repeats)]
        row += [median_ms(lambda v=v: v.transcribe(window, "", "en"), args.repeats) for v in variants.values()]
        print(f"| {seconds:g} | " + " | ".join(f"{x:.0f}" for x in row) + " |", flush=True)


if __name__ == "__main__":
    main()
