"""Latency histograms of the load adapter: 3 significant digits per bucket (error < 0.5 %), merged exactly.

Pure Python with no project imports: the Locust processes load it next to ``locustfile_bpm.py``, also inside a
Kubernetes worker pod where only these two files are shipped (ConfigMap).
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def bucket(ms: float) -> float:
    """A latency rounded to 3 significant digits (the histogram key)."""
    if ms <= 0:
        return 0.0
    return float(f"{ms:.3g}")


def hist_add(hist: dict[str, int], ms: float) -> None:
    key = repr(bucket(ms))
    hist[key] = hist.get(key, 0) + 1


def hist_merge(into: dict[str, int], other: Mapping[str, int]) -> None:
    for key, count in other.items():
        into[key] = into.get(key, 0) + int(count)


def hist_percentile(hist: Mapping[str, int], pct: float) -> float:
    """Nearest-rank percentile of a histogram (0.0 when empty)."""
    total = sum(hist.values())
    if total == 0:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * total))
    seen = 0
    for key in sorted(hist, key=float):
        seen += hist[key]
        if seen >= rank:
            return float(key)
    return float(max(hist, key=float))


def hist_max(hist: Mapping[str, int]) -> float:
    return max((float(k) for k, v in hist.items() if v), default=0.0)
