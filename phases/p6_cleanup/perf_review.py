"""Step ``perf-review``: the plan's performance success criteria against the recorded gate and watch results."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from ._common import PHASE, Criterion, criteria_table, files, find_number, judge, recorded, reports_dir, verdict


class PerfReview(Step):
    """Success criteria review: performance targets of the plan against what the gates and the watch recorded.

    The targets come from ``[targets]`` in migrate.toml (``ctx.targets``): API p95 < ``api_p95_ms`` from the
    ``load-test`` gate and the ``post-cutover-watch``; throughput ≥ ``rps`` and error rate ≤ ``error_rate`` from
    ``load-test``; ML p95 < ``ml_p95_ms`` from ``ml-perf``; availability ≥ ``availability`` and error rate from the
    watch. A criterion without a recorded measurement is NOT MEASURED and fails outside a sandbox (in a sandbox the
    component may not exist: it is reported without failing). The cost criteria (budget, reduction vs baseline) are
    judged by ``cost-report``. The report goes to ``runbooks/reports/perf-review-<env>.md``; verify returns one
    check per criterion, so a missed target fails the step.

    Rollback deletes the report file.
    """

    id = "perf-review"
    title = "Success criteria review (report)"
    phase = PHASE
    depends_on = ("post-cutover-watch", "ml-perf")
    reversibility = Reversibility.REVERSIBLE

    class Settings(StepSettings):
        reports_dir: str = Field("runbooks/reports", description="where the report is written (project-relative)")

    sources = ("load-test", "ml-perf", "post-cutover-watch")

    def skip_reason(self, ctx: StepContext) -> str | None:
        if not any(recorded(ctx, sid) for sid in self.sources):
            return "nothing was measured in this environment (load-test, ml-perf and post-cutover-watch recorded no results)"
        return None

    def criteria(self, ctx: StepContext) -> list[Criterion]:
        t = ctx.targets
        load, ml, watch = (recorded(ctx, sid) for sid in self.sources)
        watch_rate = find_number(watch, "error_rate")
        if watch_rate is None and find_number(watch, "requests"):
            watch_rate = (find_number(watch, "errors") or 0.0) / (find_number(watch, "requests") or 1.0)
        rows = [
            ("API p95 (load-test gate)", find_number(load, "stats.p95_ms", "p95_ms"), "<", t.api_p95_ms, "ms"),
            ("throughput (load-test)", find_number(load, "stats.achieved_rps", "achieved_rps", "stats.rps"), ">=", t.rps, "req/s"),
            ("error rate (load-test)", find_number(load, "stats.error_rate", "error_rate"), "<=", t.error_rate, "ratio"),
            ("API p95 (post-cutover watch)", find_number(watch, "p95_ms"), "<", t.api_p95_ms, "ms"),
            ("availability (post-cutover watch)", find_number(watch, "availability"), ">=", t.availability, "ratio"),
            ("error rate (post-cutover watch)", watch_rate, "<=", t.error_rate, "ratio"),
            ("ML p95 (ml-perf)", find_number(ml, "stats.p95_ms", "p95_ms", "latency.p95_ms"), "<", t.ml_p95_ms, "ms"),
        ]
        return [judge(ctx, *row) for row in rows]

    def report_path(self, ctx: StepContext) -> Path:
        return reports_dir(ctx) / f"perf-review-{ctx.env_name}.md"

    def plan(self, ctx: StepContext) -> PlanResult:
        result = PlanResult(changes=[Change("create", str(self.report_path(ctx)), "success criteria report")])
        for c in self.criteria(ctx):
            if c["observed"] is None:
                result.findings.append(Finding("warn", f"{c['name']}: not measured (no recorded result)"))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        rows = self.criteria(ctx)
        overall = verdict(ctx, rows)
        lines = [
            f"# Performance review — {ctx.env_name}",
            "",
            "Success criteria of the migration plan ([targets] in migrate.toml) against the recorded gate and watch "
            "results (from the ledger). Cost criteria: see the cost report.",
            "",
            *criteria_table(rows),
            "",
            f"Overall: **{overall}**",
            "",
        ]
        path = self.report_path(ctx)
        ctx.intent("write-report", path=str(path))
        sha, size = files(ctx).write_text(path, "\n".join(lines))
        ctx.artifact("perf-review", path, sha, size)
        for c in rows:
            ctx.log(f"{c['name']}: {c['observed']} {c['op']} {c['limit']} -> {c['result']}")
        return {"criteria": rows, "passed": all(c["ok"] for c in rows), "report": str(path), "sha256": sha}

    def verify(self, ctx: StepContext) -> list[Check]:
        return [
            Check(c["name"], bool(c["ok"]), c["observed"], f"{c['op']} {c['limit']:g} {c['unit']}".strip())
            for c in self.criteria(ctx)
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Delete the report file."""
        files(ctx).remove(self.report_path(ctx))

    def summary(self, outputs: Mapping[str, Any]) -> str:
        rows: list[dict[str, Any]] = list(outputs.get("criteria") or [])
        if not rows:
            return "no review recorded"
        met = sum(1 for c in rows if c.get("result") == "PASS")
        failed = [str(c["name"]) for c in rows if c.get("result") == "FAIL"]
        text = f"{met}/{len(rows)} criteria met"
        return text + (f" · FAIL: {', '.join(failed)}" if failed else "")
