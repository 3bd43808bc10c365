"""Step ``security-hardening``: Security hardening: network policies, Pod Security "restricted" on the app namespaces, manifest check."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.errors import BpmError, ConfigError, StepFailed, VerifyFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, StepContext, StepSettings

from .._kube_step import ManifestStep, render_templates

PSA_LABEL = "pod-security.kubernetes.io/enforce"
TEMPLATE = "k8s/cutover/network-policies.yaml"
#: the VPC CNI's network-policy switch (EKS add-on configuration ``enableNetworkPolicy: "true"`` writes it)
CNI_CONFIGMAP = ("kube-system", "amazon-vpc-cni")
CNI_POLICY_KEY = "enable-network-policy-controller"
#: verify's probe: a pod no allow rule selects must NOT reach api-gateway:8080 (exit 1 = blocked; 3 = no DNS)
PROBE_POD = "bpmigrate-netpol-probe"
PROBE_SCRIPT = "nslookup api-gateway >/dev/null 2>&1 || exit 3; nc -z -w 3 api-gateway 8080"


class SecurityHardening(ManifestStep):
    """Security hardening: network policies, Pod Security "restricted" on the app namespaces, manifest check.

    Applies default-deny NetworkPolicies with one allow rule per service (``templates/k8s/cutover/
    network-policies.yaml``; the ALB and data stores are allowed from the environment's VPC CIDR: ``vpc_cidr``, else
    the CIDR of the VPC the vpc step recorded (EC2), else the environment's tfvars), labels each app namespace
    ``pod-security.kubernetes.io/enforce=restricted``, and checks EVERY manifest rendered from ``templates/k8s`` for
    privileged containers, hostPath volumes, missing resource limits, a writable root filesystem and root users. A
    finding names the manifest (kind/name, file) and the field path; the step fails before touching the cluster when
    any is found. Plan shows the findings as blocking. Verify also checks that the VPC CNI enforces network
    policies (its ``amazon-vpc-cni`` ConfigMap): without enforcement the policies are inert.

    Exemption (where a read-only root filesystem is not possible): annotate the workload
    ``bpmigrate.io/allow-writable-root: "<reason>"``.

    Rollback: deletes the network policies and restores each namespace's previous enforce label.
    """

    id = "security-hardening"
    title = "Network policies, Pod Security restricted, manifest security check"
    phase = 5
    rollback_mode = "delete"
    depends_on = ("k8s-deploy",)
    reversibility = Reversibility.REVERSIBLE

    class Settings(StepSettings):
        namespaces: list[str] = Field(default_factory=list, description="app namespaces (default: the environment's)")
        vpc_cidr: str | None = Field(None, description="the VPC CIDR of the policies' ipBlocks (default: derived)")
        probe: bool | None = Field(
            None,
            description="verify runs a short-lived pod that must fail to reach a denied port (default: not sandbox)",
        )
        probe_image: str = Field("busybox:1.36", description="image of the probe pod (needs sh, nslookup, nc)")
        probe_timeout_s: float = Field(90, gt=0, description="seconds for the probe pod to finish")

    def namespaces(self, ctx: StepContext) -> list[str]:
        return ctx.typed(self.Settings).namespaces or [ctx.env.kube.namespace]

    def vpc_cidr(self, ctx: StepContext) -> str:
        """The setting, else the recorded VPC's CIDR (EC2), else the environment's tfvars ``vpc_cidr``."""
        from migrate.adapters.tfvars import string_value, var_file

        configured = ctx.typed(self.Settings).vpc_cidr
        if configured:
            return configured
        vpc_id = ctx.output("vpc", "vpc_id", None)
        if vpc_id:
            try:
                vpc = ctx.adapters.get("aws_foundation").vpc(str(vpc_id)) or {}
                if vpc.get("CidrBlock"):
                    return str(vpc["CidrBlock"])
            except BpmError as exc:
                ctx.log(f"VPC {vpc_id} CIDR not readable from EC2 ({exc.what}): using the environment's tfvars")
        path = var_file(ctx.project_root, ctx.env)
        found = string_value(path, "vpc_cidr")
        if not found:
            raise ConfigError(
                f"no VPC CIDR for the network policies of environment {ctx.env_name}",
                f"no [steps.security-hardening] vpc_cidr, no VPC recorded by step vpc, no vpc_cidr in {path}",
                f'set [environments.{ctx.env_name}.steps.security-hardening] vpc_cidr = "10.x.0.0/16" in migrate.toml',
            )
        return found

    def values(self, ctx: StepContext) -> dict[str, Any]:
        return {"namespace": ctx.env.kube.namespace, "vpc_cidr": self.vpc_cidr(ctx), "env_name": ctx.env_name}

    def manifests(self, ctx: StepContext) -> list[dict[str, Any]]:
        return render_templates(ctx, TEMPLATE, self.values(ctx))

    def scan(self, ctx: StepContext) -> tuple[list[Any], int]:
        """Render every manifest under templates/k8s and run the security check; (findings, number of manifests)."""
        from migrate.adapters.manifests import placeholders, render

        from .._security import check_manifests

        root = ctx.templates_dir / "k8s"
        known = self.values(ctx)
        docs: list[tuple[str, dict[str, Any]]] = []
        files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml")) if root.is_dir() else []
        for path in files:
            shown = path.relative_to(ctx.project_root) if path.is_relative_to(ctx.project_root) else path
            try:  # every placeholder gets a value (known or a stand-in): the check reads structure, not values
                stand_ins = {name: f"placeholder-{name}" for name in placeholders(path)}
                rendered = render(path, {**stand_ins, **known})
            except ConfigError as exc:
                raise StepFailed(
                    f"security check: cannot render {shown}",
                    str(exc),
                    f"fix {shown} and re-run `bpmigrate plan --step security-hardening --env {ctx.env_name}`",
                ) from None
            docs.extend((str(shown), d) for d in rendered)
        return check_manifests(docs), len(docs)

    def labels(self, ctx: StepContext, ns: str) -> dict[str, str]:
        live = ctx.adapters.kube().get("v1", "Namespace", ns)
        return dict(((live or {}).get("metadata") or {}).get("labels") or {})

    def set_label(self, ctx: StepContext, ns: str, value: str) -> None:
        """Set the Pod Security enforce label, re-applying the namespace's other labels (one field manager: SSA
        would drop labels it applied before and leaves out now)."""
        labels = {**self.labels(ctx, ns), PSA_LABEL: value}
        ctx.intent("label-namespace", namespace=ns, label=f"{PSA_LABEL}={value}")
        ctx.adapters.kube().apply(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}]
        )

    def enforcement(self, ctx: StepContext) -> Check:
        ns, name = CNI_CONFIGMAP
        data = (ctx.adapters.kube().get("v1", "ConfigMap", name, ns) or {}).get("data") or {}
        value = data.get(CNI_POLICY_KEY)
        return Check(
            "VPC CNI enforces network policies",
            str(value).lower() == "true",
            f"{ns}/{name} {CNI_POLICY_KEY}={value}",
            "true",
            ""
            if str(value).lower() == "true"
            else "enable it: EKS add-on vpc-cni configuration "
            '{"enableNetworkPolicy": "true"} (Terraform module eks), or the policies are not enforced',
        )

    def plan(self, ctx: StepContext) -> PlanResult:
        findings, count = self.scan(ctx)
        result = super().plan(ctx)
        for ns in self.namespaces(ctx):
            current = self.labels(ctx, ns).get(PSA_LABEL)
            if current == "restricted":
                result.in_place.append(f"Namespace/{ns} {PSA_LABEL}=restricted")
            else:
                result.changes.append(
                    Change("update", f"Namespace/{ns}", f"label {PSA_LABEL}: {current} -> restricted")
                )
        result.findings.extend(Finding("info" if f.exempted else "block", str(f), f.fix) for f in findings)
        enforced = self.enforcement(ctx)
        if not enforced.ok:
            result.findings.append(
                Finding("warn", f"network policies would be inert: {enforced.observed}", enforced.detail)
            )
        result.data["manifests_checked"] = count
        result.data["vpc_cidr"] = self.vpc_cidr(ctx)
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        from .._security import blocking

        findings, count = self.scan(ctx)
        bad = blocking(findings)
        if bad:
            raise VerifyFailed(
                f"security check: {len(bad)} finding(s) in the rendered manifests",
                "\n".join(str(f) for f in bad[:30]),
                "fix the manifests named above (or annotate a reasoned exception, see runbooks), then "
                f"`bpmigrate apply --step security-hardening --env {ctx.env_name}`",
            )
        if ctx.checkpoints.get("previous-labels") is None:
            previous = {ns: self.labels(ctx, ns).get(PSA_LABEL) for ns in self.namespaces(ctx)}
            ctx.checkpoints.put("previous-labels", previous)
        out = super().apply(ctx)
        for ns in self.namespaces(ctx):
            self.set_label(ctx, ns, "restricted")
        return {**out, "namespaces": self.namespaces(ctx), "manifests_checked": count, "vpc_cidr": self.vpc_cidr(ctx)}

    def verify(self, ctx: StepContext) -> list[Check]:
        from .._security import blocking

        findings = blocking(self.scan(ctx)[0])
        text = "; ".join(str(f) for f in findings[:10])
        checks = [Check("security check of rendered manifests", not findings, len(findings), 0, text)]
        checks.extend(super().verify(ctx))
        for ns in self.namespaces(ctx):
            value = self.labels(ctx, ns).get(PSA_LABEL)
            checks.append(Check(f"Namespace/{ns} {PSA_LABEL}", value == "restricted", value, "restricted"))
        checks.append(self.enforcement(ctx))
        probe = ctx.typed(self.Settings).probe
        if probe or (probe is None and not ctx.is_sandbox):
            checks.append(self.denied_probe(ctx))
        return checks

    def denied_probe(self, ctx: StepContext) -> Check:
        """Run a pod that no allow rule selects; its connection to api-gateway:8080 must be blocked."""
        s = ctx.typed(self.Settings)
        kube, ns = ctx.adapters.kube(), ctx.env.kube.namespace
        restricted = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        }
        container = {
            "name": "probe",
            "image": s.probe_image,
            "command": ["sh", "-c", PROBE_SCRIPT],
            "resources": {"limits": {"cpu": "50m", "memory": "32Mi"}},
            "securityContext": restricted,
        }
        pod_security = {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}}
        meta = {"name": PROBE_POD, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "bpmigrate"}}
        spec = {"restartPolicy": "Never", "securityContext": pod_security, "containers": [container]}
        ctx.intent("network-policy-probe", pod=f"{ns}/{PROBE_POD}")
        kube.delete("v1", "Pod", PROBE_POD, ns)
        kube.apply([{"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}])
        deadline = time.monotonic() + s.probe_timeout_s
        code: int | None = None
        while code is None and time.monotonic() < deadline:
            status = (kube.get("v1", "Pod", PROBE_POD, ns) or {}).get("status") or {}
            for cs in status.get("containerStatuses") or []:
                code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode", code)
            if code is None:
                time.sleep(1.0)
        kube.delete("v1", "Pod", PROBE_POD, ns)
        seen = {None: "did not finish", 0: "connected (not blocked)", 1: "blocked", 3: "no DNS answer"}.get(code, code)
        why = "" if code == 1 else "with enforcement on, a pod no policy allows must not reach api-gateway:8080"
        return Check("a pod no policy allows cannot reach api-gateway:8080", code == 1, seen, "blocked", why)

    def rollback(self, ctx: StepContext) -> None:
        """Delete the network policies; restore each namespace's previous enforce label."""
        self.rollback_manifests(ctx)
        for ns, value in (ctx.checkpoints.get("previous-labels") or {}).items():
            if ctx.adapters.kube().get("v1", "Namespace", ns) is not None:
                self.set_label(ctx, ns, value or "privileged")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return (
            f"{len(outputs.get('applied') or [])} network policies (VPC {outputs.get('vpc_cidr')}) · "
            f"{len(outputs.get('namespaces') or [])} namespace(s) restricted · {outputs.get('manifests_checked')} manifests checked"
        )
