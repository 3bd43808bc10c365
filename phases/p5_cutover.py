"""Phase 5 — optimization and cutover: cost controls, autoscaling, hardening, the pre-cutover checklist, the gated
weighted DNS cutover with automatic revert, and the post-cutover watch.

The old (Compose) stack keeps running through all of phase 5: every step here can send traffic back to it.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from migrate.errors import BpmError, ConfigError, FenceRefused, StepFailed, VerifyFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext
from phases._sync import DataSwitch

if TYPE_CHECKING:
    from migrate.adapters.aws_route53 import RecordSet, Route53Adapter

PHASE = 5
APP_SERVICES = ("frontend", "api-gateway", "intent-classifier", "technique-selector", "prompt-generator", "torchserve")
K8S_TEMPLATES = "k8s"


# -- small shared helpers ------------------------------------------------------------------------------------------
class Clock:
    """Wall clock and sleep, as one replaceable object (tests substitute a fast one)."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts is not None else None


def parse_ts(value: Any) -> float | None:
    """A recorded timestamp (epoch seconds or ISO 8601) as epoch seconds; None when absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def kube_unreachable(ctx: StepContext) -> str | None:
    """Why no Kubernetes cluster can be used here (None = reachable)."""
    try:
        return ctx.adapters.kube().unreachable_reason()
    except BpmError as exc:
        return str(exc)


def app_namespaces(ctx: StepContext) -> list[str]:
    configured = ctx.setting("namespaces")
    if configured:
        return [str(n) for n in configured]
    return [ctx.env.kube.namespace]


def stats_dict(stats: Any) -> dict[str, Any]:
    """The fields of a LatencyStats worth keeping as evidence."""
    keys = ("count", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    out = {k: getattr(stats, k, None) for k in keys}
    kinds = getattr(stats, "error_kinds", None)
    if kinds:
        out["error_kinds"] = dict(kinds)
    return out


def template_values(ctx: StepContext) -> dict[str, Any]:
    """Values for the ``templates/k8s/cutover`` manifests (settings override the defaults)."""
    ns = ctx.env.kube.namespace
    values: dict[str, Any] = {
        "namespace": ns,
        "env_name": ctx.env_name,
        "domain": ctx.env.domain,
        "vpc_cidr": ctx.setting("vpc_cidr", "10.0.0.0/16"),
        "monthly_target_usd": ctx.setting("monthly_target_usd", 5000),
        "quota_requests_cpu": ctx.setting("quota_requests_cpu", "32"),
        "quota_requests_memory": ctx.setting("quota_requests_memory", "128Gi"),
        "quota_limits_cpu": ctx.setting("quota_limits_cpu", "64"),
        "quota_limits_memory": ctx.setting("quota_limits_memory", "256Gi"),
        "quota_gpus": ctx.setting("quota_gpus", "4"),
        "quota_pods": ctx.setting("quota_pods", "200"),
        "nth_image": ctx.setting("nth_image", "public.ecr.aws/aws-ec2/aws-node-termination-handler:v1.22.0"),
        "cost_monitor_image": ctx.setting("cost_monitor_image", "public.ecr.aws/aws-cli/aws-cli:2.15.0"),
        "cost_monitor_role_arn": ctx.setting("cost_monitor_role_arn", ""),
        "region": ctx.env.aws.region,
    }
    for key, value in ctx.settings.items():
        if isinstance(value, (str, int, float)) and key not in values:
            values[key] = value
    return values


def render_cutover(ctx: StepContext, name: str) -> list[dict[str, Any]]:
    """Render ``templates/k8s/<name>`` (e.g. ``cutover/vpa.yaml``) with this environment's values."""
    from migrate.adapters.manifests import render

    return render(ctx.templates_dir / K8S_TEMPLATES / name, template_values(ctx))


