"""How well word times match known utterance boundaries (``<clip>.segments.json``).

A clip of ``long/`` (and the phone call of ``conv/``) has a ``.segments.json`` beside it listing
each utterance's start and end. The words a backend returns are shared out among the
utterances (a word belongs to the utterance whose stretch holds its middle; stretches meet
half-way between utterances), and each utterance's first word start and last word end are
compared with its boundaries. Positive: the word is later than the boundary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from woasr.core.records import Word
from woasr.percentiles import percentiles_ms

REACH_S = 1.0
"""How far before the first utterance and after the last one a word still counts (beyond: not speech)."""


@dataclass(frozen=True, slots=True)
class Utterance:
    start: float
    end: float


def utterances_beside(clip: Path) -> list[Utterance] | None:
    """The utterances of ``<clip stem>.segments.json`` beside the clip, or None when there is none."""
    path = clip.with_suffix(".segments.json")
    if not path.is_file():
        return None
    segments = json.loads(path.read_text(encoding="utf-8"))["segments"]
    return sorted((Utterance(float(s["start_s"]), float(s["end_s"])) for s in segments), key=lambda u: u.start)


@dataclass(slots=True)
class BoundaryOffsets:
    """Signed seconds from each utterance's boundaries to its words' (None: no word fell in it)."""

    starts: list[float | None] = field(default_factory=list)
    ends: list[float | None] = field(default_factory=list)

    def add(self, other: BoundaryOffsets) -> None:
        self.starts += other.starts
        self.ends += other.ends

    def summary(self) -> dict[str, Any]:
        """Absolute errors (p50, p90, max) and the median signed offset, in ms, for starts and ends."""
        starts = [s for s in self.starts if s is not None]
        ends = [e for e in self.ends if e is not None]
        return {
            "utterances": len(self.starts),
            "without_words": sum(s is None for s in self.starts),
            "start_error_ms": percentiles_ms([abs(s) for s in starts], ("p50", "p90", "max")),
            "end_error_ms": percentiles_ms([abs(e) for e in ends], ("p50", "p90", "max")),
            "start_offset_ms": percentiles_ms(starts, ("p50",)),
            "end_offset_ms": percentiles_ms(ends, ("p50",)),
        }

    def as_json(self) -> dict[str, Any]:
        """The summary and every offset in ms (in utterance order, so two runs can be compared one by one)."""
        def ms(values: list[float | None]) -> list[int | None]:
            return [None if v is None else round(v * 1000) for v in values]

        return {**self.summary(), "start_offsets_ms": ms(self.starts), "end_offsets_ms": ms(self.ends)}


def boundary_offsets(words: Sequence[Word], utterances: Sequence[Utterance]) -> BoundaryOffsets:
    """Each utterance's first-word start and last-word end against its own boundaries."""
    cuts = [(a.end + b.start) / 2 for a, b in zip(utterances, utterances[1:], strict=False)]
    lows = [utterances[0].start - REACH_S, *cuts] if utterances else []
    highs = [*cuts, utterances[-1].end + REACH_S] if utterances else []
    offsets = BoundaryOffsets()
    for utterance, low, high in zip(utterances, lows, highs, strict=True):
        inside = [w for w in words if low <= (w.start + w.end) / 2 < high]
        offsets.starts.append(inside[0].start - utterance.start if inside else None)
        offsets.ends.append(inside[-1].end - utterance.end if inside else None)
    return offsets
