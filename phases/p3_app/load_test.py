"""Step ``load-test``: Load-test gate: configurable RPS for a configurable time; p95 < 200 ms and error rate < 1 % or the step fails."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from migrate.errors import StepFailed
from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext

if TYPE_CHECKING:
    from migrate.adapters.http import LatencyStats
from ._common import PHASE, http, record_artifact, text_table, write_json_atomic


class LoadTest(Step):
    """Load-test gate: configurable RPS for a configurable time; p95 < 200 ms and error rate < 1 % or the step fails.

    Drives `rps` requests per second for `duration_s` seconds (at most `max_requests`) at `url` (default: the
    api-gateway endpoint + `path`), with an asyncio open-loop client. Percentiles are exact over every sample.
    Results are shown as a table, saved as a JSON report artifact and stored as outputs; a missed target fails the
    step with the numbers. Verify re-checks with a short closed-loop probe.
    """

    id = "load-test"
    phase = PHASE
    depends_on = ("app-smoke",)
    reversibility = Reversibility.REVERSIBLE

    def url(self, ctx: StepContext) -> str | None:
        if ctx.setting("url"):
            return str(ctx.setting("url"))
        eps = ctx.setting("endpoints") or ctx.upstream.get("app-smoke", {}).get("endpoints") or {}
        base = dict(eps).get("api-gateway") if isinstance(eps, Mapping) else None
        return f"{str(base).rstrip('/')}{ctx.setting('path', '/health')}" if base else None

    def skip_reason(self, ctx: StepContext) -> str | None:
        if self.url(ctx):
            return None
        return (
            "no load-test endpoint configured: set [steps.load-test] url = "
            f'"https://api.{ctx.env.domain}/health" (or endpoints = {{ api-gateway = "..." }}) in migrate.toml'
        )

    def params(self, ctx: StepContext) -> dict[str, Any]:
        rps = float(ctx.setting("rps", 20))
        duration = float(ctx.setting("duration_s", 30))
        return {
            "url": self.url(ctx),
            "method": str(ctx.setting("method", "GET")).upper(),
            "rps": rps,
            "duration_s": duration,
            "max_requests": int(ctx.setting("max_requests", math.ceil(rps * duration))),
            "timeout": float(ctx.setting("timeout", 5.0)),
            "max_in_flight": int(ctx.setting("max_in_flight", 256)),
            "p95_ms_max": float(ctx.setting("p95_ms", 200.0)),
            "error_rate_max": float(ctx.setting("max_error_rate", 0.01)),
        }

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        p = self.params(ctx)
        http(ctx, [str(p["url"])])
        rows = [
            ("target", f"{p['method']} {p['url']}"),
            ("rate", f"{p['rps']:g} req/s for {p['duration_s']:g} s (at most {p['max_requests']} requests)"),
            ("gate", f"p95 < {p['p95_ms_max']:g} ms and error rate < {p['error_rate_max'] * 100:g} %"),
        ]
        return PlanResult(
            changes=[Change("run", f"load {p['url']}", f"{p['rps']:g} rps x {p['duration_s']:g} s")],
            unknown=["latency and error rate (measured by apply)"],
            data={"params": p, "table": rows},
        )

    def check_gate(self, stats: LatencyStats, p: Mapping[str, Any]) -> list[str]:
        failures = []
        if stats.count == 0:
            failures.append("no request completed")
        if stats.p95_ms >= p["p95_ms_max"]:
            failures.append(f"p95 {stats.p95_ms:.1f} ms >= {p['p95_ms_max']:g} ms")
        if stats.error_rate >= p["error_rate_max"]:
            failures.append(f"error rate {stats.error_rate * 100:.2f} % >= {p['error_rate_max'] * 100:g} %")
        return failures

    def apply(self, ctx: StepContext) -> Outputs:
        p = self.params(ctx)
        url = str(p["url"])
        adapter = http(ctx, [url])
        ctx.intent("http-load", url=url, rps=p["rps"], duration_s=p["duration_s"], max_requests=p["max_requests"])
        with ctx.progress(f"load test {url}", total=p["max_requests"], unit="requests") as bar:
            sent = [0]

            def progress(n: int) -> None:
                bar.advance(n - sent[0])
                sent[0] = n

            stats = adapter.load(
                url,
                rps=p["rps"],
                duration_s=p["duration_s"],
                max_requests=p["max_requests"],
                timeout=p["timeout"],
                method=p["method"],
                max_in_flight=p["max_in_flight"],
                on_progress=progress,
            )
        failures = self.check_gate(stats, p)
        rows = stats.rows()
        rows.append(("gate", "PASSED" if not failures else "FAILED: " + "; ".join(failures)))
        ctx.log("load test results\n" + text_table(rows))
        report = ctx.artifacts_dir() / "load-test-report.json"
        write_json_atomic(report, {"params": p, "stats": stats.to_dict(), "failures": failures, "at": time.time()})
        record_artifact(ctx, "load-test-report", report)
        ctx.metrics(requests=stats.count, errors=stats.errors, p95_ms=stats.p95_ms, p99_ms=stats.p99_ms)
        if failures:
            raise StepFailed(
                "load-test gate failed: " + "; ".join(failures),
                f"{stats.count} requests at {stats.achieved_rps:g} req/s: p50 {stats.p50_ms:.1f} ms, p95 "
                f"{stats.p95_ms:.1f} ms, p99 {stats.p99_ms:.1f} ms, errors {stats.errors} "
                f"({', '.join(f'{k}: {v}' for k, v in sorted(stats.error_kinds.items())) or 'none'}); "
                f"report: {report}",
                "find the slow/failing service (HPA, pod logs, RDS/ElastiCache metrics), fix it, then re-run "
                f"`bpmigrate apply --step load-test --env {ctx.env_name}`",
            )
        return {"params": p, "stats": stats.to_dict(), "table": [list(r) for r in rows], "passed": True}

    def verify(self, ctx: StepContext) -> list[Check]:
        p = self.params(ctx)
        adapter = http(ctx, [str(p["url"])])
        stats = adapter.probe(
            str(p["url"]),
            requests=int(ctx.setting("verify_requests", 20)),
            concurrency=int(ctx.setting("verify_concurrency", 4)),
            timeout=p["timeout"],
            method=p["method"],
        )
        return [
            Check("probe p95", stats.p95_ms < p["p95_ms_max"], stats.p95_ms, f"< {p['p95_ms_max']:g} ms"),
            Check(
                "probe error rate",
                stats.error_rate < p["error_rate_max"],
                stats.error_rate,
                f"< {p['error_rate_max']:g}",
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("load-test changes nothing: nothing to roll back")
