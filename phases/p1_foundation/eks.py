"""Step ``eks``: EKS cluster with system, application and GPU node groups (Terraform module.eks; verified with the EKS API)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from migrate.step import Check, StepContext, StepSettings

from .._terraform_step import TerraformModuleStep
from ._common import _aws


class Eks(TerraformModuleStep):
    """EKS cluster with system, application and GPU node groups (Terraform module.eks; verified with the EKS API)."""

    id = "eks"
    title = "EKS cluster + node groups (Terraform)"
    phase = 1
    depends_on = ("vpc",)
    module = "module.eks"
    output_map: ClassVar[dict[str, str]] = {
        "cluster_name": "eks_cluster_name",
        "cluster_endpoint": "eks_cluster_endpoint",
        "cluster_ca": "eks_cluster_certificate_authority",
        "oidc_provider_arn": "eks_oidc_provider_arn",
        "node_groups": "eks_node_groups",
    }

    class Settings(StepSettings):
        required_node_groups: list[str] = Field(
            default_factory=lambda: ["system", "application", "gpu"], description="node group roles verify requires"
        )
        gpu_node_group: str = Field("gpu", description="the role of the GPU node group (tainted and labelled)")
        gpu_taint_key: str = Field("nvidia.com/gpu", description="taint key the GPU node group carries (NO_SCHEDULE)")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        groups = dict(outputs.get("node_groups") or {})
        return f"cluster {outputs.get('cluster_name', '?')} · {len(groups)} node group(s): {', '.join(sorted(groups))}"

    def verify(self, ctx: StepContext) -> list[Check]:
        if self.stand_in(ctx):
            return self.verify_terraform_state(ctx)
        aws = _aws(ctx)
        name = str(ctx.output(self.id, "cluster_name"))
        expected_groups: dict[str, str] = dict(ctx.output(self.id, "node_groups", {}) or {})
        s = ctx.typed(self.Settings)
        required, gpu_role, taint_key = list(s.required_node_groups), s.gpu_node_group, s.gpu_taint_key
        cluster = aws.eks_cluster(name)
        status = (cluster or {}).get("status")
        checks = [
            Check("EKS cluster ACTIVE", status == "ACTIVE", observed=status or "absent", expected="ACTIVE", detail=name)
        ]
        checks += self.verify_state_object(ctx)
        groups = {ng["nodegroupName"]: ng for ng in aws.eks_nodegroups(name)} if cluster else {}
        for role in required:
            ng_name = expected_groups.get(role, role)
            ng = groups.get(ng_name)
            checks.append(
                Check(
                    f"node group {role} ({ng_name})",
                    ng is not None and ng.get("status") == "ACTIVE",
                    observed=(ng or {}).get("status", "absent"),
                    expected="ACTIVE",
                )
            )
        gpu = groups.get(expected_groups.get(gpu_role, gpu_role))
        taints = (gpu or {}).get("taints", [])
        labels = (gpu or {}).get("labels", {})
        checks.append(
            Check(
                "GPU node group tainted",
                any(t.get("key") == taint_key and t.get("effect") == "NO_SCHEDULE" for t in taints),
                observed=taints,
                expected=f"{taint_key}:NO_SCHEDULE",
            )
        )
        checks.append(
            Check(
                "GPU node group labelled",
                labels.get("node_group") == gpu_role,
                observed=labels,
                expected={"node_group": gpu_role},
            )
        )
        types = (gpu or {}).get("instanceTypes", [])
        checks.append(
            Check(
                "GPU instance types",
                bool(types) and all(str(t).startswith(("g4dn.", "g5.")) for t in types),
                observed=types,
                expected="g4dn.*/g5.*",
            )
        )
        return checks