def ref(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata", {})
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{ns + '/' if ns else ''}{meta.get('name')}"


def kube_plan(ctx: StepContext, docs: list[dict[str, Any]]) -> PlanResult:
    """create/update/noop per manifest against live objects (read-only)."""
    kube = ctx.adapters.kube()
    result = PlanResult()
    for doc in docs:
        try:
            live = kube.get(doc["apiVersion"], doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
        except BpmError as exc:  # e.g. the kind's CRD is not installed (VerticalPodAutoscaler)
            result.findings.append(
                Finding(
                    "block",
                    f"cannot read {ref(doc)} ({doc['apiVersion']}): {exc.what}",
                    f"install the {doc['kind']} API (CRD/controller) in the cluster, or leave it out (see the step's settings)",
                )
            )
            continue
        if live is None:
            result.changes.append(Change("create", ref(doc)))
        elif _subset_differs(doc.get("spec", doc.get("data", {})), live.get("spec", live.get("data", {}))):
            result.changes.append(Change("update", ref(doc), _diff_summary(doc.get("spec", {}), live.get("spec", {}))))
        else:
            result.in_place.append(ref(doc))
    return result


def _subset_differs(wanted: Any, live: Any) -> bool:
    """True when ``wanted`` is not contained in ``live`` (fields the server added are ignored)."""
    if isinstance(wanted, Mapping):
        if not isinstance(live, Mapping):
            return True
        return any(_subset_differs(v, live.get(k)) for k, v in wanted.items())
    if isinstance(wanted, list):
        if not isinstance(live, list) or len(wanted) != len(live):
            return True
        return any(_subset_differs(w, lv) for w, lv in zip(wanted, live, strict=True))
    return str(wanted) != str(live)


def _diff_summary(wanted: Any, live: Any, path: str = "spec") -> str:
    diffs: list[str] = []

    def walk(w: Any, lv: Any, p: str) -> None:
        if isinstance(w, Mapping) and isinstance(lv, Mapping):
            for k, v in w.items():
                walk(v, lv.get(k), f"{p}.{k}")
        elif isinstance(w, list) and isinstance(lv, list) and len(w) == len(lv):
            for i, (a, b) in enumerate(zip(w, lv, strict=True)):
                walk(a, b, f"{p}[{i}]")
        elif str(w) != str(lv):
            diffs.append(f"{p}: {json.dumps(lv, default=str)} -> {json.dumps(w, default=str)}")

    walk(wanted, live, path)
    return "; ".join(diffs[:8]) + (f"; ... {len(diffs) - 8} more" if len(diffs) > 8 else "")


def kube_verify(ctx: StepContext, docs: list[dict[str, Any]]) -> list[Check]:
    kube = ctx.adapters.kube()
    checks = []
    for doc in docs:
        live = kube.get(doc["apiVersion"], doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
        if live is None:
            checks.append(Check(f"{ref(doc)} exists", False, "absent", "present"))
            continue
        differs = _subset_differs(doc.get("spec", doc.get("data", {})), live.get("spec", live.get("data", {})))
        checks.append(
            Check(
                f"{ref(doc)} matches the template",
                not differs,
                "differs" if differs else "matches",
                "matches",
                _diff_summary(doc.get("spec", {}), live.get("spec", {})) if differs else "",
            )
        )
    return checks


def kube_delete(ctx: StepContext, docs: list[dict[str, Any]]) -> list[str]:
    kube = ctx.adapters.kube()
    deleted = []
    for doc in reversed(docs):
        meta = doc["metadata"]
        ctx.intent("kube-delete", ref=ref(doc))
        if kube.delete(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace")):
            deleted.append(ref(doc))
    return deleted


class KubeTemplateStep(Step):
    """Base for phase-5 steps that server-side apply manifests rendered from templates/k8s/cutover."""

    templates: ClassVar[tuple[str, ...]] = ()

    def docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in self.templates:
            out.extend(render_cutover(ctx, name))
        return out

    def skip_reason(self, ctx: StepContext) -> str | None:
        return kube_unreachable(ctx)

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        return kube_plan(ctx, self.docs(ctx))

    def apply(self, ctx: StepContext) -> Outputs:
        docs = self.docs(ctx)
        ctx.intent("kube-apply", refs=[ref(d) for d in docs])
        applied = ctx.adapters.kube().apply(docs)
        return {"applied": applied}

    def verify(self, ctx: StepContext) -> list[Check]:
        return kube_verify(ctx, self.docs(ctx))

    def rollback(self, ctx: StepContext) -> None:
        """Delete the objects this step applied (absent ones are skipped)."""
        if kube_unreachable(ctx):
            return
        kube_delete(ctx, self.docs(ctx))


# -- cost-controls ---------------------------------------------------------------------------------------------------
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
            "amount_usd": float(ctx.setting("monthly_target_usd", 5000)),
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


# -- autoscale-tune --------------------------------------------------------------------------------------------------
DEFAULT_HPA = {"min": 2, "max": 10, "cpu": 70}


class AutoscaleTune(KubeTemplateStep):
    """Autoscaling: HPA thresholds from settings, VPA objects in recommendation mode (updateMode "Off").

    ``plan`` shows the diff of each HorizontalPodAutoscaler against the live object (min/max replicas, CPU
    target). VPAs only recommend (``kubectl describe vpa -n <ns>``); they never evict pods.

    Settings: ``hpa = { <service> = { min = 2, max = 10, cpu = 70 } }`` per service (defaults: 2/10/70 %),
    ``services`` (default: the BetterPrompts services), ``vpa = false`` when the cluster has no VPA installed (the
    plan blocks naming the missing API otherwise).

    Rollback: deletes the VPAs and restores the HPA specs recorded before the change (or deletes HPAs it created).
    """

    id = "autoscale-tune"
    title = "HPA thresholds and VPA recommendations"
    phase = PHASE
    depends_on = ("hpa",)
    reversibility = Reversibility.REVERSIBLE
    templates = ("app/30-hpa.yaml", "cutover/vpa.yaml")  # the app's HPAs (step hpa), re-tuned

    def docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        services = set(ctx.setting("services", APP_SERVICES))
        with_vpa = bool(ctx.setting("vpa", True))
        hpa_settings: Mapping[str, Any] = ctx.setting("hpa", {})
        out = []
        for doc in super().docs(ctx):
            target = doc.get("spec", {}).get("scaleTargetRef", doc.get("spec", {}).get("targetRef", {})).get("name")
            if target not in services or (doc["kind"] == "VerticalPodAutoscaler" and not with_vpa):
                continue
            if doc["kind"] == "HorizontalPodAutoscaler":
                wanted = {**DEFAULT_HPA, **hpa_settings.get("default", {}), **hpa_settings.get(str(target), {})}
                spec = doc["spec"]
                spec["minReplicas"] = int(wanted["min"])
                spec["maxReplicas"] = int(wanted["max"])
                spec["metrics"] = [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": int(wanted["cpu"])},
                        },
                    }
                ]
            out.append(doc)
        return out

    def apply(self, ctx: StepContext) -> Outputs:
        kube = ctx.adapters.kube()
        previous: dict[str, Any] = {}
        recorded = ctx.checkpoints.get("previous-hpa")
        if recorded is None:
            for doc in self.docs(ctx):
                if doc["kind"] != "HorizontalPodAutoscaler":
                    continue
                live = kube.get(
                    doc["apiVersion"], doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace")
                )
                previous[ref(doc)] = None if live is None else live.get("spec")
            ctx.checkpoints.put("previous-hpa", previous)
        else:
            previous = recorded
        out = super().apply(ctx)
        out["hpa"] = {
            ref(d): {"min": d["spec"]["minReplicas"], "max": d["spec"]["maxReplicas"]}
            for d in self.docs(ctx)
            if d["kind"] == "HorizontalPodAutoscaler"
        }
        return out

    def rollback(self, ctx: StepContext) -> None:
        """Delete the VPAs; put each HPA back to the spec recorded before the change."""
        if kube_unreachable(ctx):
            return
        previous = ctx.checkpoints.get("previous-hpa") or {}
        kube = ctx.adapters.kube()
        for doc in reversed(self.docs(ctx)):
            before = previous.get(ref(doc))
            if doc["kind"] == "HorizontalPodAutoscaler" and before:
                restored = copy.deepcopy(doc)
                restored["spec"] = before
                ctx.intent("kube-restore", ref=ref(doc))
                kube.apply([restored])
            else:
                meta = doc["metadata"]
                ctx.intent("kube-delete", ref=ref(doc))
                kube.delete(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))


# -- security-hardening ----------------------------------------------------------------------------------------------
PSA_LABEL = "pod-security.kubernetes.io/enforce"


def set_namespace_label(ctx: StepContext, ns: str, value: str) -> None:
    """Set the Pod Security enforce label, re-applying the namespace's other labels (one field manager: SSA would
    drop labels it applied before and leaves out now)."""
    kube = ctx.adapters.kube()
    live = kube.get("v1", "Namespace", ns) or {}
    labels = dict((live.get("metadata") or {}).get("labels") or {})
    labels[PSA_LABEL] = value
    kube.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}])


def security_scan(ctx: StepContext) -> tuple[list[Any], int]:
    """Render every manifest under templates/k8s and run the security check; (findings, number of manifests)."""
    from migrate.adapters.manifests import placeholders, render
    from phases._security import check_manifests

    root = ctx.templates_dir / "k8s"
    known = template_values(ctx)
    docs: list[tuple[str, dict[str, Any]]] = []
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml")) if root.is_dir() else []
    for path in files:
        shown = path.relative_to(ctx.project_root) if path.is_relative_to(ctx.project_root) else path
        try:
            # every placeholder gets a value (known or a stand-in): the check reads structure, not values
            values = {name: f"placeholder-{name}" for name in placeholders(path)}
            rendered = render(path, {**values, **known})
        except ConfigError as exc:
            raise StepFailed(
                f"security check: cannot render {shown}",
                str(exc),
                f"fix {shown} and re-run `bpmigrate plan security-hardening`",
            ) from None
        docs.extend((str(shown), d) for d in rendered if isinstance(d, dict))
    return check_manifests(docs), len(docs)


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
        from phases._security import blocking

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
        from phases._security import blocking

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


# -- pre-cutover-check ------------------------------------------------------------------------------------------------
def data_steps() -> list[type[Step]]:
    """The verification-bearing steps of phase 2 (phases/p2_data.py), in file order."""
    import importlib

    try:
        module = importlib.import_module("phases.p2_data")
    except ModuleNotFoundError:
        return []
    steps = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Step)
        and obj.id
        and obj.phase == 2
        and obj.__module__ == module.__name__
    ]
    return steps


def step_settings(ctx: StepContext, step_id: str) -> dict[str, Any]:
    """Another step's settings in this environment (project defaults merged with the environment's)."""
    try:
        from migrate.config import load

        return load(ctx.project_root / "migrate.toml").step_settings(ctx.env_name, step_id)
    except BpmError:
        return dict(ctx.env.steps.get(step_id, {}))


