"""Step ``eks``: EKS cluster with system, application and GPU node groups (Terraform module.eks; verified with the EKS API)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from migrate.step import Check, StepContext

from .._terraform_step import TerraformModuleStep, TerraformStepSettings
from ._common import _aws

#: add-on -> the Kubernetes service account its pods run as (templates/k8s: addons/, cutover/cost-monitoring.yaml;
#: the EKS aws-ebs-csi-driver add-on); terraform/modules/eks/irsa.tf binds each IRSA role to exactly this subject
IRSA_SERVICE_ACCOUNTS = {
    "aws-load-balancer-controller": "kube-system:aws-load-balancer-controller",
    "cluster-autoscaler": "kube-system:cluster-autoscaler",
    "cost-monitor": "{namespace}:cost-monitor",
    "ebs-csi-driver": "kube-system:ebs-csi-controller-sa",
}


class Eks(TerraformModuleStep):
    """EKS cluster with system, application and GPU node groups (Terraform module.eks; verified with the EKS API)."""

    id = "eks"
    title = "EKS cluster + node groups (Terraform)"
    phase = 1
    depends_on = ("vpc",)
    output_map: ClassVar[dict[str, str]] = {
        "cluster_name": "eks_cluster_name",
        "cluster_endpoint": "eks_cluster_endpoint",
        "cluster_ca": "eks_cluster_certificate_authority",
        "oidc_provider_arn": "eks_oidc_provider_arn",
        "node_groups": "eks_node_groups",
        # add-on -> IRSA role ARN (the eks.amazonaws.com/role-arn annotation of the add-on's service account)
        "irsa_role_arns": "eks_irsa_role_arns",
        # EKS managed add-on name -> version ({} where the EKS API has no add-ons, e.g. the sandbox)
        "managed_addons": "eks_managed_addons",
    }

    class Settings(TerraformStepSettings):
        required_node_groups: list[str] = Field(
            default_factory=lambda: ["system", "application", "gpu"], description="node group roles verify requires"
        )
        gpu_node_group: str = Field("gpu", description="the role of the GPU node group (tainted and labelled)")
        gpu_taint_key: str = Field("nvidia.com/gpu", description="taint key the GPU node group carries (NO_SCHEDULE)")
        irsa_service_accounts: dict[str, str] = Field(
            default_factory=lambda: dict(IRSA_SERVICE_ACCOUNTS),
            description="add-on -> the service account (namespace:name; {namespace} = the environment's "
            "kube.namespace) its IRSA role must trust; verified when the root outputs eks_irsa_role_arns",
        )

    def summary(self, outputs: Mapping[str, Any]) -> str:
        groups = dict(outputs.get("node_groups") or {})
        line = f"cluster {outputs.get('cluster_name', '?')} · {len(groups)} node group(s): {', '.join(sorted(groups))}"
        if outputs.get("irsa_role_arns"):
            line += f" · {len(outputs['irsa_role_arns'])} IRSA role(s)"
        if outputs.get("managed_addons"):
            line += f" · {len(outputs['managed_addons'])} managed add-on(s)"
        return line

    def verify_resources(self, ctx: StepContext) -> list[Check]:
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
        checks += self.verify_irsa_roles(ctx, s.irsa_service_accounts)
        if cluster:
            checks += self.verify_managed_addons(ctx, name)
        return checks

    def verify_irsa_roles(self, ctx: StepContext, service_accounts: Mapping[str, str]) -> list[Check]:
        """Each add-on's IRSA role, read back through IAM: it exists, trusts the cluster's OIDC provider for exactly
        ``system:serviceaccount:<namespace>:<name>`` (audience sts.amazonaws.com) and has a policy attached.
        Nothing to check when the root has no ``eks_irsa_role_arns`` output (a team's own root may not)."""
        recorded = ctx.output(self.id, "irsa_role_arns", None)
        if recorded is None:
            return []
        roles: dict[str, str] = dict(recorded)
        oidc_arn = str(ctx.output(self.id, "oidc_provider_arn", "") or "")
        aws = _aws(ctx)
        checks = []
        for addon, account in sorted(service_accounts.items()):
            subject = "system:serviceaccount:" + account.replace("{namespace}", ctx.env.kube.namespace)
            arn = roles.get(addon)
            role = aws.iam_role(arn.rsplit("/", 1)[-1]) if arn else None
            trust = irsa_trust(role.get("AssumeRolePolicyDocument") if role else None)
            checks.append(
                Check(
                    f"IRSA role of {addon} trusts {subject}",
                    role is not None
                    and trust["subjects"] == [subject]
                    and trust["audiences"] == ["sts.amazonaws.com"]
                    and (not oidc_arn or trust["providers"] == [oidc_arn]),
                    observed=trust if role else ("not recorded" if not arn else "absent in IAM"),
                    expected={"subjects": [subject], "audiences": ["sts.amazonaws.com"], "providers": [oidc_arn]},
                    detail=arn or "",
                )
            )
            if role is not None:
                attached = list(role.get("AttachedPolicyArns") or [])
                checks.append(
                    Check(f"IRSA role of {addon} has a policy", bool(attached), observed=attached, expected="≥ 1")
                )
        return checks

    def verify_managed_addons(self, ctx: StepContext, cluster: str) -> list[Check]:
        """Each EKS managed add-on the root installed is ACTIVE; the VPC CNI enforces network policies."""
        addons = dict(ctx.output(self.id, "managed_addons", {}) or {})
        aws = _aws(ctx)
        checks = []
        for name in sorted(addons):
            addon = aws.eks_addon(cluster, name) or {}
            checks.append(
                Check(
                    f"EKS add-on {name} ACTIVE",
                    addon.get("status") == "ACTIVE",
                    observed=addon.get("status", "absent"),
                    expected="ACTIVE",
                    detail=str(addon.get("addonVersion", "")),
                )
            )
            if name == "vpc-cni":
                config = json.loads(addon.get("configurationValues") or "{}")
                checks.append(
                    Check(
                        "VPC CNI enforces network policies",
                        str(config.get("enableNetworkPolicy", "")).lower() == "true",
                        observed=config.get("enableNetworkPolicy", "unset"),
                        expected="true",
                        detail="vpc-cni configurationValues.enableNetworkPolicy",
                    )
                )
        return checks


def irsa_trust(document: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """The web-identity trust of an IAM trust policy: the federated providers, and the ``<issuer>:sub`` /
    ``<issuer>:aud`` values required by StringEquals, over its Allow statements for sts:AssumeRoleWithWebIdentity."""

    def as_list(value: Any) -> list[str]:
        return [str(v) for v in value] if isinstance(value, list) else ([] if value is None else [str(value)])

    found: dict[str, list[str]] = {"providers": [], "subjects": [], "audiences": []}
    statements = (document or {}).get("Statement", [])
    for st in statements if isinstance(statements, list) else [statements]:
        if st.get("Effect") != "Allow" or "sts:AssumeRoleWithWebIdentity" not in as_list(st.get("Action")):
            continue
        found["providers"] += as_list((st.get("Principal") or {}).get("Federated"))
        for key, values in ((st.get("Condition") or {}).get("StringEquals") or {}).items():
            if key.endswith(":sub"):
                found["subjects"] += as_list(values)
            elif key.endswith(":aud"):
                found["audiences"] += as_list(values)
    return found
