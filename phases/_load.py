"""Load gates shared by ``load-test`` and ``ml-perf``: run a Locust load through the load adapter, record the result
(summary, Locust's stats and HTML report as artifacts, a JSON report, metrics, a table in the log) and judge it.

The mechanics (processes, open model, corrected latency) live in ``migrate/adapters/load.py``; this module holds
what the two gate steps decide alike.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from migrate.errors import StepFailed
from migrate.step import StepContext, StepSettings

if TYPE_CHECKING:
    from migrate.adapters.load import Gate, LoadAdapter, LoadResult, LoadSpec, RequestSpec


class GateSettings(StepSettings):
    """The settings both load gates share (each step adds its own and may change a default)."""

    duration_s: float = Field(60.0, gt=0, description="seconds of load")
    workers: int = Field(0, ge=0, description="Locust workers (0 = sized from target_rps, measured req/s per core)")
    timeout_s: float = Field(5.0, gt=0, description="per-request timeout (a timeout is a failure)")
    p95_ms: float | None = Field(None, gt=0, description="gate: p95 must stay below (default: from [targets])")
    max_error_rate: float | None = Field(
        None, ge=0, description="gate: error rate must stay below (default: [targets] error_rate, 0.1 %)"
    )
    min_rate_fraction: float = Field(0.95, gt=0, le=1, description="gate: achieved rate >= this x target")
    auth_header_env: str | None = Field(None, description="env var holding the Authorization header value")
    verify_requests: int = Field(20, ge=0, description="verify: closed-loop probe of this many requests")


def gate_from(ctx: StepContext, s: GateSettings, default_p95_ms: float) -> Gate:
    """The gate's thresholds: the step's settings, else the plan's criteria ([targets])."""
    from migrate.adapters.load import Gate

    return Gate(
        p95_ms=s.p95_ms if s.p95_ms is not None else default_p95_ms,
        max_error_rate=s.max_error_rate if s.max_error_rate is not None else ctx.targets.error_rate,
        min_rate_fraction=s.min_rate_fraction,
    )


def spec_from(
    s: GateSettings, hosts: list[str], requests: list[RequestSpec], target_rps: float, label: str
) -> LoadSpec:
    """The load a gate sends: what and how fast (the step's), for the duration, workers and timeout of its settings."""
    from migrate.adapters.load import LoadSpec

    return LoadSpec(
        hosts=hosts,
        requests=requests,
        target_rps=target_rps,
        duration_s=s.duration_s,
        workers=s.workers,
        timeout_s=s.timeout_s,
        label=label,
    )


#: the BetterPrompts API as users drive it: enhance (the main path), classify, and the health check
DEFAULT_API_MIX: list[dict[str, Any]] = [
    {
        "name": "enhance",
        "method": "POST",
        "path": "/api/v1/enhance",
        "json": {"text": "Summarise the quarterly report in three bullet points for the board."},
        "weight": 6,
    },
    {
        "name": "classify",
        "method": "POST",
        "path": "/api/v1/classify",
        "json": {"text": "Write a haiku about database migrations."},
        "weight": 3,
    },
    {"name": "health", "method": "GET", "path": "/health", "weight": 1},
]


def load_adapter(ctx: StepContext, hosts: list[str]) -> LoadAdapter:
    adapter: LoadAdapter = ctx.adapters.get("load")
    if adapter.http is not None:
        for host in hosts:
            adapter.http.allow(host)  # configured for this step (settings or an upstream output): an allowed target
    return adapter


def run_load(ctx: StepContext, adapter: LoadAdapter, spec: LoadSpec) -> LoadResult:
    """Run ``spec`` to its end with a progress bar (seconds of load)."""
    out_dir = ctx.artifacts_dir()
    run = adapter.start(spec, out_dir)
    with ctx.progress(
        f"{spec.label}: {spec.target_rps:,.6g} req/s for {spec.duration_s:g} s", total=spec.duration_s, unit="s"
    ) as bar:
        started = time.monotonic()
        shown = 0.0
        while not run.wait(timeout=1.0):
            now = min(spec.duration_s, time.monotonic() - started)
            bar.advance(max(0.0, now - shown))
            shown = now
            if time.monotonic() > run.deadline:
                break
    return run.stop()


