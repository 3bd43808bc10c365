"""Step ``cost-report``: AWS cost of the month by service, judged against the plan's budget and cost reduction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from ..p5_cutover._common import Clock, iso
from ._common import PHASE, Criterion, criteria_table, files, judge, recorded, reports_dir, verdict


class CostReport(Step):
    """Cost report: AWS Cost Explorer cost of the month grouped by service, judged against the plan's cost criteria.

    ``period`` = "current" (month to date, default; with a linear month-end projection — Cost Explorer's forecast
    API is not used) or "previous" (the last full month). Two criteria of the plan (``[targets]``):

    * monthly cost within budget — the (projected) month ≤ ``monthly_target_usd`` (default: the budget
      cost-controls set, else ``[targets] monthly_budget_usd``);
    * cost reduction — at least ``cost_reduction_pct`` below ``cost_baseline_monthly_usd``, the old platform's
      monthly cost recorded in ``[targets]``. Without a recorded baseline it is NOT MEASURED, which fails outside
      a sandbox.

    A table goes to the terminal/log and a markdown report to ``runbooks/reports/cost-report-<env>-<month>.md``
    (checksummed artifact). Verify fails when a criterion is missed. Rollback deletes the report file.
    """

    id = "cost-report"
    title = "Monthly cost by service vs targets (report)"
    phase = PHASE
    depends_on = ("cost-controls",)
    reversibility = Reversibility.REVERSIBLE
    clock: ClassVar[Clock] = Clock()

    class Settings(StepSettings):
        period: Literal["current", "previous"] = Field("current", description="current: month to date, projected; previous: last full month")
        metric: str = Field("UnblendedCost", description="Cost Explorer metric")
        monthly_target_usd: float | None = Field(None, gt=0, description="budget override (default: cost-controls', else [targets])")
        reports_dir: str = Field("runbooks/reports", description="where the report is written (project-relative)")

    def today(self) -> date:
        return datetime.fromtimestamp(self.clock.now(), UTC).date()

    def target(self, ctx: StepContext) -> float:
        s = ctx.typed(self.Settings)
        value = s.monthly_target_usd or recorded(ctx, "cost-controls").get("monthly_target_usd")
        return float(value or ctx.targets.monthly_budget_usd)

    def period(self, ctx: StepContext) -> tuple[str, str, bool]:
        from migrate.adapters.aws_cost import month_bounds

        previous = ctx.typed(self.Settings).period == "previous"
        start, end = month_bounds(self.today(), previous=previous)
        return start, end, previous

    def report_path(self, ctx: StepContext) -> Path:
        start, _end, _prev = self.period(ctx)
        return reports_dir(ctx) / f"cost-report-{ctx.env_name}-{start[:7]}.md"

    def criteria(self, ctx: StepContext, monthly_usd: float, target_usd: float) -> list[Criterion]:
        t = ctx.targets
        baseline = t.cost_baseline_monthly_usd
        reduction = (1 - monthly_usd / baseline) * 100 if baseline else None
        return [
            judge(ctx, "monthly cost within target", monthly_usd, "<=", target_usd, "USD"),
            judge(ctx, "cost reduction vs baseline", reduction, ">=", t.cost_reduction_pct, "%"),
        ]

    def plan(self, ctx: StepContext) -> PlanResult:
        start, end, _prev = self.period(ctx)
        t = ctx.targets
        baseline = f"{t.cost_baseline_monthly_usd:,.0f} USD" if t.cost_baseline_monthly_usd else "no baseline recorded"
        return PlanResult(
            changes=[
                Change(
                    "create",
                    str(self.report_path(ctx)),
                    f"Cost Explorer {start}..{end} by service vs {self.target(ctx):,.0f} USD, "
                    f"-{t.cost_reduction_pct:g} % vs baseline ({baseline})",
                )
            ]
        )

    def apply(self, ctx: StepContext) -> Outputs:
        from migrate.adapters.aws_cost import linear_forecast

        start, end, previous = self.period(ctx)
        report = ctx.adapters.get("aws_cost").cost_by_service(start, end, metric=ctx.typed(self.Settings).metric)
        target = self.target(ctx)
        projected = report.total_usd if previous else linear_forecast(report.total_usd, self.today())
        rows = [(svc, round(amount, 2)) for svc, amount in report.rows()]
        criteria = self.criteria(ctx, projected, target)
        baseline = ctx.targets.cost_baseline_monthly_usd
        lines = [
            f"# Cost report — {ctx.env_name}, {start} to {end}" + (" (month to date)" if not previous else ""),
            "",
            f"Source: AWS Cost Explorer `GetCostAndUsage`, {report.metric}, grouped by SERVICE"
            + (" (estimated)" if report.estimated else "")
            + ".",
            "",
            "| Service | Cost (USD) | Share |",
            "|---|---:|---:|",
        ]
        for svc, amount in rows:
            share = amount / report.total_usd * 100 if report.total_usd else 0.0
            lines.append(f"| {svc} | {amount:,.2f} | {share:.1f} % |")
        if not rows:
            lines.append("| (no cost data returned) | 0.00 | - |")
        lines += [
            f"| **Total** | **{report.total_usd:,.2f}** | 100 % |",
            "",
            f"- Monthly target: **{target:,.2f} USD**",
            f"- {'Monthly cost' if previous else 'Projected month-end cost (linear from month to date)'}: "
            f"**{projected:,.2f} USD** ({projected / target * 100 if target else 0:.0f} % of target)",
            f"- Verdict: **{'within target' if projected <= target else 'OVER target'}**",
            "- Baseline (old platform, monthly): "
            + (f"{baseline:,.2f} USD ({ctx.targets.cost_baseline_source or 'source not stated'})" if baseline else "not recorded"),
            "",
            "## Success criteria",
            "",
            *criteria_table(criteria),
            "",
            f"Overall: **{verdict(ctx, criteria)}**",
            "",
            f"Generated by `bpmigrate apply --step cost-report --env {ctx.env_name}` at {iso(self.clock.now())}.",
        ]
        path = self.report_path(ctx)
        ctx.intent("write-report", path=str(path))
        sha, size = files(ctx).write_text(path, "\n".join(lines) + "\n")
        ctx.artifact("cost-report", path, sha, size)
        for svc, amount in rows:
            ctx.log(f"{svc:<45} {amount:>12,.2f} USD")
        ctx.log(f"{'TOTAL':<45} {report.total_usd:>12,.2f} USD   target {target:,.2f}   projected {projected:,.2f}")
        return {
            "period": {"start": start, "end": end, "month_to_date": not previous},
            "by_service": dict(rows),
            "total_usd": report.total_usd,
            "projected_usd": projected,
            "target_usd": target,
            "baseline_usd": baseline,
            "within_target": projected <= target,
            "criteria": criteria,
            "passed": all(c["ok"] for c in criteria),
            "report": str(path),
            "sha256": sha,
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        mine = recorded(ctx, self.id)
        path = Path(mine.get("report") or self.report_path(ctx))
        checks = []
        if path.is_file():
            sha, _size = files(ctx).sha256(path)
            checks.append(Check("report file intact", sha == mine.get("sha256"), sha, mine.get("sha256")))
        else:
            checks.append(Check("report file exists", False, "missing", str(path)))
        projected, target = mine.get("projected_usd"), mine.get("target_usd")
        if projected is None or target is None:
            return [*checks, Check("monthly cost within target", False, None, "a recorded cost report")]
        for c in self.criteria(ctx, float(projected), float(target)):  # the budget the report was made against
            checks.append(Check(c["name"], bool(c["ok"]), c["observed"], f"{c['op']} {c['limit']:g} {c['unit']}"))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Delete the report file."""
        path = Path(recorded(ctx, self.id).get("report") or self.report_path(ctx))
        files(ctx).remove(path)

    def summary(self, outputs: Mapping[str, Any]) -> str:
        projected, target = outputs.get("projected_usd"), outputs.get("target_usd")
        if projected is None or not target:
            return "no cost report recorded"
        met = [c for c in outputs.get("criteria") or [] if c.get("result") == "FAIL"]
        word = "within target" if projected <= target else "OVER target"
        text = f"{projected:,.0f} USD/month · {projected / target * 100:.0f} % of {target:,.0f} · {word}"
        return text + (f" · FAIL: {', '.join(str(c['name']) for c in met)}" if met else "")
