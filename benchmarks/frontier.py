"""Plot the accuracy/latency frontier: WER against committed p95, one point per policy and setting.

Each argument is ``LABEL=REPORT.json`` (a ``woasr eval --json`` report); the offline WER of
the first report is drawn as a line. Reports without references plot ``wer_vs_offline``.

    .venv/bin/python benchmarks/frontier.py --out docs/img/frontier_conv.png --title "conv/" \\
        "LA-2 0.5=r/before05_conv.json" "guards 0.5=r/g05_conv.json" ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("points", nargs="+", metavar="LABEL=REPORT.json")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    offline = None
    for index, point in enumerate(args.points):
        label, _, path = point.partition("=")
        report = json.loads(Path(path).read_text())
        wer = report["wer_streaming"] if report["wer_streaming"] is not None else report["wer_vs_offline"]
        p95 = report["latency_ms"]["p95"] / 1000
        ax.scatter(p95, wer * 100, s=36)
        below = index % 2  # alternate above/below so that neighbours do not overwrite each other
        ax.annotate(label, (p95, wer * 100), textcoords="offset points", xytext=(5, -11 if below else 4), fontsize=8)
        if offline is None and report["wer_offline"] is not None:
            offline = report["wer_offline"] * 100
    if offline is not None:
        ax.axhline(offline, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"offline {offline:.2f}%", (ax.get_xlim()[0], offline), textcoords="offset points",
                    xytext=(4, 4), fontsize=8, color="grey")
    ax.set_xlabel("committed latency p95 (s)")
    ax.set_ylabel("WER (%)")
    ax.set_title(args.title or "accuracy / latency frontier")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
