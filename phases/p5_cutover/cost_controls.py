"""Step ``cost-controls``: Cost controls: spot-interruption handler, resource quotas, cost monitoring and an AWS Budgets alert."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, StepContext, StepSettings

from .._kube_step import ManifestStep, kube_unreachable, render_templates, user_manifests, verify_manifests

TEMPLATES = ("k8s/cutover/spot-handler.yaml", "k8s/cutover/resource-quotas.yaml", "k8s/cutover/cost-monitoring.yaml")


class CostControls(ManifestStep):
    """Cost controls: spot-interruption handler, resource quotas, cost monitoring and an AWS Budgets alert.

    Applies from ``templates/k8s/cutover/`` (or the team's own ``manifests_dir``): the aws-node-termination-handler
    DaemonSet (drains spot nodes on an interruption notice), ResourceQuota + LimitRange for the app namespace, and the
    cost-monitoring CronJob. Creates an AWS Budgets monthly cost budget named ``betterprompts-<env>-monthly`` for
    ``monthly_target_usd`` with an email or SNS alert at ``alert_threshold_pct`` (default 80 %) of actual spend.
    Without a cluster only the budget is set (the plan says so).

    Rollback: deletes the objects it created and the budget (nothing else depends on them).
    """

    id = "cost-controls"
    title = "Cost controls: spot handler, quotas, cost monitoring, budget alert"
    phase = 5
    depends_on = ("k8s-deploy", "eks")  # eks: the cost monitor's IRSA role
    reversibility = Reversibility.REVERSIBLE
    rollback_mode = "delete"

    class Settings(StepSettings):
        monthly_target_usd: float | None = Field(
            None, gt=0, description="AWS Budgets monthly cost budget, USD (default: [targets] monthly_budget_usd)"
        )
        alert_threshold_pct: float = Field(80, gt=0, description="alert when actual spend passes this % of it")
        alert_emails: list[str] = Field(default_factory=list, description="budget alert e-mail subscribers")
        alert_sns_topic_arn: str | None = Field(None, description="budget alert SNS topic")
        budget_name: str | None = Field(None, description="default betterprompts-<env>-monthly")
        namespace: str | None = Field(None, description="the app namespace (default: the environment's)")
        quota_requests_cpu: str = Field("32", description="ResourceQuota requests.cpu")
        quota_requests_memory: str = Field("128Gi", description="ResourceQuota requests.memory")
        quota_limits_cpu: str = Field("64", description="ResourceQuota limits.cpu")
        quota_limits_memory: str = Field("256Gi", description="ResourceQuota limits.memory")
        quota_gpus: str = Field("4", description="ResourceQuota requests.nvidia.com/gpu")
        quota_pods: str = Field("200", description="ResourceQuota pods")
        nth_image: str = Field(
            "public.ecr.aws/aws-ec2/aws-node-termination-handler:v1.22.0", description="spot handler image"
        )
        cost_monitor_image: str = Field("public.ecr.aws/aws-cli/aws-cli:2.15.0", description="cost monitor image")
        cost_monitor_role_arn: str | None = Field(
            None, description="IRSA role of the cost-monitor CronJob (default: Terraform's eks_irsa_role_arns)"
        )
        manifests_dir: str | None = Field(None, description="apply these YAML files instead of the bundled ones")

    def manifests(self, ctx: StepContext) -> list[dict[str, Any]]:
        s = ctx.typed(self.Settings)
        if s.manifests_dir:
            return user_manifests(ctx, s.manifests_dir)
        values = s.model_dump(exclude={"namespace", "manifests_dir", "budget_name", "alert_emails"})
        values.update(namespace=s.namespace or ctx.env.kube.namespace, env_name=ctx.env_name, region=ctx.env.aws.region)
        values["monthly_target_usd"] = f"{self.budget_spec(ctx)['amount_usd']:g}"
        roles = ctx.output("eks", "irsa_role_arns", None) or {}
        values["cost_monitor_role_arn"] = s.cost_monitor_role_arn or roles.get("cost-monitor", "")
        return [doc for name in TEMPLATES for doc in render_templates(ctx, name, values)]

    def budget_spec(self, ctx: StepContext) -> dict[str, Any]:
        s = ctx.typed(self.Settings)
        return {
            "name": s.budget_name or f"betterprompts-{ctx.env_name}-monthly",
            "amount_usd": s.monthly_target_usd or ctx.targets.monthly_budget_usd,
            "threshold_pct": s.alert_threshold_pct,
            "emails": list(s.alert_emails),
            "sns_topic_arn": s.alert_sns_topic_arn,
        }

    @staticmethod
    def wanted_threshold(spec: Mapping[str, Any]) -> float | None:
        """The alert threshold the budget should carry (None: no subscriber, so AWS keeps no alert)."""
        return float(spec["threshold_pct"]) if (spec["emails"] or spec["sns_topic_arn"]) else None

    def _budget_plan(self, ctx: StepContext, result: PlanResult) -> None:
        spec = self.budget_spec(ctx)
        live = ctx.adapters.get("aws_cost").describe_budget(spec["name"])
        target = f"Budget/{spec['name']}"
        if live is None:
            detail = f"{spec['amount_usd']:.0f} USD/month, alert {spec['threshold_pct']:g} %"
            result.changes.append(Change("create", target, detail))
        elif abs(live.amount_usd - spec["amount_usd"]) > 0.005 or live.threshold_pct != self.wanted_threshold(spec):
            detail = (
                f"{live.amount_usd:.0f} -> {spec['amount_usd']:.0f} USD/month, alert {live.threshold_pct} -> "
                f"{self.wanted_threshold(spec)} %"
            )
            result.changes.append(Change("update", target, detail))
        else:
            result.in_place.append(target)
        if not spec["emails"] and not spec["sns_topic_arn"]:
            result.findings.append(
                Finding(
                    "warn",
                    "the budget alert has no subscriber: nobody will be notified",
                    'set [steps.cost-controls] alert_emails = ["sre@example.com"] or alert_sns_topic_arn',
                )
            )

    def skip_reason(self, ctx: StepContext) -> str | None:
        return None  # the budget part runs without a cluster

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = kube_unreachable(ctx)
        result = PlanResult() if reason else super().plan(ctx)
        if reason:
            result.findings.append(Finding("warn", f"Kubernetes manifests not applied: {reason}"))
        self._budget_plan(ctx, result)
        return result

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
        return {**out, "budget": spec["name"], "monthly_target_usd": spec["amount_usd"]}

    def verify(self, ctx: StepContext) -> list[Check]:
        spec = self.budget_spec(ctx)
        live = ctx.adapters.get("aws_cost").describe_budget(spec["name"])
        amount = None if live is None else live.amount_usd
        ok = live is not None and abs(live.amount_usd - spec["amount_usd"]) < 0.01
        checks = [Check("budget exists with the monthly target", ok, amount, spec["amount_usd"])]
        if live is not None:
            want = self.wanted_threshold(spec)
            why = "" if want is not None else "no alert_emails / alert_sns_topic_arn: the budget has no alert"
            checks.append(Check("budget alert threshold", live.threshold_pct == want, live.threshold_pct, want, why))
        if not kube_unreachable(ctx):
            checks.extend(verify_manifests(ctx, self.manifests(ctx)))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Delete the spot handler, quotas and cost-monitoring objects it created, and the AWS budget."""
        if not kube_unreachable(ctx):
            self.rollback_manifests(ctx)
        name = self.budget_spec(ctx)["name"]
        ctx.intent("budget-delete", name=name)
        ctx.adapters.get("aws_cost").delete_budget(name)

    def summary(self, outputs: Mapping[str, Any]) -> str:
        kube = (
            "manifests skipped (no cluster)"
            if outputs.get("kube_skipped")
            else f"{len(outputs.get('applied') or [])} object(s)"
        )
        return f"budget {outputs.get('budget')} {outputs.get('monthly_target_usd', 0):,.0f} USD/month · {kube}"