def rerun_verify(ctx: StepContext, cls: type[Step]) -> Check:
    """Run ``cls.verify`` again now, through this context's adapters, as the step itself would (its settings)."""
    child = copy.copy(ctx)
    child.step_id = cls.id
    child.settings = step_settings(ctx, cls.id)
    step = cls()
    name = f"{cls.id}: verify re-run"
    try:
        skip = step.skip_reason(child)
        if skip:
            return Check(name, True, f"skipped in this environment: {skip}", "all checks pass")
        results = step.verify(child)
    except BpmError as exc:
        return Check(name, False, str(exc).splitlines()[0], "all checks pass", str(exc))
    failed = [c for c in results if not c.ok]
    return Check(
        name,
        bool(results) and not failed,
        f"{len(results) - len(failed)}/{len(results)} checks pass",
        "all checks pass",
        "; ".join(f"{c.name}: observed {c.observed}, expected {c.expected}" for c in failed[:10]),
    )


def rerun_data_verification(ctx: StepContext) -> list[Check]:
    """Call verify() of every phase-2 step again, through this context's adapters (not the ledger's verdict)."""
    steps = data_steps()
    if not steps:
        return [Check("data-phase verification", False, "phases/p2_data.py has no steps", "phase-2 steps", "")]
    return [rerun_verify(ctx, cls) for cls in steps]


def step_class(module: str, step_id: str) -> type[Step] | None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        return None
    for obj in vars(mod).values():
        if isinstance(obj, type) and issubclass(obj, Step) and obj.id == step_id:
            return obj
    return None


class PreCutoverCheck(Step):
    """Pre-cutover checklist: the guide's validation list, run as checks right before DNS moves.

    * data-phase verification still green — every phase-2 step's ``verify`` is RE-RUN now against the live
      databases (row counts, checksums), not read from the ledger;
    * services healthy — each ``health_urls`` entry answers 2xx/3xx; with a cluster, every Deployment in the app
      namespaces has all replicas available;
    * smoke tests pass — the ``app-smoke`` step's checks are re-run, and each ``smoke_urls`` entry (GET) answers
      with the expected status;
    * load-test gate recorded within ``load_test_max_age_h`` hours (default 24) — from the ``load-test`` step's
      recorded timestamp, and that gate passed.

    Read-only: apply records the checklist result; rollback is a no-op.
    """

    id = "pre-cutover-check"
    title = "Pre-cutover checklist (re-run data verification, health, smoke, load gate)"
    phase = PHASE
    # the data steps are listed so their outputs (read by their verify) are recorded before this re-runs them
    depends_on = ("data-validate", "redis-verify", "app-smoke", "load-test", "security-hardening")
    reversibility = Reversibility.REVERSIBLE
    clock: ClassVar[Clock] = Clock()

    def skip_reason(self, ctx: StepContext) -> str | None:
        """Sandbox only: no service can be observed (no cluster, no health_urls, app-smoke not recorded)."""
        if (
            ctx.is_sandbox
            and not ctx.setting("health_urls")
            and "app-smoke" not in ctx.upstream
            and kube_unreachable(ctx)
        ):
            return (
                "no services to check in this sandbox (no Kubernetes cluster, no [steps.pre-cutover-check] health_urls, "
                "app-smoke not recorded)"
            )
        return None

    def checks(self, ctx: StepContext) -> list[Check]:
        checks = rerun_data_verification(ctx)
        checks.extend(self._health(ctx))
        checks.extend(self._smoke(ctx))
        checks.append(self._load_gate(ctx))
        return checks

    def _health(self, ctx: StepContext) -> list[Check]:
        http = ctx.adapters.http()
        checks: list[Check] = []
        for url in ctx.setting("health_urls", []):
            try:
                resp = http.get(str(url), timeout=float(ctx.setting("timeout_s", 5)))
                checks.append(Check(f"healthy: {url}", 200 <= resp.status < 400, resp.status, "2xx/3xx"))
            except BpmError as exc:
                checks.append(Check(f"healthy: {url}", False, str(exc).splitlines()[0], "2xx/3xx"))
        if not kube_unreachable(ctx):
            kube = ctx.adapters.kube()
            for ns in app_namespaces(ctx):
                for dep in kube.list("apps/v1", "Deployment", ns):
                    name = dep["metadata"]["name"]
                    want = int(dep.get("spec", {}).get("replicas", 1) or 0)
                    have = int((dep.get("status") or {}).get("availableReplicas", 0) or 0)
                    checks.append(Check(f"Deployment/{ns}/{name} available", have >= want, have, want))
        if not checks:
            checks.append(
                Check(
                    "services healthy",
                    False,
                    "nothing to check",
                    "health_urls set or a cluster reachable",
                    'set [steps.pre-cutover-check] health_urls = ["https://.../health"]',
                )
            )
        return checks

    def _smoke(self, ctx: StepContext) -> list[Check]:
        http = ctx.adapters.http()
        checks = []
        for item in ctx.setting("smoke_urls", []):
            url, expect = (item, 200) if isinstance(item, str) else (str(item["url"]), int(item.get("status", 200)))
            try:
                resp = http.get(url, timeout=float(ctx.setting("timeout_s", 5)))
                checks.append(Check(f"smoke: {url}", resp.status == expect, resp.status, expect))
            except BpmError as exc:
                checks.append(Check(f"smoke: {url}", False, str(exc).splitlines()[0], expect))
        smoke_cls = step_class("phases.p3_app", "app-smoke")
        if smoke_cls is not None and ("app-smoke" in ctx.upstream or not checks):
            checks.append(rerun_verify(ctx, smoke_cls))
        return checks

    def _load_gate_time(self, ctx: StepContext, outputs: Mapping[str, Any]) -> float | None:
        """When the recorded (passing) load-test gate ran: from its outputs, else from its JSON report's ``at``."""
        for key in ("finished_at", "recorded_at", "completed_at", "at", "timestamp", "ran_at"):
            ts = parse_ts(outputs.get(key))
            if ts is not None:
                return ts
        report = ctx.state_dir / ctx.env_name / "artifacts" / "load-test" / "load-test-report.json"
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("failures"):
            return None  # the last run failed: its time is not the recorded gate's
        return parse_ts(data.get("at"))

    def _load_gate(self, ctx: StepContext) -> Check:
        max_age_h = float(ctx.setting("load_test_max_age_h", 24))
        outputs = ctx.upstream.get("load-test", {})
        passed = outputs.get("passed", outputs.get("gate_passed", outputs.get("ok")))
        ts = self._load_gate_time(ctx, outputs) if outputs else None
        if ts is None:
            return Check(
                "load-test gate recorded",
                False,
                "no passing load-test recorded" if not outputs else "no timestamp recorded",
                f"passed, within {max_age_h:g} h",
                f"bpmigrate --env {ctx.env_name} apply --step load-test",
            )
        age_h = (self.clock.now() - ts) / 3600
        ok = age_h <= max_age_h and bool(passed)
        return Check(
            "load-test gate recorded",
            ok,
            f"{age_h:.1f} h ago, passed={passed}",
            f"passed, within {max_age_h:g} h",
            "" if ok else f"re-run the gate: bpmigrate --env {ctx.env_name} apply --step load-test",
        )

    def plan(self, ctx: StepContext) -> PlanResult:
        result = PlanResult(
            changes=[Change("run", "pre-cutover checklist", "data verify, health, smoke, load-test gate")]
        )
        if not data_steps():
            result.findings.append(Finding("block", "no phase-2 steps found to re-verify", "add phases/p2_data.py"))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        checks = self.checks(ctx)
        failed = [c for c in checks if not c.ok]
        summary = [
            {"name": c.name, "ok": c.ok, "observed": str(c.observed), "expected": str(c.expected)} for c in checks
        ]
        if failed:
            raise VerifyFailed(
                f"pre-cutover check: {len(failed)} of {len(checks)} checks failed",
                "\n".join(f"{c.name}: observed {c.observed}, expected {c.expected} {c.detail}".strip() for c in failed),
                "fix the failing items, then `bpmigrate apply --step pre-cutover-check` again",
            )
        return {"checked_at": iso(self.clock.now()), "checks": summary, "passed": True}

    def verify(self, ctx: StepContext) -> list[Check]:
        return self.checks(ctx)

    def rollback(self, ctx: StepContext) -> None:
        """Nothing to undo: the checklist only reads."""


