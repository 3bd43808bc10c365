"""Step ``perf-review``: Performance review: the success criteria against the recorded gate and watch results, as a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import PHASE, files, find_number, reports_dir


class PerfReview(Step):
    """Performance review: the success criteria against the recorded gate and watch results, as a report.

    Criteria (settings): API p95 < ``api_p95_ms`` (200) from the ``load-test`` gate and the ``post-cutover-watch``;
    ML p95 < ``ml_p95_ms`` (500) from ``ml-perf``; availability ≥ ``min_availability`` (0.999) from the watch.
    A criterion without a recorded measurement is "not measured" and does not pass (in a sandbox it is reported as
    NOT MEASURED without failing, since the component may not exist there). The report goes to
    ``runbooks/reports/perf-review-<env>.md``; verify returns one check per criterion.

    Rollback deletes the report file.
    """

    id = "perf-review"
    title = "Success criteria review (report)"
    phase = PHASE
    depends_on = ("post-cutover-watch",)
    reversibility = Reversibility.REVERSIBLE

    sources: ClassVar[tuple[str, ...]] = ("load-test", "ml-perf", "post-cutover-watch")

    def skip_reason(self, ctx: StepContext) -> str | None:
        if not any(ctx.upstream.get(sid) for sid in self.sources):
            return "nothing was measured in this environment (load-test, ml-perf and post-cutover-watch recorded no results)"
        return None

    def criteria(self, ctx: StepContext) -> list[dict[str, Any]]:
        up = ctx.upstream
        api_max = float(ctx.setting("api_p95_ms", 200))
        ml_max = float(ctx.setting("ml_p95_ms", 500))
        min_avail = float(ctx.setting("min_availability", 0.999))
        rows = [
            (
                "API p95 (load-test gate)",
                find_number(up.get("load-test", {}), "stats.p95_ms", "p95_ms"),
                "<",
                api_max,
                "ms",
            ),
            (
                "API p95 (post-cutover watch)",
                find_number(up.get("post-cutover-watch", {}), "p95_ms"),
                "<",
                api_max,
                "ms",
            ),
            (
                "ML p95 (ml-perf)",
                find_number(up.get("ml-perf", {}), "stats.p95_ms", "p95_ms", "latency.p95_ms"),
                "<",
                ml_max,
                "ms",
            ),
            (
                "availability (post-cutover watch)",
                find_number(up.get("post-cutover-watch", {}), "availability"),
                ">=",
                min_avail,
                "",
            ),
        ]
        out = []
        for name, observed, op, limit, unit in rows:
            if observed is None:
                # unmeasured never passes in a real environment; a sandbox without the component says so and moves on
                ok, result = ctx.is_sandbox, "NOT MEASURED"
            else:
                ok = observed < limit if op == "<" else observed >= limit
                result = "PASS" if ok else "FAIL"
            out.append(
                {"name": name, "observed": observed, "op": op, "limit": limit, "unit": unit, "ok": ok, "result": result}
            )
        return out

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
        lines = [
            f"# Performance review — {ctx.env_name}",
            "",
            "Success criteria of the migration against the recorded gate and watch results (from the ledger).",
            "",
            "| Criterion | Observed | Target | Result |",
            "|---|---:|---:|---|",
        ]
        for c in rows:
            observed = "not measured" if c["observed"] is None else f"{c['observed']:g} {c['unit']}".strip()
            if c["observed"] is not None and c["name"].startswith("availability"):
                observed = f"{c['observed'] * 100:.3f} %"
            lines.append(f"| {c['name']} | {observed} | {c['op']} {c['limit']:g} {c['unit']} | {c['result']} |")
        passed = all(c["ok"] for c in rows)
        unmeasured = sum(1 for c in rows if c["observed"] is None)
        verdict = "all criteria met" if passed else "criteria NOT met"
        if passed and unmeasured:
            verdict = f"criteria met where measured ({unmeasured} not measured in this sandbox)"
        lines += ["", f"Overall: **{verdict}**", ""]
        path = self.report_path(ctx)
        ctx.intent("write-report", path=str(path))
        sha, size = files(ctx).write_text(path, "\n".join(lines))
        ctx.artifact("perf-review", path, sha, size)
        for c in rows:
            ctx.log(f"{c['name']}: {c['observed']} {c['op']} {c['limit']} -> {c['result']}")
        return {"criteria": rows, "passed": passed, "report": str(path), "sha256": sha}

    def verify(self, ctx: StepContext) -> list[Check]:
        return [
            Check(c["name"], bool(c["ok"]), c["observed"], f"{c['op']} {c['limit']:g} {c['unit']}".strip())
            for c in self.criteria(ctx)
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Delete the report file."""
        files(ctx).remove(self.report_path(ctx))
