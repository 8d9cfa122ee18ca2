"""Score the texts of ``woasr eval --json`` reports again with today's normaliser and metrics.

Reports made by an older commit (e.g. the "before" runs of docs/eval.md) keep their texts per
clip; this recomputes ``wer_streaming``, ``wer_offline``, ``wer_vs_offline`` and
``repeated_ngrams`` from them, so that before and after are scored by one scorer.

    .venv/bin/python benchmarks/rescore.py ../shared/audio/manifest.tsv old.json [more.json ...] [--write DIR]

With ``--write`` each report is also written to DIR with the new figures in place (for
benchmarks/frontier.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from woasr.tools.errors import repeated_phrases
from woasr.tools.manifest import read_manifest
from woasr.tools.textnorm import ErrorCount, count_errors, normalize_text


def rescore(report: dict, references: dict[str, str | None], clips: list[dict] | None = None) -> dict[str, object]:
    """The figures of a report's clips (all of them, or ``clips``) under today's scorer."""
    streaming, offline, vs_offline = ErrorCount(), ErrorCount(), ErrorCount()
    repeats: list[str] = []
    for clip in report["clips"] if clips is None else clips:
        language, reference = clip["language"], references.get(clip["file"])
        if reference is not None:
            streaming += count_errors(reference, clip["streaming_text"], language)
            offline += count_errors(reference, clip["offline_text"], language)
        vs_offline += count_errors(clip["offline_text"], clip["streaming_text"], language)
        repeats += repeated_phrases(normalize_text(clip["streaming_text"], language).split(),
                                    normalize_text(clip["offline_text"], language).split())
    scored = streaming.reference_tokens > 0
    if clips is not None:
        return {"wer_streaming": round(streaming.rate, 4) if scored else None,
                "wer_vs_offline": round(vs_offline.rate, 4)}
    runs = sorted({clip.get("run", 0) for clip in report["clips"]})
    return {
        "runs": [rescore(report, references, [c for c in report["clips"] if c.get("run", 0) == run]) for run in runs],
        "wer_streaming": round(streaming.rate, 4) if scored else None,
        "wer_offline": round(offline.rate, 4) if scored else None,
        "wer_vs_offline": round(vs_offline.rate, 4),
        "repeated_ngrams": len(repeats),
        "repeated_phrases": repeats,
        "latency_ms": report["latency_ms"],
        "rtf": report["rtf"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", nargs="+", help="manifest(s) with the references, then the reports (.json)")
    parser.add_argument("--write", metavar="DIR", help="write the re-scored reports here")
    args = parser.parse_args()
    manifests = [p for p in args.manifest if p.endswith(".tsv")]
    references = {row.name: row.reference for m in manifests for row in read_manifest(m)}
    for path in (Path(p) for p in args.manifest if p.endswith(".json")):
        report = json.loads(path.read_text())
        figures = rescore(report, references)
        print(path.name, json.dumps(figures))
        if args.write:
            Path(args.write).mkdir(parents=True, exist_ok=True)
            (Path(args.write) / path.name).write_text(json.dumps({**report, **figures}, indent=1) + "\n")


if __name__ == "__main__":
    main()
