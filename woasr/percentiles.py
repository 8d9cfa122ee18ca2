"""Percentiles of latency figures, one way for the server's logs, metrics, admission and the tools."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np

POINTS = {"p50": 50, "p90": 90, "p95": 95, "max": 100}
"""Report key -> percentile."""


def percentiles(values: Collection[float], points: Iterable[float]) -> list[float] | None:
    """The ``points`` (0-100) of ``values``, or None when there are none."""
    if not values:
        return None
    return [float(p) for p in np.percentile(np.fromiter(values, float, len(values)), list(points))]


def percentiles_ms(
    values: Collection[float], keys: tuple[str, ...] = ("p50", "p95", "max"), ndigits: int | None = 1
) -> dict[str, float | None]:
    """Seconds in, milliseconds out, keyed ``p50``/``p90``/``p95``/``max`` as reports name them (None: no values)."""
    found = percentiles(values, (POINTS[k] for k in keys))
    if found is None:
        return {k: None for k in keys}
    return {k: round(v * 1000, ndigits) for k, v in zip(keys, found, strict=True)}
