"""Helpers shared by the phase-5 steps (no step lives here)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from migrate.errors import BpmError, ConfigError, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Step, StepContext

PHASE = 5


APP_SERVICES = ("frontend", "api-gateway", "intent-classifier", "technique-selector", "prompt-generator", "torchserve")


K8S_TEMPLATES = "k8s"


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


DEFAULT_HPA = {"min": 2, "max": 10, "cpu": 70}


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

    from .._security import check_manifests

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