# -- dns-cutover -----------------------------------------------------------------------------------------------------
class CutoverSettings:
    """The dns-cutover settings, validated once."""

    def __init__(self, ctx: StepContext) -> None:
        s = ctx.setting
        self.record_name = str(s("record_name", f"api.{ctx.env.domain}")).rstrip(".").lower()
        self.zone_id: str | None = s("hosted_zone_id")
        self.zone_name = str(s("zone_name", ctx.env.domain)).rstrip(".").lower()
        self.record_type = str(s("record_type", "CNAME"))
        self.old_target: str | None = s("old_target")
        self.new_target: str | None = (
            s("new_target")
            or ctx.upstream.get("ingress", {}).get("alb_dns_name")
            or (ctx.upstream.get("ingress", {}).get("alb_hostname"))
        )
        self.new_alias_zone_id: str | None = s("new_alias_zone_id")
        self.old_set_id = str(s("old_set_id", "old-stack"))
        self.new_set_id = str(s("new_set_id", "new-stack"))
        self.low_ttl = int(s("low_ttl", 60))
        self.stages = [int(x) for x in s("stages", [10, 50, 100])]
        self.soak_s = float(s("soak_s", 300))
        self.probe_interval_s = float(s("probe_interval_s", 15))
        self.probe_urls = [str(u) for u in s("probe_urls", [f"https://{self.record_name}/health"])]
        self.probe_requests = int(s("probe_requests", 20))
        self.probe_concurrency = int(s("probe_concurrency", 4))
        self.probe_timeout_s = float(s("probe_timeout_s", 5))
        self.max_error_rate = float(s("max_error_rate", 0.01))
        self.max_p95_ms = float(s("max_p95_ms", 200))
        self.insync_timeout_s = float(s("insync_timeout_s", 600))
        self.insync_poll_s = float(s("insync_poll_s", 5))
        self.bake_time_s = float(s("bake_time_s", 86400))
        self.create_zone = bool(s("create_zone", ctx.is_sandbox))

    def problems(self) -> list[Finding]:
        out = []
        if any(f"//{self.record_name}/" in u or u.endswith(f"//{self.record_name}") for u in self.probe_urls):
            out.append(
                Finding(
                    "warn",
                    f"probes go through the weighted record {self.record_name}: at low stages most of them reach the "
                    "OLD stack, so a broken new stack is noticed late",
                    "set [steps.dns-cutover] probe_urls to an endpoint that reaches only the new stack "
                    "(e.g. a separate record pointing at the ALB)",
                )
            )
        if not self.stages or self.stages != sorted(set(self.stages)) or self.stages[-1] != 100 or self.stages[0] < 1:
            out.append(
                Finding(
                    "block",
                    f"stages {self.stages} must be increasing percentages ending at 100",
                    "set [steps.dns-cutover] stages = [10, 50, 100]",
                )
            )
        if not self.new_target:
            out.append(
                Finding(
                    "block",
                    "no new target for the cutover (the ALB DNS name)",
                    "apply the ingress step (alb_dns_name output) or set [steps.dns-cutover] new_target",
                )
            )
        if self.new_alias_zone_id is None and self.record_type == "CNAME":
            for target in (self.old_target, self.new_target):
                if target and _looks_like_ip(target):
                    out.append(
                        Finding(
                            "block",
                            f"{target} is an IP address: a CNAME cannot point at it",
                            'set record_type = "A" with IP targets, or new_alias_zone_id for an ALB alias',
                        )
                    )
        if not self.probe_urls:
            out.append(Finding("block", "no probe_urls: the cutover would shift traffic blind", "set probe_urls"))
        return out


def _looks_like_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


