"""The ``woasr`` command: one entry point, a subcommand per tool."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from woasr.asr.models import ModelUnavailableError

log = logging.getLogger("woasr")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options every command that loads a model shares."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None,
                       help="tiny.en, base, a CTranslate2 folder or a hub name "
                            "(default: tiny.en for --lang en, else base)")
    group.add_argument("--lang", default="en",
                       help="language code, or 'auto' to detect (default: en; eval: each clip's manifest language)")
    group.add_argument("--backend", default="faster-whisper", choices=["faster-whisper"])
    group.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    group.add_argument("--compute-type", default="int8", help="CTranslate2 compute type (default: int8)")
    group.add_argument("--threads", type=int, default=0, help="CPU threads for the model (0: all cores)")
    group.add_argument("--beam", type=int, default=5, help="beam size (default: 5; 1 = greedy)")
    group.add_argument("--encoder-window", choices=["full", "auto"], default="auto",
                       help="full: pad to 30 s as faster-whisper does; auto: encode the buffer "
                            "+1 s, at least 10 s (default: auto, see docs/eval.md)")
    group.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    group.add_argument("--vad-filter", action="store_true", help="faster-whisper's Silero VAD filter")


def language_arg(value: str | None) -> str | None:
    return None if value in (None, "", "auto") else value


def build_asr(args: argparse.Namespace):
    from woasr.asr.faster_whisper_backend import DecodeSettings, FasterWhisperASR

    decode = DecodeSettings(
        beam_size=args.beam, task=args.task, vad_filter=args.vad_filter, encoder_window=args.encoder_window
    )
    return FasterWhisperASR(
        args.model, language_arg(args.lang), device=args.device, compute_type=args.compute_type,
        cpu_threads=args.threads, decode=decode,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    from woasr.audio_io import load_audio
    from woasr.core.processor import OnlineASRProcessor
    from woasr.tools.simulate import simulate

    asr = build_asr(args)
    processor = OnlineASRProcessor(asr, asr.language)
    audio = load_audio(args.file)
    for step in simulate(processor, audio, args.min_chunk, aware=not args.comp_unaware):
        update = step.update
        if args.json:
            print(json.dumps({
                "emission_ms": round(step.emission * 1000, 1),
                "audio_ms": round(step.audio_end * 1000, 1),
                "compute_ms": round(step.compute * 1000, 1),
                "buffer_s": round(step.buffer_s, 2),
                "final": step.final,
                "committed": [
                    {"text": w.text.strip(), "beg_ms": round(w.start * 1000), "end_ms": round(w.end * 1000),
                     "probability": round(w.probability, 3)} for w in update.committed
                ],
                "partial": update.partial_text,
            }, ensure_ascii=False), flush=True)
        elif update.committed:
            first, last = update.committed[0], update.committed[-1]
            print(f"{step.emission * 1000:.4f} {first.start * 1000:.0f} {last.end * 1000:.0f} {update.committed_text}",
                  flush=True)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from woasr.tools.evaluate import evaluate, markdown_table, read_manifest, write_report

    rows = read_manifest(args.manifest, args.glob, args.limit)
    if not rows:
        log.error("no manifest rows match %r", args.glob)
        return 2
    languages = {row.language for row in rows}
    if args.lang is None and len(languages) == 1:
        args.lang = languages.pop()  # one language: its default model, no detection
    asr = build_asr(args)
    report = evaluate(rows, asr, args.min_chunk, language=args.lang, aware=not args.comp_unaware)
    write_report(report, args.json)
    print(markdown_table(report))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from woasr.asr import models

    if args.action == "list":
        for name in models.OFFLINE_MODELS:
            try:
                where = str(models.offline_dir(name, prepare=False))
            except ModelUnavailableError as exc:
                where = f"not ready: {exc}"
            print(f"{name}\t{where}")
        print("(hub names such as large-v2 also work where the model hub can be reached)")
        return 0
    if not args.name:
        log.error("models %s needs a model name (%s)", args.action, ", ".join(models.OFFLINE_MODELS))
        return 2
    if args.action == "prepare":
        path = models.offline_dir(args.name) if args.name in models.OFFLINE_MODELS else None
        if path is None:
            log.error("only offline models can be prepared: %s", ", ".join(models.OFFLINE_MODELS))
            return 2
        print(path)
        return 0
    print(models.resolve_model(args.name, None).source)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="woasr", description="Real-time streaming speech recognition on Whisper.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="stream a file through the processor on a simulated clock")
    sim.add_argument("file")
    add_model_options(sim)
    sim.add_argument("--min-chunk", type=float, default=1.0, help="seconds of audio per update (default: 1.0)")
    sim.add_argument("--comp-unaware", action="store_true", help="compute takes no simulated time")
    sim.add_argument("--json", action="store_true", help="JSON lines with words, partials and timings")
    sim.set_defaults(func=cmd_simulate)

    ev = sub.add_parser("eval", help="streaming vs offline WER, latency and cost over a manifest")
    ev.add_argument("--manifest", required=True, help="TSV: file seconds language reference ...")
    ev.add_argument("--glob", default=None, help="only rows whose file matches, e.g. 'en/*'")
    ev.add_argument("--limit", type=int, default=None)
    add_model_options(ev)
    ev.set_defaults(lang=None)
    ev.add_argument("--min-chunk", type=float, default=1.0)
    ev.add_argument("--comp-unaware", action="store_true")
    ev.add_argument("--json", default=None, metavar="OUT", help="write the JSON report here")
    ev.set_defaults(func=cmd_eval)

    mo = sub.add_parser("models", help="list, locate or prepare the offline models")
    mo.add_argument("action", choices=["list", "path", "prepare"])
    mo.add_argument("name", nargs="?")
    mo.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except ModelUnavailableError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
