"""Step ``security-hardening``: Security hardening: network policies, Pod Security "restricted" on the app namespaces, manifest check."""

from __future__ import annotations

from typing import Any

from migrate.errors import VerifyFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, StepContext

from ._common import (
    PHASE,
    PSA_LABEL,
    KubeTemplateStep,
    app_namespaces,
    kube_delete,
    kube_plan,
    kube_unreachable,
    kube_verify,
    security_scan,
    set_namespace_label,
)


class SecurityHardening(KubeTemplateStep):
    """Security hardening: network policies, Pod Security "restricted" on the app namespaces, manifest check.

    Applies default-deny NetworkPolicies with one allow rule per service (``templates/k8s/cutover/
    network-policies.yaml``), labels each app namespace ``pod-security.kubernetes.io/enforce=restricted``, and checks
    EVERY manifest rendered from ``templates/k8s`` for privileged containers, hostPath volumes, missing resource
    limits, a writable root filesystem and root users. A finding names the manifest (kind/name, file) and the field
    path; the step fails before touching the cluster when any is found. Plan shows the findings as blocking.

    Exemption (where a read-only root filesystem is not possible): annotate the workload
    ``bpmigrate.io/allow-writable-root: "<reason>"``.

    Rollback: deletes the network policies and restores each namespace's previous enforce label.
    """

    id = "security-hardening"
    title = "Network policies, Pod Security restricted, manifest security check"
    phase = PHASE
    depends_on = ("k8s-deploy",)
    reversibility = Reversibility.REVERSIBLE
    templates = ("cutover/network-policies.yaml",)

    def _block(self, findings: list[Any]) -> list[Finding]:
        return [Finding("info" if f.exempted else "block", str(f), f.fix) for f in findings]

    def plan(self, ctx: StepContext) -> PlanResult:
        findings, count = security_scan(ctx)
        reason = kube_unreachable(ctx)
        if reason:
            result = PlanResult(skip_reason=reason)
        else:
            result = kube_plan(ctx, self.docs(ctx))
            for ns in app_namespaces(ctx):
                live = ctx.adapters.kube().get("v1", "Namespace", ns)
                current = ((live or {}).get("metadata", {}).get("labels") or {}).get(PSA_LABEL)
                if current == "restricted":
                    result.in_place.append(f"Namespace/{ns} {PSA_LABEL}=restricted")
                else:
                    result.changes.append(
                        Change("update", f"Namespace/{ns}", f"label {PSA_LABEL}: {current} -> restricted")
                    )
        result.findings.extend(self._block(findings))
        result.data["manifests_checked"] = count
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        from .._security import blocking

        findings, count = security_scan(ctx)
        bad = blocking(findings)
        if bad:
            raise VerifyFailed(
                f"security check: {len(bad)} finding(s) in the rendered manifests",
                "\n".join(str(f) for f in bad[:30]),
                "fix the manifests named above (or annotate a reasoned exception, see runbooks), then "
                "`bpmigrate apply --step security-hardening`",
            )
        kube = ctx.adapters.kube()
        previous = ctx.checkpoints.get("previous-labels")
        if previous is None:
            previous = {}
            for ns in app_namespaces(ctx):
                live = kube.get("v1", "Namespace", ns)
                previous[ns] = ((live or {}).get("metadata", {}).get("labels") or {}).get(PSA_LABEL)
            ctx.checkpoints.put("previous-labels", previous)
        out = super().apply(ctx)
        for ns in app_namespaces(ctx):
            ctx.intent("label-namespace", namespace=ns, label=f"{PSA_LABEL}=restricted")
            set_namespace_label(ctx, ns, "restricted")
        out["namespaces"] = app_namespaces(ctx)
        out["manifests_checked"] = count
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        from .._security import blocking

        findings = blocking(security_scan(ctx)[0])
        checks = [
            Check(
                "security check of rendered manifests",
                not findings,
                len(findings),
                0,
                "; ".join(str(f) for f in findings[:10]),
            )
        ]
        checks.extend(kube_verify(ctx, self.docs(ctx)))
        for ns in app_namespaces(ctx):
            live = ctx.adapters.kube().get("v1", "Namespace", ns)
            value = ((live or {}).get("metadata", {}).get("labels") or {}).get(PSA_LABEL)
            checks.append(Check(f"Namespace/{ns} {PSA_LABEL}", value == "restricted", value, "restricted"))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Delete the network policies; restore each namespace's previous enforce label."""
        if kube_unreachable(ctx):
            return
        kube_delete(ctx, self.docs(ctx))
        previous = ctx.checkpoints.get("previous-labels") or {}
        for ns, value in previous.items():
            ctx.intent("label-namespace", namespace=ns, label=f"{PSA_LABEL}={value or 'privileged'}")
            if ctx.adapters.kube().get("v1", "Namespace", ns) is not None:
                set_namespace_label(ctx, ns, value or "privileged")