class DnsCutover(Step):
    """DNS cutover: weighted Route53 records move api.<domain> from the Compose host to the new ALB, in stages.

    1. Lower the TTL of the record to ``low_ttl`` (default 60 s) and wait out the OLD TTL, so that resolvers drop
       the long-cached answer. The old TTL and the time it was lowered are checkpointed: a resumed run only waits
       what is left.
    2. Shift the weights stage by stage (``stages``, default 10 → 50 → 100 % to the new stack; SetIdentifiers
       ``old-stack`` / ``new-stack``). After each change, poll Route53 ``GetChange`` until INSYNC (bounded by
       ``insync_timeout_s``), then soak for ``soak_s`` seconds while probes run against ``probe_urls`` every
       ``probe_interval_s``: error rate ≤ ``max_error_rate`` and p95 ≤ ``max_p95_ms``.
    3. A failing probe REVERTS the weights to 100 % old stack at once, records the evidence (probe statistics per
       stage: checkpoint ``revert``, an artifact JSON file, the step's failure message) and fails the step. Fix the
       new stack and re-run ``bpmigrate apply --step dns-cutover``: it continues from the stage it reached.

    The old infrastructure keeps running; its record stays (weight 0) until phase 6.

    Reversibility: compensable, with a time fence. Until ``bake_time_s`` (default 24 h) after 100 % was reached,
    ``bpmigrate rollback --phase cutover`` (or ``--step dns-cutover``) sends all traffic back to the old stack.
    After that the outputs' ``one_way_after`` has passed and rollback refuses unless ``--force-past-fence``
    (by then the old stack may hold stale data).
    """

    id = "dns-cutover"
    title = "Weighted Route53 cutover to the ALB with automatic revert"
    procedures = (
        (
            "DNS rollback to the old stack",
            "bpmigrate --env <env> rollback --phase cutover --yes",
            "or only DNS: `rollback --step dns-cutover`; refused after the bake time unless `--force-past-fence`",
        ),
    )
    phase = PHASE
    depends_on = ("pre-cutover-check", "db-rollback-point", "ingress", "data-switch")
    reversibility = Reversibility.COMPENSABLE
    timeout = None
    clock: ClassVar[Clock] = Clock()

    # -- helpers -----------------------------------------------------------------------------------------------------
    def r53(self, ctx: StepContext) -> Route53Adapter:
        return ctx.adapters.get("aws_route53")  # type: ignore[no-any-return]

    def zone(self, ctx: StepContext, cfg: CutoverSettings) -> str | None:
        return cfg.zone_id or self.r53(ctx).find_zone(cfg.record_name)

    def _records(self, ctx: StepContext, cfg: CutoverSettings, zone_id: str) -> list[RecordSet]:
        return self.r53(ctx).record_sets(zone_id, cfg.record_name, cfg.record_type)

    def _weighted(self, cfg: CutoverSettings, new_weight: int, ttl: int, old_target: str) -> list[RecordSet]:
        from migrate.adapters.aws_route53 import RecordSet

        old = RecordSet(cfg.record_name, cfg.record_type, ttl, (old_target,), cfg.old_set_id, 100 - new_weight)
        if cfg.new_alias_zone_id:
            new = RecordSet(
                cfg.record_name,
                cfg.record_type,
                None,
                (),
                cfg.new_set_id,
                new_weight,
                (cfg.new_alias_zone_id, str(cfg.new_target)),
            )
        else:
            new = RecordSet(cfg.record_name, cfg.record_type, ttl, (str(cfg.new_target),), cfg.new_set_id, new_weight)
        return [old, new]

    def _old_target(self, cfg: CutoverSettings, records: list[RecordSet]) -> str | None:
        if cfg.old_target:
            return cfg.old_target
        for rec in records:
            if (rec.set_id in (None, cfg.old_set_id)) and rec.values:
                return rec.values[0]
        return None

    def _shift(
        self,
        ctx: StepContext,
        cfg: CutoverSettings,
        zone_id: str,
        new_weight: int,
        old_target: str,
        deletes: list[RecordSet] | None = None,
        comment: str = "",
    ) -> dict[str, Any]:
        r53 = self.r53(ctx)
        change_id = r53.change(
            zone_id,
            upserts=self._weighted(cfg, new_weight, cfg.low_ttl, old_target),
            deletes=deletes or [],
            comment=comment or f"bpmigrate dns-cutover {new_weight}% new",
        )
        synced = r53.wait_insync(change_id, timeout_s=cfg.insync_timeout_s, poll_s=cfg.insync_poll_s)
        return {
            "change_id": change_id,
            "status": synced.status,
            "polls": synced.polls,
            "waited_s": round(synced.waited_s, 3),
        }

    def _probe_round(self, ctx: StepContext, cfg: CutoverSettings) -> tuple[bool, list[dict[str, Any]]]:
        http = ctx.adapters.http()
        results = []
        ok = True
        for url in cfg.probe_urls:
            try:
                stats = http.probe(
                    url, requests=cfg.probe_requests, concurrency=cfg.probe_concurrency, timeout=cfg.probe_timeout_s
                )
                entry = {"url": url, **stats_dict(stats)}
                bad = []
                if float(stats.error_rate) > cfg.max_error_rate:
                    bad.append(f"error rate {stats.error_rate:.3f} > {cfg.max_error_rate:g}")
                if float(stats.p95_ms) > cfg.max_p95_ms:
                    bad.append(f"p95 {stats.p95_ms:.1f} ms > {cfg.max_p95_ms:g} ms")
            except BpmError as exc:  # a probe that cannot run is a failing probe: never shift traffic blind
                entry = {"url": url, "error": str(exc).splitlines()[0]}
                bad = [f"probe error: {entry['error']}"]
            entry["ok"] = not bad
            if bad:
                entry["breach"] = "; ".join(bad)
                ok = False
            results.append(entry)
        return ok, results

    def soak(self, ctx: StepContext, cfg: CutoverSettings, weight: int) -> dict[str, Any]:
        """Probe until the soak time is over (at least one round); stop at the first breach."""
        start = self.clock.now()
        rounds: list[list[dict[str, Any]]] = []
        ok = True
        while True:
            round_ok, results = self._probe_round(ctx, cfg)
            rounds.append(results)
            ctx.log(
                f"dns-cutover {weight}%: probe round {len(rounds)}: "
                + ", ".join(f"{r['url']} {'ok' if r['ok'] else r.get('breach')}" for r in results)
            )
            if not round_ok:
                ok = False
                break
            remaining = start + cfg.soak_s - self.clock.now()
            if remaining <= 0:
                break
            self.clock.sleep(min(cfg.probe_interval_s, remaining))
        flat = [r for rnd in rounds for r in rnd]
        return {
            "ok": ok,
            "rounds": len(rounds),
            "soak_s": round(self.clock.now() - start, 3),
            "worst_error_rate": max((float(r.get("error_rate") or 0) for r in flat), default=0.0),
            "worst_p95_ms": max((float(r.get("p95_ms") or 0) for r in flat), default=0.0),
            "requests": sum(int(r.get("count") or 0) for r in flat),
            "last_round": rounds[-1] if rounds else [],
            "breach": next((r["breach"] for r in flat if r.get("breach")), None),
        }

    def stage_state(self, ctx: StepContext, weight: int) -> dict[str, Any] | None:
        return ctx.checkpoints.get(f"stage-{weight}")

    def _fence(self, ctx: StepContext, cfg: CutoverSettings) -> float | None:
        done = ctx.checkpoints.get("stage-100")
        if done and done.get("passed") and done.get("passed_at") is not None:
            return float(done["passed_at"]) + cfg.bake_time_s
        return None

    def skip_reason(self, ctx: StepContext) -> str | None:
        """Sandbox only: nothing to cut over to when no ALB exists (the ingress step was skipped, no new_target)."""
        if ctx.is_sandbox and not CutoverSettings(ctx).new_target:
            return (
                "no new stack to cut over to: the ingress step recorded no alb_hostname (no cluster in this sandbox) "
                "and [steps.dns-cutover] new_target is unset"
            )
        return None

    # -- the contract --------------------------------------------------------------------------------------------------
    def plan(self, ctx: StepContext) -> PlanResult:
        cfg = CutoverSettings(ctx)
        result = PlanResult(findings=cfg.problems())
        http = ctx.adapters.http()
        for url in cfg.probe_urls:
            try:
                http.check_target(url)
            except BpmError as exc:
                result.findings.append(Finding("block", f"probe URL not allowed: {url}", exc.next_cmd))
        zone_id = self.zone(ctx, cfg)
        result.data.update(
            {
                "record": cfg.record_name,
                "stages": cfg.stages,
                "new_target": cfg.new_target,
                "low_ttl": cfg.low_ttl,
                "soak_s": cfg.soak_s,
            }
        )
        if zone_id is None:
            if cfg.create_zone:
                result.changes.append(Change("create", f"HostedZone/{cfg.zone_name}", "sandbox: no zone yet"))
            else:
                result.findings.append(
                    Finding(
                        "block",
                        f"no Route53 hosted zone contains {cfg.record_name}",
                        "create the zone (foundation phase) or set [steps.dns-cutover] hosted_zone_id",
                    )
                )
            result.unknown.append("current TTL and weights (no zone yet)")
            records: list[RecordSet] = []
        else:
            records = self._records(ctx, cfg, zone_id)
        old_target = self._old_target(cfg, records)
        if old_target is None and zone_id is not None:
            result.findings.append(
                Finding(
                    "block",
                    f"no current record {cfg.record_name} and no old_target setting",
                    'set [steps.dns-cutover] old_target = "<compose host>"',
                )
            )
        weights = {r.set_id: r.weight for r in records if r.set_id}
        old_ttl = max((r.ttl or 0 for r in records), default=0)
        ttl_cp = ctx.checkpoints.get("ttl")
        if ttl_cp and ttl_cp.get("waited"):
            result.in_place.append(f"TTL lowered to {cfg.low_ttl}s and old TTL waited out")
        else:
            wait = old_ttl if not ttl_cp else ttl_cp.get("old_ttl", old_ttl)
            result.changes.append(
                Change("update", f"{cfg.record_name} TTL", f"{old_ttl}s -> {cfg.low_ttl}s, then wait {wait}s")
            )
        for weight in cfg.stages:
            state = self.stage_state(ctx, weight)
            if state and state.get("passed"):
                result.in_place.append(f"stage {weight}% reached and soaked")
            else:
                result.changes.append(
                    Change(
                        "update",
                        f"{cfg.record_name} weights",
                        f"{cfg.new_set_id}={weight} {cfg.old_set_id}={100 - weight}; soak {cfg.soak_s:g}s",
                    )
                )
        result.data["current_weights"] = weights
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        cfg = CutoverSettings(ctx)
        blocking = [f for f in cfg.problems() if f.level == "block"]
        if blocking:
            raise ConfigError(f"dns-cutover cannot start: {blocking[0].message}", "", blocking[0].fix)
        r53 = self.r53(ctx)
        zone_id = self.zone(ctx, cfg)
        if zone_id is None:
            if not cfg.create_zone:
                raise StepFailed(
                    f"no Route53 hosted zone contains {cfg.record_name}",
                    "the zone must exist before the cutover",
                    "create it in the foundation phase, or set [steps.dns-cutover] hosted_zone_id",
                )
            ctx.intent("route53-create-zone", zone=cfg.zone_name)
            zone_id = r53.create_zone(cfg.zone_name, caller_reference=f"bpmigrate-{ctx.env_name}-{cfg.zone_name}")
        records = self._records(ctx, cfg, zone_id)

        # 1. lower the TTL, wait out the old one (checkpointed before and after: resumable without waiting twice)
        ttl_cp = ctx.checkpoints.get("ttl")
        if ttl_cp is None:
            old_target = self._old_target(cfg, records)
            if old_target is None:
                raise StepFailed(
                    f"no current record {cfg.record_name} and no old_target setting",
                    "the cutover needs to know where traffic goes today",
                    'set [steps.dns-cutover] old_target = "<compose host>"',
                )
            old_ttl = max((r.ttl or 0 for r in records), default=0)
            ttl_cp = {
                "old_ttl": old_ttl,
                "low_ttl": cfg.low_ttl,
                "old_target": old_target,
                "zone_id": zone_id,
                "lowered_at": None,
                "waited": False,
            }
            ctx.checkpoints.put("ttl", ttl_cp)
        old_target = str(ttl_cp["old_target"])
        if ttl_cp.get("lowered_at") is None:
            simple = [r for r in self._records(ctx, cfg, zone_id) if not r.is_weighted]
            weights = r53.weights(zone_id, cfg.record_name, cfg.record_type)
            current_new = int(weights.get(cfg.new_set_id, 0))
            ctx.intent(
                "route53-lower-ttl",
                zone_id=zone_id,
                record=cfg.record_name,
                old_ttl=ttl_cp["old_ttl"],
                new_ttl=cfg.low_ttl,
                convert_simple=bool(simple),
            )
            sync = self._shift(
                ctx,
                cfg,
                zone_id,
                current_new,
                old_target,
                deletes=simple,
                comment=f"bpmigrate dns-cutover: TTL {ttl_cp['old_ttl']} -> {cfg.low_ttl}",
            )
            ttl_cp = {**ttl_cp, "lowered_at": self.clock.now(), "change": sync}
            ctx.checkpoints.put("ttl", ttl_cp)
        if not ttl_cp.get("waited"):
            remaining = float(ttl_cp["lowered_at"]) + float(ttl_cp["old_ttl"]) - self.clock.now()
            if remaining > 0:
                ctx.log(f"dns-cutover: waiting {remaining:.0f}s for the old TTL ({ttl_cp['old_ttl']}s) to expire")
                self.clock.sleep(remaining)
            ttl_cp = {**ttl_cp, "waited": True, "waited_until": self.clock.now()}
            ctx.checkpoints.put("ttl", ttl_cp)

        # 2. shift the weights stage by stage; each stage soaks under probes; a breach reverts
        evidence: dict[str, Any] = {}
        for weight in cfg.stages:
            state = self.stage_state(ctx, weight)
            if state and state.get("passed"):
                evidence[str(weight)] = state
                continue
            ctx.intent(
                "route53-shift-weight",
                zone_id=zone_id,
                record=cfg.record_name,
                weights={cfg.new_set_id: weight, cfg.old_set_id: 100 - weight},
            )
            sync = self._shift(ctx, cfg, zone_id, weight, old_target)
            applied_at = self.clock.now()
            ctx.checkpoints.put(
                f"stage-{weight}", {"weight": weight, "applied_at": applied_at, "passed": False, "change": sync}
            )
            probes = self.soak(ctx, cfg, weight)
            state = {
                "weight": weight,
                "applied_at": applied_at,
                "change": sync,
                "probes": probes,
                "passed": probes["ok"],
            }
            if not probes["ok"]:
                self._revert(ctx, cfg, zone_id, old_target, weight, state, evidence)
            state["passed_at"] = self.clock.now()
            ctx.checkpoints.put(f"stage-{weight}", state)
            evidence[str(weight)] = state
            ctx.log(
                f"dns-cutover: stage {weight}% held for {probes['soak_s']:g}s; worst p95 "
                f"{probes['worst_p95_ms']:.1f} ms, worst error rate {probes['worst_error_rate']:.3f}"
            )

        completed_at = float(evidence[str(cfg.stages[-1])]["passed_at"])
        return {
            "zone_id": zone_id,
            "record": cfg.record_name,
            "record_type": cfg.record_type,
            "old_target": old_target,
            "new_target": cfg.new_target,
            "old_set_id": cfg.old_set_id,
            "new_set_id": cfg.new_set_id,
            "old_ttl": ttl_cp["old_ttl"],
            "low_ttl": cfg.low_ttl,
            "stages": evidence,
            "completed_at": iso(completed_at),
            "bake_time_s": cfg.bake_time_s,
            "one_way_after": iso(completed_at + cfg.bake_time_s),
        }

    def _revert(
        self,
        ctx: StepContext,
        cfg: CutoverSettings,
        zone_id: str,
        old_target: str,
        weight: int,
        state: dict[str, Any],
        evidence: dict[str, Any],
    ) -> None:
        ctx.intent(
            "route53-revert",
            zone_id=zone_id,
            record=cfg.record_name,
            failed_stage=weight,
            weights={cfg.new_set_id: 0, cfg.old_set_id: 100},
        )
        revert_sync = self._shift(
            ctx, cfg, zone_id, 0, old_target, comment=f"bpmigrate dns-cutover: REVERT at {weight}%"
        )
        state["reverted"] = revert_sync
        ctx.checkpoints.put(f"stage-{weight}", state)
        record = {"failed_stage": weight, "at": iso(self.clock.now()), "stages": {**evidence, str(weight): state}}
        ctx.checkpoints.put("revert", record)
        path = ctx.artifacts_dir() / f"cutover-revert-{int(self.clock.now())}.json"
        sha, size = ctx.adapters.get("archive").write_text(
            path, json.dumps(record, indent=2, sort_keys=True, default=str)
        )
        ctx.artifact("cutover-evidence", path, sha, size)
        probes = state["probes"]
        raise StepFailed(
            f"dns-cutover: probes failed at stage {weight}% — traffic REVERTED to the old stack (100 % {cfg.old_set_id})",
            f"{probes['breach']}; rounds={probes['rounds']}, worst p95={probes['worst_p95_ms']:.1f} ms, worst error "
            f"rate={probes['worst_error_rate']:.3f}; evidence: {path}",
            f"fix the new stack, then `bpmigrate apply --step dns-cutover --env {ctx.env_name}` (resumes at stage {weight}%)",
        )

    def verify(self, ctx: StepContext) -> list[Check]:
        cfg = CutoverSettings(ctx)
        zone_id = self.zone(ctx, cfg)
        if zone_id is None:
            return [Check("hosted zone exists", False, None, cfg.zone_name)]
        records = {r.set_id: r for r in self._records(ctx, cfg, zone_id)}
        new = records.get(cfg.new_set_id)
        old = records.get(cfg.old_set_id)
        checks = [
            Check(
                f"{cfg.new_set_id} weight",
                new is not None and new.weight == 100,
                None if new is None else new.weight,
                100,
            ),
            Check(
                f"{cfg.old_set_id} record kept (old stack still reachable by rollback)",
                old is not None,
                None if old is None else f"weight {old.weight}",
                "present, weight 0",
            ),
            Check(
                f"{cfg.old_set_id} weight", old is not None and old.weight == 0, None if old is None else old.weight, 0
            ),
        ]
        if new is not None and new.alias is None:
            checks.append(Check("TTL lowered", new.ttl == cfg.low_ttl, new.ttl, cfg.low_ttl))
        ok, results = self._probe_round(ctx, cfg)
        checks.append(
            Check(
                "new stack probes within SLO",
                ok,
                results,
                f"error rate <= {cfg.max_error_rate}, p95 <= {cfg.max_p95_ms} ms",
            )
        )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Send all traffic back to the old stack (weights old=100, new=0). Refused after the bake-time fence."""
        cfg = CutoverSettings(ctx)
        fence = self._fence(ctx, cfg)
        force = bool(getattr(ctx, "force_past_fence", False) or ctx.setting("force_past_fence", False))
        if fence is not None and self.clock.now() >= fence and not force:
            raise FenceRefused(
                f"dns-cutover passed its one-way fence at {iso(fence)} (bake time {cfg.bake_time_s:g}s after 100 %)",
                "after the bake time the old stack may hold stale data or be decommissioned; rolling DNS back could lose writes",
                f"bpmigrate rollback --step dns-cutover --env {ctx.env_name} --force-past-fence",
            )
        zone_id = self.zone(ctx, cfg)
        if zone_id is None:
            return
        records = {r.set_id: r for r in self._records(ctx, cfg, zone_id)}
        old = records.get(cfg.old_set_id)
        if old is None or not old.values:
            ctx.log("dns-cutover rollback: no weighted records found; nothing to undo")
            return
        new = records.get(cfg.new_set_id)
        if old.weight == 100 and (new is None or not new.weight):
            ctx.log("dns-cutover rollback: all traffic already on the old stack")
            self._clear_stages(ctx, cfg)
            return
        ctx.intent(
            "route53-rollback",
            zone_id=zone_id,
            record=cfg.record_name,
            weights={cfg.new_set_id: 0, cfg.old_set_id: 100},
        )
        sync = self._shift(ctx, cfg, zone_id, 0, old.values[0], comment="bpmigrate dns-cutover: ROLLBACK to old stack")
        ctx.log(
            f"dns-cutover rollback: 100 % to {cfg.old_set_id} ({old.values[0]}), change {sync['change_id']} {sync['status']}"
        )
        self._clear_stages(ctx, cfg)

    def _clear_stages(self, ctx: StepContext, cfg: CutoverSettings) -> None:
        ttl = ctx.checkpoints.get("ttl")
        ctx.checkpoints.clear()
        if ttl is not None:
            ctx.checkpoints.put("ttl", ttl)


# -- post-cutover-watch ----------------------------------------------------------------------------------------------
class PostCutoverWatch(Step):
    """Post-cutover watch: probe the new stack for ``window_s`` seconds (default 1 h) after 100 %; results recorded.

    Rounds of probes (``probe_urls``, default those of dns-cutover) every ``interval_s``; outputs give per-URL
    totals, error rate, p95/p99 and availability (share of successful requests). ``perf-review`` reads them.
    The step fails when availability < ``min_availability`` (default 0.999) or p95 > ``max_p95_ms``: then consider
    ``bpmigrate rollback --phase cutover`` while dns-cutover is inside its bake time.

    Read-only: rollback is a no-op.
    """

    id = "post-cutover-watch"
    title = "Post-cutover watch (probes for a window)"
    phase = PHASE
    depends_on = ("dns-cutover",)
    reversibility = Reversibility.REVERSIBLE
    clock: ClassVar[Clock] = Clock()

    def skip_reason(self, ctx: StepContext) -> str | None:
        if "dns-cutover" not in ctx.upstream and not ctx.setting("probe_urls"):
            return "dns-cutover has not moved traffic in this environment: nothing to watch"
        return None

    def _urls(self, ctx: StepContext) -> list[str]:
        urls = ctx.setting("probe_urls")
        if urls:
            return [str(u) for u in urls]
        return [
            str(u)
            for u in step_settings(ctx, "dns-cutover").get("probe_urls", [f"https://api.{ctx.env.domain}/health"])
        ]

    def plan(self, ctx: StepContext) -> PlanResult:
        window = float(ctx.setting("window_s", 3600))
        return PlanResult(changes=[Change("run", "watch", f"probe {', '.join(self._urls(ctx))} for {window:g}s")])

    def apply(self, ctx: StepContext) -> Outputs:
        http = ctx.adapters.http()
        window = float(ctx.setting("window_s", 3600))
        interval = float(ctx.setting("interval_s", 30))
        requests = int(ctx.setting("probe_requests", 20))
        start = self.clock.now()
        totals: dict[str, dict[str, Any]] = {}
        rounds = 0
        while True:
            rounds += 1
            for url in self._urls(ctx):
                stats = http.probe(
                    url,
                    requests=requests,
                    concurrency=int(ctx.setting("probe_concurrency", 4)),
                    timeout=float(ctx.setting("probe_timeout_s", 5)),
                )
                t = totals.setdefault(url, {"count": 0, "errors": 0, "p95_ms": 0.0, "p99_ms": 0.0, "rounds": 0})
                t["count"] += int(stats.count)
                t["errors"] += int(stats.errors)
                t["p95_ms"] = max(float(t["p95_ms"]), float(stats.p95_ms))
                t["p99_ms"] = max(float(t["p99_ms"]), float(stats.p99_ms))
                t["rounds"] += 1
            remaining = start + window - self.clock.now()
            if remaining <= 0:
                break
            self.clock.sleep(min(interval, remaining))
        count = sum(int(t["count"]) for t in totals.values())
        errors = sum(int(t["errors"]) for t in totals.values())
        for t in totals.values():
            t["error_rate"] = round(t["errors"] / t["count"], 5) if t["count"] else 0.0
        availability = round(1 - errors / count, 6) if count else 0.0
        worst_p95 = max((float(t["p95_ms"]) for t in totals.values()), default=0.0)
        out: dict[str, Any] = {
            "started_at": iso(start),
            "finished_at": iso(self.clock.now()),
            "window_s": window,
            "rounds": rounds,
            "requests": count,
            "errors": errors,
            "availability": availability,
            "p95_ms": worst_p95,
            "per_url": totals,
        }
        ctx.checkpoints.put("result", out)
        min_avail = float(ctx.setting("min_availability", 0.999))
        max_p95 = float(ctx.setting("max_p95_ms", 200))
        if availability < min_avail or worst_p95 > max_p95:
            raise VerifyFailed(
                f"post-cutover watch: availability {availability:.4%} (min {min_avail:.3%}), p95 {out['p95_ms']:.1f} ms (max {max_p95:g})",
                json.dumps(totals, default=str),
                f"investigate the new stack; while inside the bake time: `bpmigrate rollback --phase cutover --env {ctx.env_name}`",
            )
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        result = ctx.checkpoints.get("result") or ctx.upstream.get(self.id) or {}
        min_avail = float(ctx.setting("min_availability", 0.999))
        avail = result.get("availability")
        return [
            Check(
                "availability during the watch window",
                avail is not None and float(avail) >= min_avail,
                avail,
                f">= {min_avail}",
            )
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Nothing to undo: the watch only reads."""


