"""Step ``cost-controls``: Cost controls: spot-interruption handler, resource quotas, cost monitoring and an AWS Budgets alert."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, StepContext

from ._common import PHASE, KubeTemplateStep, kube_plan, kube_unreachable, kube_verify


class CostControls(KubeTemplateStep):
    """Cost controls: spot-interruption handler, resource quotas, cost monitoring and an AWS Budgets alert.

    Applies from ``templates/k8s/cutover/``: the aws-node-termination-handler DaemonSet (drains spot nodes on an
    interruption notice), ResourceQuota + LimitRange for the app namespace, and the cost-monitoring CronJob. Creates
    an AWS Budgets monthly cost budget named ``betterprompts-<env>-monthly`` for ``monthly_target_usd`` with an email
    or SNS alert at ``alert_threshold_pct`` (default 80 %) of actual spend.

    Settings: ``monthly_target_usd``, ``alert_threshold_pct``, ``alert_emails``, ``alert_sns_topic_arn``, quotas
    (``quota_requests_cpu`` ...), ``nth_image``.

    Rollback: deletes the manifests and the budget (nothing else depends on them).
    """

    id = "cost-controls"
    title = "Cost controls: spot handler, quotas, cost monitoring, budget alert"
    phase = PHASE
    depends_on = ("k8s-deploy",)
    reversibility = Reversibility.REVERSIBLE
    templates = ("cutover/spot-handler.yaml", "cutover/resource-quotas.yaml", "cutover/cost-monitoring.yaml")

    def budget_name(self, ctx: StepContext) -> str:
        return str(ctx.setting("budget_name", f"betterprompts-{ctx.env_name}-monthly"))

    def budget_spec(self, ctx: StepContext) -> dict[str, Any]:
        return {
            "name": self.budget_name(ctx),
            # default: the plan's monthly budget, [targets] monthly_budget_usd
            "amount_usd": float(ctx.setting("monthly_target_usd") or ctx.targets.monthly_budget_usd),
            "threshold_pct": float(ctx.setting("alert_threshold_pct", 80)),
            "emails": [str(e) for e in ctx.setting("alert_emails", [])],
            "sns_topic_arn": ctx.setting("alert_sns_topic_arn"),
        }

    @staticmethod
    def wanted_threshold(spec: Mapping[str, Any]) -> float | None:
        """The alert threshold the budget should carry (None: no subscriber, so AWS keeps no alert)."""
        return float(spec["threshold_pct"]) if (spec["emails"] or spec["sns_topic_arn"]) else None

    def _budget_plan(self, ctx: StepContext, result: PlanResult) -> None:
        spec = self.budget_spec(ctx)
        live = ctx.adapters.get("aws_cost").describe_budget(spec["name"])
        if live is None:
            result.changes.append(
                Change(
                    "create",
                    f"Budget/{spec['name']}",
                    f"{spec['amount_usd']:.0f} USD/month, alert {spec['threshold_pct']:g} %",
                )
            )
        elif abs(live.amount_usd - spec["amount_usd"]) > 0.005 or live.threshold_pct != self.wanted_threshold(spec):
            result.changes.append(
                Change(
                    "update",
                    f"Budget/{spec['name']}",
                    f"{live.amount_usd:.0f} -> {spec['amount_usd']:.0f} USD/month, alert {live.threshold_pct} -> "
                    f"{self.wanted_threshold(spec)} %",
                )
            )
        else:
            result.in_place.append(f"Budget/{spec['name']}")
        if not spec["emails"] and not spec["sns_topic_arn"]:
            result.findings.append(
                Finding(
                    "warn",
                    "the budget alert has no subscriber: nobody will be notified",
                    'set [steps.cost-controls] alert_emails = ["sre@example.com"] or alert_sns_topic_arn',
                )
            )

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = kube_unreachable(ctx)
        result = PlanResult() if reason else kube_plan(ctx, self.docs(ctx))
        if reason:
            result.findings.append(Finding("warn", f"Kubernetes manifests not applied: {reason}"))
        self._budget_plan(ctx, result)
        return result

    def skip_reason(self, ctx: StepContext) -> str | None:
        return None  # the budget part runs without a cluster

    def apply(self, ctx: StepContext) -> Outputs:
        out: Outputs = {"applied": [], "kube_skipped": None}
        reason = kube_unreachable(ctx)
        if reason:
            out["kube_skipped"] = reason
            ctx.log(f"Kubernetes manifests skipped: {reason}")
        else:
            out.update(super().apply(ctx))
        spec = self.budget_spec(ctx)
        ctx.intent("budget-upsert", name=spec["name"], amount_usd=spec["amount_usd"])
        ctx.adapters.get("aws_cost").upsert_budget(
            spec["name"],
            amount_usd=spec["amount_usd"],
            threshold_pct=spec["threshold_pct"],
            emails=spec["emails"],
            sns_topic_arn=spec["sns_topic_arn"],
        )
        out["budget"] = spec["name"]
        out["monthly_target_usd"] = spec["amount_usd"]
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        spec = self.budget_spec(ctx)
        live = ctx.adapters.get("aws_cost").describe_budget(spec["name"])
        checks = [
            Check(
                "budget exists with the monthly target",
                live is not None and abs(live.amount_usd - spec["amount_usd"]) < 0.01,
                None if live is None else live.amount_usd,
                spec["amount_usd"],
            )
        ]
        if live is not None:
            want = self.wanted_threshold(spec)
            checks.append(
                Check(
                    "budget alert threshold",
                    live.threshold_pct == want,
                    live.threshold_pct,
                    want,
                    "" if want is not None else "no alert_emails / alert_sns_topic_arn: the budget has no alert",
                )
            )
        if not kube_unreachable(ctx):
            checks.extend(kube_verify(ctx, self.docs(ctx)))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Delete the spot handler, quotas and cost-monitoring objects, and the AWS budget."""
        super().rollback(ctx)
        name = self.budget_name(ctx)
        ctx.intent("budget-delete", name=name)
        ctx.adapters.get("aws_cost").delete_budget(name)
