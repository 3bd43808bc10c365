"""Traffic evidence for the cutover steps: a sample of requests against a URL (the Locust load generator by default,
the HTTP adapter's probe otherwise) and the decision rule a stage or a watch round is judged by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from migrate.errors import BpmError
from migrate.step import StepContext


@dataclass(frozen=True)
class Slo:
    min_sample: int  # a decision needs at least this many requests per URL
    max_error_rate: float
    max_p95_ms: float


def sample(
    ctx: StepContext,
    url: str,
    *,
    requests: int,
    rps: float,
    timeout_s: float,
    concurrency: int,
    using: str,
    label: str,
) -> dict[str, Any]:
    """``requests`` GETs of ``url``; the result as evidence (count, errors, error_rate, p95_ms, p99_ms, ...).

    ``using = "load"``: the load generator (open model, latency from the intended send time) at ``rps`` for
    ``requests / rps`` seconds. ``using = "http"``: the HTTP adapter's closed-loop probe (``concurrency``)."""
    try:
        if using == "load":
            from migrate.adapters.load import LoadSpec, RequestSpec

            parts = urlsplit(url)
            spec = LoadSpec(
                hosts=[f"{parts.scheme}://{parts.netloc}"],
                requests=[RequestSpec(name=label, method="GET", path=parts.path or "/")],
                target_rps=rps,
                duration_s=max(1.0, requests / rps),
                workers=0,
                timeout_s=timeout_s,
                label=label,
            )
            res = ctx.adapters.get("load").run(spec, ctx.artifacts_dir() / "samples")
            return {
                "url": url,
                "using": "load",
                "count": int(res.requests),
                "errors": int(res.failures),
                "error_rate": float(res.error_rate),
                "p50_ms": float(res.p50_ms),
                "p95_ms": float(res.p95_ms),
                "p99_ms": float(res.p99_ms),
                "generator_saturated": bool(res.generator_saturated),
            }
        stats = ctx.adapters.http().probe(url, requests=requests, concurrency=concurrency, timeout=timeout_s)
        return {
            "url": url,
            "using": "http",
            "count": int(stats.count),
            "errors": int(stats.errors),
            "error_rate": float(stats.error_rate),
            "p50_ms": float(stats.p50_ms),
            "p95_ms": float(stats.p95_ms),
            "p99_ms": float(stats.p99_ms),
        }
    except BpmError as exc:  # a sample that cannot run is a failing sample: never shift traffic blind
        return {"url": url, "using": using, "count": 0, "errors": 0, "error": str(exc).splitlines()[0]}


def judge(entry: dict[str, Any], slo: Slo) -> list[str]:
    """Why this sample breaches the SLO (empty = it holds)."""
    if entry.get("error"):
        return [f"sample error: {entry['error']}"]
    bad = []
    if int(entry.get("count") or 0) < slo.min_sample:
        bad.append(f"sample of {entry.get('count')} requests < minimum {slo.min_sample}")
    if float(entry.get("error_rate") or 0) > slo.max_error_rate:
        bad.append(f"error rate {float(entry['error_rate']):.4f} > {slo.max_error_rate:g}")
    if float(entry.get("p95_ms") or 0) > slo.max_p95_ms:
        bad.append(f"p95 {float(entry['p95_ms']):.1f} ms > {slo.max_p95_ms:g} ms")
    return bad
