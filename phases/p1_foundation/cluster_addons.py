"""Step ``cluster-addons``: Cluster add-ons: metrics-server, cluster-autoscaler, AWS Load Balancer Controller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.step import PlanResult, Reversibility, StepContext, StepSettings

from .._kube_step import ManifestStep, cluster_version, render_templates
from ._common import PROJECT, _aws

ADDON_KEYS = ("cluster_autoscaler", "aws_load_balancer_controller", "metrics_server")


class ClusterAddons(ManifestStep):
    """Cluster add-ons: metrics-server, cluster-autoscaler, AWS Load Balancer Controller (server-side apply of the
    manifests in templates/k8s/addons), verified by reading them back and their Deployments becoming available.

    The add-on versions come from templates/k8s/versions.toml, by the cluster's Kubernetes version (the Cluster
    Autoscaler's minor version must equal the cluster's). Rollback restores what was there before and deletes
    what the step created.
    """

    id = "cluster-addons"
    title = "Cluster add-ons"
    phase = 1
    depends_on = ("kubeconfig",)
    reversibility = Reversibility.COMPENSABLE
    timeout = 1200.0

    class Settings(StepSettings):
        manifests: str = Field("k8s/addons", description="template directory (relative to templates/, or absolute)")
        rollout_timeout: float = Field(300, gt=0, description="seconds for every add-on workload to roll out")
        values: dict[str, Any] = Field(
            default_factory=dict, description="extra/overriding template values (cluster_name, account_id, ...)"
        )
        kubernetes_version: str | None = Field(
            None, description="pick add-on versions for this Kubernetes version (default: the cluster's)"
        )

    def values(self, ctx: StepContext) -> dict[str, Any]:
        from migrate.adapters.manifests import addon_versions

        s = ctx.typed(self.Settings)
        values: dict[str, Any] = {
            "cluster_name": ctx.output("eks", "cluster_name", f"{PROJECT}-{ctx.env_name}"),
            "region": ctx.env.aws.region,
            "aws_region": ctx.env.aws.region,
            "vpc_id": ctx.output("vpc", "vpc_id", ""),
            "env_name": ctx.env_name,
            "environment": ctx.env_name,
            "namespace": ctx.env.kube.namespace,
        }
        values.update(addon_versions(ctx.templates_dir, s.kubernetes_version or cluster_version(ctx)))
        values.update(s.values)
        if "account_id" not in values:
            values["account_id"] = ctx.env.aws.account_id or _aws(ctx).account_id()
        return values

    def manifests(self, ctx: StepContext) -> list[dict[str, Any]]:
        return render_templates(ctx, ctx.typed(self.Settings).manifests, self.values(ctx))

    def plan(self, ctx: StepContext) -> PlanResult:
        result = super().plan(ctx)
        values = self.values(ctx)
        result.data["addon_versions"] = {k: values[k] for k in ADDON_KEYS if k in values}
        return result

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return f"{len(outputs.get('workloads') or [])} add-on workload(s) available · {len(outputs.get('applied') or [])} object(s)"
