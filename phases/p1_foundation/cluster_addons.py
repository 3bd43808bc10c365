"""Step ``cluster-addons``: Cluster add-ons: metrics-server, cluster-autoscaler, AWS Load Balancer Controller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, StepContext, StepSettings

from .._kube_step import ManifestStep, cluster_version, render_templates
from ._common import PROJECT, _aws

ADDON_KEYS = ("cluster_autoscaler", "aws_load_balancer_controller", "metrics_server")
#: the AWS Load Balancer Controller's webhook serving certificate (its pods mount it: they do not start without it)
WEBHOOK_NS, WEBHOOK_SECRET = "kube-system", "aws-load-balancer-tls"
WEBHOOK_SERVICE = "aws-load-balancer-webhook-service"
#: controllers that call AWS -> their leader-election Lease (renewed only while the controller runs as leader)
LEASES = {
    "aws-load-balancer-controller": "aws-load-balancer-controller-leader",
    "cluster-autoscaler": "cluster-autoscaler",
}
#: what a controller without working AWS credentials (IRSA) reports in its events
CREDENTIAL_ERRORS = ("AccessDenied", "WebIdentityErr", "NoCredentialProviders", "UnauthorizedOperation", "ExpiredToken")


class ClusterAddons(ManifestStep):
    """Cluster add-ons: metrics-server, cluster-autoscaler, AWS Load Balancer Controller (server-side apply of the
    manifests in templates/k8s/addons), verified by reading them back and their Deployments becoming available.

    The add-on versions come from templates/k8s/versions.toml, by the cluster's Kubernetes version (the Cluster
    Autoscaler's minor version must equal the cluster's). The Load Balancer Controller's webhook certificate (Secret
    kube-system/aws-load-balancer-tls) is generated (a self-signed CA and a serving certificate) when absent, e.g.
    when no cert-manager provides it. Rollback restores what was there before and deletes what the step created.
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
        lease_max_age_s: float = Field(
            120, gt=0, description="verify: a controller's leader lease renewed this recently"
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
        # the IRSA roles Terraform created (module eks: eks_irsa_role_arns), else the name it gives them
        roles = ctx.output("eks", "irsa_role_arns", None) or {}
        for addon in LEASES:
            default = f"arn:aws:iam::{values['account_id']}:role/{values['cluster_name']}-{addon}"
            values.setdefault(f"{addon.replace('-', '_')}_role_arn", roles.get(addon) or default)
        return values

    def manifests(self, ctx: StepContext) -> list[dict[str, Any]]:
        """The add-on templates, except those EKS runs as managed add-ons here (Terraform: eks_managed_addons)."""
        from migrate.adapters.manifests import template_files

        managed = set(ctx.output("eks", "managed_addons", None) or {})
        folder = ctx.templates_dir / ctx.typed(self.Settings).manifests
        values = self.values(ctx)
        return [
            doc for f in template_files(folder) if f.stem not in managed for doc in render_templates(ctx, f, values)
        ]

    def plan(self, ctx: StepContext) -> PlanResult:
        result = super().plan(ctx)
        values = self.values(ctx)
        result.data["addon_versions"] = {k: values[k] for k in ADDON_KEYS if k in values}
        if ctx.adapters.kube().get("v1", "Secret", WEBHOOK_SECRET, WEBHOOK_NS) is None:
            target = f"Secret/{WEBHOOK_NS}/{WEBHOOK_SECRET}"
            result.changes.append(Change("create", target, "self-signed webhook serving certificate"))
        return result

    def ensure_webhook_secret(self, ctx: StepContext) -> None:
        """Create the controller's webhook TLS Secret when nothing (cert-manager, an earlier run) provided it."""
        import base64

        from migrate.adapters.tls import serving_cert

        kube = ctx.adapters.kube()
        if kube.get("v1", "Secret", WEBHOOK_SECRET, WEBHOOK_NS) is not None:
            return
        cert = serving_cert(WEBHOOK_SERVICE, WEBHOOK_NS)
        data = {"tls.crt": cert.tls_crt, "tls.key": cert.tls_key, "ca.crt": cert.ca_crt}
        ctx.intent("create-webhook-tls-secret", secret=f"{WEBHOOK_NS}/{WEBHOOK_SECRET}", not_after=str(cert.not_after))
        meta = {
            "name": WEBHOOK_SECRET,
            "namespace": WEBHOOK_NS,
            "labels": {"app.kubernetes.io/managed-by": "bpmigrate"},
        }
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": meta}
        kube.apply([{**secret, "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}])

    def apply(self, ctx: StepContext) -> Outputs:
        self.ensure_webhook_secret(ctx)
        return super().apply(ctx)

    def verify(self, ctx: StepContext) -> list[Check]:
        import base64
        import datetime

        from migrate.adapters.tls import certificate_info

        checks = super().verify(ctx)
        live = ctx.adapters.kube().get("v1", "Secret", WEBHOOK_SECRET, WEBHOOK_NS) or {}
        crt = (live.get("data") or {}).get("tls.crt")
        info = certificate_info(base64.b64decode(crt).decode()) if crt else {"dns_names": [], "not_after": None}
        want = f"{WEBHOOK_SERVICE}.{WEBHOOK_NS}.svc"
        valid = info["not_after"] is not None and info["not_after"] > datetime.datetime.now(datetime.UTC)
        ok = want in info["dns_names"] and valid
        checks.append(Check(f"Secret {WEBHOOK_NS}/{WEBHOOK_SECRET} serves {want}", ok, info["dns_names"], want))
        return checks + self.aws_access_checks(ctx)

    def aws_access_checks(self, ctx: StepContext) -> list[Check]:
        """Each AWS-calling controller renews its leader lease (it runs) and reports no credential errors (IRSA)."""
        import datetime

        kube = ctx.adapters.kube()
        max_age = ctx.typed(self.Settings).lease_max_age_s
        now = datetime.datetime.now(datetime.UTC)
        events = kube.list("v1", "Event", WEBHOOK_NS)
        checks = []
        for name, lease_name in LEASES.items():
            lease = kube.get("coordination.k8s.io/v1", "Lease", lease_name, WEBHOOK_NS) or {}
            renewed = str((lease.get("spec") or {}).get("renewTime") or "")
            try:
                age: float | None = (
                    now - datetime.datetime.fromisoformat(renewed.replace("Z", "+00:00"))
                ).total_seconds()
            except ValueError:
                age = None
            seen = "no lease" if age is None else f"renewed {age:.0f}s ago"
            ok = age is not None and age <= max_age
            hint = (
                "" if ok else f"kubectl -n {WEBHOOK_NS} logs deploy/{name} (a controller without AWS credentials exits)"
            )
            checks.append(Check(f"{name} holds its leader lease", ok, seen, f"renewed within {max_age:g}s", hint))
            denied = [
                str(e.get("message", ""))[:200]
                for e in events
                if str((e.get("involvedObject") or {}).get("name", "")).startswith(name)
                and any(marker in str(e.get("message", "")) for marker in CREDENTIAL_ERRORS)
            ]
            why = "its IRSA role (eks.amazonaws.com/role-arn) is missing or lacks the AWS-published policy"
            checks.append(
                Check(f"{name} reports no AWS credential errors", not denied, denied[:3], [], why if denied else "")
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        super().rollback(ctx)
        kube = ctx.adapters.kube()
        live = kube.get("v1", "Secret", WEBHOOK_SECRET, WEBHOOK_NS) or {}
        if ((live.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/managed-by") == "bpmigrate":
            ctx.intent("kube-delete", ref=f"Secret/{WEBHOOK_NS}/{WEBHOOK_SECRET}")  # generated by this step
            kube.delete("v1", "Secret", WEBHOOK_SECRET, WEBHOOK_NS)

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return f"{len(outputs.get('workloads') or [])} add-on workload(s) available · {len(outputs.get('applied') or [])} object(s)"
