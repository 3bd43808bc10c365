"""Step ``hpa``: HorizontalPodAutoscalers (autoscaling/v2, CPU 70 %, 2..10 replicas) that read metrics."""

from __future__ import annotations

import time
from typing import Any

from migrate.step import Check, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import AWS_RETRY, HPA_FILE, PHASE, base_values, kube_unreachable, plan_docs, ref, render


class Hpa(Step):
    """HorizontalPodAutoscalers (autoscaling/v2, CPU 70 %, 2..10 replicas) that read metrics.

    Applies templates/k8s/app/30-hpa.yaml; verify requires every HPA to report `status.currentMetrics` (i.e.
    metrics-server answers), polling up to `metrics_wait_s` seconds. Rollback deletes the HPAs.
    """

    id = "hpa"
    retry = AWS_RETRY
    phase = PHASE
    depends_on = ("k8s-deploy",)
    reversibility = Reversibility.REVERSIBLE

    def skip_reason(self, ctx: StepContext) -> str | None:
        return kube_unreachable(ctx)

    def docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        return render(ctx, (HPA_FILE,), base_values(ctx))

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        result = PlanResult(unknown=["whether metrics-server reports CPU metrics (checked by verify)"])
        plan_docs(ctx.adapters.kube(), self.docs(ctx), result)
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        docs = self.docs(ctx)
        ctx.intent("kube-apply", refs=[ref(d) for d in docs])
        return {"hpas": ctx.adapters.kube().apply(docs)}

    def verify(self, ctx: StepContext) -> list[Check]:
        kube = ctx.adapters.kube()
        deadline = time.monotonic() + float(ctx.setting("metrics_wait_s", 60))
        while True:
            checks: list[Check] = []
            for doc in self.docs(ctx):
                meta = doc["metadata"]
                live = kube.get("autoscaling/v2", "HorizontalPodAutoscaler", meta["name"], meta["namespace"])
                if live is None:
                    checks.append(Check(ref(doc), False, "missing", "exists"))
                    continue
                spec = live.get("spec") or {}
                bounds = (spec.get("minReplicas"), spec.get("maxReplicas"))
                want = (doc["spec"]["minReplicas"], doc["spec"]["maxReplicas"])
                checks.append(Check(f"{ref(doc)} replicas", bounds == want, bounds, want))
                metrics = (live.get("status") or {}).get("currentMetrics") or []
                cpu = [
                    m.get("resource", {}).get("current", {}).get("averageUtilization")
                    for m in metrics
                    if m.get("type") == "Resource"
                ]
                checks.append(
                    Check(
                        f"{ref(doc)} reads metrics",
                        bool(metrics),
                        f"cpu {cpu[0]} %" if cpu and cpu[0] is not None else ("none" if not metrics else "present"),
                        "status.currentMetrics present",
                        "" if metrics else "no metrics yet: is metrics-server installed and answering?",
                    )
                )
            if all(c.ok for c in checks) or time.monotonic() >= deadline:
                return checks
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    def rollback(self, ctx: StepContext) -> None:
        kube = ctx.adapters.kube()
        for doc in self.docs(ctx):
            ctx.intent("kube-delete", ref=ref(doc))
            kube.delete(
                "autoscaling/v2", "HorizontalPodAutoscaler", doc["metadata"]["name"], doc["metadata"]["namespace"]
            )
