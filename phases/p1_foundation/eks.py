"""Step ``eks``: EKS cluster with system, application and GPU node groups (Terraform module.eks; verified with the EKS API)."""

from __future__ import annotations

from typing import ClassVar

from migrate.step import Check, StepContext

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

    def verify(self, ctx: StepContext) -> list[Check]:
        if self.stand_in(ctx):
            return self.verify_terraform_state(ctx)
        aws = _aws(ctx)
        name = str(ctx.output(self.id, "cluster_name"))
        expected_groups: dict[str, str] = dict(ctx.output(self.id, "node_groups", {}) or {})
        required = list(ctx.setting("required_node_groups", ["system", "application", "gpu"]))
        gpu_role = str(ctx.setting("gpu_node_group", "gpu"))
        taint_key = str(ctx.setting("gpu_taint_key", "nvidia.com/gpu"))
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
