"""Traffic evidence for the cutover steps: a sample of requests against a URL (the Locust load generator by default,
the HTTP adapter's probe otherwise) and the decision rule a stage or a watch round is judged by."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field

from migrate.errors import BpmError
from migrate.step import StepContext, StepSettings

from ._alarms import alarm_check


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


@dataclass(frozen=True)
class Sampling:
    requests: int
    rps: float
    timeout_s: float
    concurrency: int
    using: str  # load | http


def sample_round(
    ctx: StepContext, targets: list[tuple[str, str]], slo: Slo, how: Sampling, *, label: str
) -> list[dict[str, Any]]:
    """One sample per (via, url), each judged; a firing SLO alarm (observability step) is a breach too."""
    out = []
    for via, url in targets:
        entry = sample(
            ctx,
            url,
            requests=how.requests,
            rps=how.rps,
            timeout_s=how.timeout_s,
            concurrency=how.concurrency,
            using=how.using,
            label=f"{label}-{via}",
        )
        entry["via"] = via
        breach = judge(entry, slo)
        entry["ok"] = not breach
        if breach:
            entry["breach"] = "; ".join(breach)
        out.append(entry)
    watched = ctx.allowed_upstream is None or "observability" in ctx.allowed_upstream  # a plan without the step
    alarms = alarm_check(ctx) if watched else None
    if alarms is not None and not alarms.ok:
        out.append({"via": "alarms", "url": "cloudwatch", "ok": False, "breach": f"{alarms.observed} {alarms.detail}"})
    return out


class SamplingSettings(StepSettings):
    """The keys of a step that decides on samples of requests: how a sample is taken and the SLO it is judged by.
    The defaults and descriptions are dns-cutover's (a stage's sample); post-cutover-watch overrides some."""

    sample_with: str = Field("load", pattern="^(load|http)$", description="load generator or HTTP probe")
    sample_rps: float = Field(200, gt=0, description="arrival rate of a sample (load generator)")
    probe_concurrency: int = Field(8, ge=1, description="concurrency of the HTTP probe")
    probe_timeout_s: float = Field(5, gt=0, description="per request")
    max_error_rate: float = Field(0.01, ge=0, description="a breach reverts all traffic to the old stack")
    max_p95_ms: float = Field(200, gt=0, description="a breach reverts all traffic to the old stack")

    def judged_round(
        self, ctx: StepContext, targets: list[tuple[str, str]], requests: int, *, label: str
    ) -> list[dict[str, Any]]:
        """:func:`sample_round` of ``requests`` per URL, a sample smaller than that being a breach."""
        slo = Slo(requests, self.max_error_rate, self.max_p95_ms)
        how = Sampling(requests, self.sample_rps, self.probe_timeout_s, self.probe_concurrency, self.sample_with)
        return sample_round(ctx, targets, slo, how, label=label)


def soak(
    ctx: StepContext,
    clock: Any,
    soak_s: float,
    interval_s: float,
    round_fn: Callable[[], list[dict[str, Any]]],
    label: str,
) -> dict[str, Any]:
    """Rounds until ``soak_s`` is over (at least one); stops at the first breaching round. The evidence."""
    start = clock.now()
    rounds: list[list[dict[str, Any]]] = []
    while True:
        results = round_fn()
        rounds.append(results)
        shown = ", ".join(
            f"{r['via']} {r['url']} n={r.get('count')} {'ok' if r['ok'] else r['breach']}" for r in results
        )
        ctx.log(f"{label}: round {len(rounds)}: {shown}")
        if not all(r["ok"] for r in results):
            break
        remaining = start + soak_s - clock.now()
        if remaining <= 0:
            break
        clock.sleep(min(interval_s, remaining))
    flat = [r for rnd in rounds for r in rnd]
    return {
        "ok": all(r["ok"] for r in flat),
        "rounds": len(rounds),
        "soak_s": round(clock.now() - start, 3),
        "requests": sum(int(r.get("count") or 0) for r in flat),
        "worst_error_rate": max((float(r.get("error_rate") or 0) for r in flat), default=0.0),
        "worst_p95_ms": max((float(r.get("p95_ms") or 0) for r in flat), default=0.0),
        "last_round": rounds[-1],
        "breach": next((f"{r['via']} {r['url']}: {r['breach']}" for r in flat if r.get("breach")), None),
    }


def write_evidence(ctx: StepContext, kind: str, stem: str, record: dict[str, Any]) -> Path:
    """The evidence of a revert as a checksummed artifact (``state/<env>/artifacts/<step>/<stem>.json``)."""
    path = ctx.artifacts_dir() / f"{stem}.json"
    sha, size = ctx.adapters.get("archive").write_text(path, json.dumps(record, indent=2, default=str))
    ctx.artifact(kind, path, sha, size)
    return path
