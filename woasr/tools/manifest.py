"""The manifest of reference recordings, shared by eval, bench and tests.

A manifest is a TSV file (``file seconds language [reference] ...``) next to
the audio it lists; :func:`read_manifest` turns its rows into
:class:`ManifestRow` values with the paths resolved.
"""

from __future__ import annotations

import csv
import fnmatch
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ManifestRow:
    path: Path
    name: str
    seconds: float
    language: str
    reference: str | None
    """None where the manifest has no reference (streaming is then scored against offline only)."""


def read_manifest(path: str | Path, pattern: str | None = None, limit: int | None = None) -> list[ManifestRow]:
    """Rows of a TSV manifest (``file seconds language [reference] ...``), paths resolved.

    ``pattern`` is a glob on the file column; several may be given, comma-separated.
    A manifest without a ``reference`` column (``unref/``) gives rows without one.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = [
            ManifestRow(path.parent / r["file"], r["file"], float(r["seconds"]), r["language"],
                        r.get("reference") or None)
            for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if pattern is None or any(fnmatch.fnmatch(r["file"], p.strip()) for p in pattern.split(","))
        ]
    return rows[:limit] if limit else rows