# -- db-rollback-point ----------------------------------------------------------------------------------------------
class DbRollbackPoint(Step):
    """Database rollback point: records what the guide's DB rollback procedure needs, and implements it as rollback.

    Apply records the backup to restore (the ``pg-backup`` step's artifact: path + sha256) and the replica count of
    every Deployment in the app namespaces. Nothing is changed.

    Rollback = the guide's DB rollback procedure, ledgered: (1) scale every recorded Deployment to 0, (2) verify the
    backup's sha256, drop the target's user schemas (setting ``schemas``; default: every schema holding user tables)
    and restore the backup into it (``pg_restore``), (3) scale
    every Deployment back to its recorded replicas. Each stage is checkpointed (a killed rollback resumes). Writes made
    on the new stack since the backup are LOST, so it only runs when asked explicitly with ``--force-past-fence``:
    ``bpmigrate --env <env> rollback --to pre-cutover-check --force-past-fence`` unwinds the watch, DNS (traffic back to
    the old stack) and then the database, in that order. Any rollback without the flag (e.g. the DNS rollback
    ``--phase cutover``) leaves the database untouched and says so in the log; to restore it afterwards, re-apply
    from ``pre-cutover-check`` and run the forced rollback.
    """

    id = "db-rollback-point"
    title = "DB rollback point (the DB rollback procedure is its rollback)"
    procedures = (
        (
            "DB rollback",
            "bpmigrate --env <env> rollback --to pre-cutover-check --force-past-fence --yes",
            "DNS back first, then: scale deployments to 0, restore the recorded pg-backup into the target, scale back; "
            "writes since the backup are lost",
        ),
    )
    phase = PHASE
    depends_on = ("pg-backup", "pre-cutover-check")
    reversibility = Reversibility.COMPENSABLE

    def _backup(self, ctx: StepContext) -> tuple[str | None, str | None]:
        out = ctx.upstream.get("pg-backup", {})
        path = ctx.setting("backup_path") or out.get("path") or out.get("backup_path") or out.get("archive")
        sha = ctx.setting("backup_sha256") or out.get("sha256") or out.get("backup_sha256")
        return (str(path) if path else None, str(sha) if sha else None)

    def plan(self, ctx: StepContext) -> PlanResult:
        path, _sha = self._backup(ctx)
        result = PlanResult(changes=[Change("run", "record DB rollback point", f"backup {path}")])
        if not path:
            result.findings.append(
                Finding(
                    "warn",
                    "no backup recorded by pg-backup: the DB rollback would have nothing to restore",
                    "apply pg-backup, or set [steps.db-rollback-point] backup_path/backup_sha256",
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        path, sha = self._backup(ctx)
        replicas: dict[str, int] = {}
        if not kube_unreachable(ctx):
            kube = ctx.adapters.kube()
            for ns in app_namespaces(ctx):
                for dep in kube.list("apps/v1", "Deployment", ns):
                    replicas[f"{ns}/{dep['metadata']['name']}"] = int(dep.get("spec", {}).get("replicas", 1) or 0)
        ctx.checkpoints.put("point", {"backup_path": path, "backup_sha256": sha, "replicas": replicas})
        return {"backup_path": path, "backup_sha256": sha, "replicas": replicas}

    def verify(self, ctx: StepContext) -> list[Check]:
        point = ctx.checkpoints.get("point") or {}
        path = point.get("backup_path")
        checks = [Check("rollback point recorded", bool(point), bool(point), True)]
        if path:
            exists = Path(path).is_file()
            checks.append(Check("backup file present", exists, path, "a readable file"))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """The guide's DB rollback, only with --force-past-fence: scale to 0, restore the backup, scale back.

        Without --force-past-fence the database is left untouched (writes since the backup would be lost) and the log
        says how to run it.
        """
        point = ctx.checkpoints.get("point")
        force = bool(getattr(ctx, "force_past_fence", False) or ctx.setting("force_past_fence", False))
        if point is None:
            return
        if not force:
            ctx.log(
                "db-rollback-point: database NOT restored (writes since the backup would be lost); to run the DB "
                f"rollback: bpmigrate --env {ctx.env_name} rollback --to pre-cutover-check --force-past-fence"
            )
            return
        path, sha = point.get("backup_path"), point.get("backup_sha256")
        if not path or not Path(path).is_file():
            raise StepFailed(
                "DB rollback: the recorded backup file is missing",
                f"expected {path}",
                "restore the backup file to that path (or set backup_path) and re-run the rollback",
            )
        if sha:
            actual, _size = ctx.adapters.get("archive").sha256(Path(path))
            if actual != sha:
                raise StepFailed(
                    "DB rollback: the backup's checksum does not match the recorded one",
                    f"recorded {sha}, file {actual}",
                    "find the intact backup; do NOT restore this file",
                )
        replicas: dict[str, int] = point.get("replicas", {})
        kube = None if kube_unreachable(ctx) else ctx.adapters.kube()
        done = ctx.checkpoints.get("db-rollback") or {}
        if kube is not None and not done.get("scaled_down"):
            for key in replicas:
                ns, name = key.split("/", 1)
                ctx.intent("scale", deployment=key, replicas=0)
                kube.scale("Deployment", name, ns, 0)
            ctx.checkpoints.put("db-rollback", {**done, "scaled_down": True})
            done = {**done, "scaled_down": True}
        if not done.get("restored"):
            from migrate.adapters.postgres import qident
            from phases.p2_data import pg

            target = pg(ctx, "target")  # the RDS address from the rds step when migrate.toml says from-terraform
            configured = ctx.setting("schemas")
            schemas = (
                [str(x) for x in configured]
                if configured
                else sorted({t.schema for t in target.tables()} | {"public"})  # every user schema (not _bpmigrate)
            )
            ctx.intent("pg-restore", backup=path, target=target.endpoint, reset_schemas=schemas)
            for schema in schemas:  # pg_restore cannot overwrite: the schemas are dropped; the dump recreates them
                target.execute(f"DROP SCHEMA IF EXISTS {qident(schema)} CASCADE")
                if schema == "public":  # pg_dump does not emit CREATE SCHEMA public
                    target.execute("CREATE SCHEMA public")
            target.restore(Path(path), single_transaction=True, client=ctx.adapters.postgres("source"))
            done = {**done, "restored": True}
            ctx.checkpoints.put("db-rollback", done)
        if kube is not None:
            for key, count in replicas.items():
                ns, name = key.split("/", 1)
                ctx.intent("scale", deployment=key, replicas=count)
                kube.scale("Deployment", name, ns, count)
        ctx.log(f"db-rollback-point: restored {path} into the target; {len(replicas)} deployment(s) scaled back")


# the lag-gated data switch (near-zero-downtime path) lives with the sync machinery in phases/_sync.py
__steps__ = [DataSwitch]