def record(
    ctx: StepContext,
    result: LoadResult,
    failures: list[str],
    *,
    report: Path,
    params: Mapping[str, Any],
) -> list[tuple[str, str]]:
    """Artifacts, JSON report (with ``at`` and ``failures``), metrics and the log table. Returns the table rows."""
    for kind, path in (
        ("load-summary", result.summary_json),
        ("locust-stats", result.stats_json),
        ("locust-report", result.report_html),
    ):
        if path:
            _artifact(ctx, kind, Path(path))
    stats = result.to_outputs()
    data = {"params": dict(params), "stats": stats, "failures": failures, "at": time.time()}
    sha, size = ctx.adapters.get("archive").write_text(report, json.dumps(data, indent=2, sort_keys=True, default=str))
    ctx.artifact("load-report", report, sha, size)
    ctx.metrics(
        target_rps=result.target_rps,
        achieved_rps=result.achieved_rps,
        requests=result.requests,
        errors=result.failures,
        p50_ms=result.p50_ms,
        p95_ms=result.p95_ms,
        p99_ms=result.p99_ms,
        schedule_lag_p99_ms=result.schedule_lag_p99_ms,
    )
    rows = result.rows()
    rows.append(("gate", "PASSED" if not failures else "FAILED: " + "; ".join(failures)))
    if result.report_html:
        rows.append(("report", result.report_html))
    width = max(len(k) for k, _ in rows)
    ctx.log(f"{params.get('label', 'load')} results\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return rows


def judge(
    ctx: StepContext, result: LoadResult, gate: Gate, params: Mapping[str, Any], *, failed: str, fix: str
) -> dict[str, Any]:
    """Check ``result`` against ``gate`` and record it (:func:`record`, report ``<step>-report.json``). A missed gate
    raises StepFailed: ``failed`` + the failures, why (the numbers, the report), ``fix``; a passed one returns the
    step's outputs (:func:`gate_outputs`)."""
    from migrate.adapters.load import check_gate

    failures = check_gate(result, gate)
    report = ctx.artifacts_dir() / f"{ctx.step_id}-report.json"
    rows = record(ctx, result, failures, report=report, params=params)
    if failures:
        raise StepFailed(failed + "; ".join(failures), why(result, report), fix)
    return gate_outputs(result, gate, rows, params)


def gate_outputs(
    result: LoadResult, gate: Gate, rows: list[tuple[str, str]], params: Mapping[str, Any]
) -> dict[str, Any]:
    """The step outputs of a passed gate."""
    return {
        "params": dict(params),
        "stats": result.to_outputs(),
        "gate": {
            "p95_ms": gate.p95_ms,
            "max_error_rate": gate.max_error_rate,
            "min_rate_fraction": gate.min_rate_fraction,
        },
        "table": [list(r) for r in rows],
        "report_html": result.report_html,
        "passed": True,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def why(result: LoadResult, report: Path) -> str:
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(result.error_kinds.items())) or "none"
    return (
        f"{result.requests:,} requests, {result.achieved_rps:,.1f} req/s of {result.target_rps:,.6g} target: p50 "
        f"{result.p50_ms:.1f} ms, p95 {result.p95_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, errors {result.failures} "
        f"({kinds}), schedule lag p99 {result.schedule_lag_p99_ms:.1f} ms; report: {result.report_html or report}"
    )


def one_line(outputs: Mapping[str, Any]) -> str:
    """Dashboard line of a recorded load gate: "1,003 of 1,000 req/s · p95 142 ms · 0.01 % errors"."""
    stats = outputs.get("stats") or {}
    if not stats:
        return ""
    line = (
        f"{float(stats.get('achieved_rps', 0)):,.0f} of {float(stats.get('target_rps', 0)):,.6g} req/s · p95 "
        f"{float(stats.get('p95_ms', 0)):.0f} ms · {float(stats.get('error_rate', 0)) * 100:.2f} % errors"
    )
    return line + (" · generator saturated" if stats.get("generator_saturated") else "")


def _artifact(ctx: StepContext, kind: str, path: Path) -> None:
    if path.exists():
        blob = path.read_bytes()
        ctx.artifact(kind, path, hashlib.sha256(blob).hexdigest(), len(blob))
