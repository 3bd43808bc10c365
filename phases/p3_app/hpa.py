"""Step ``hpa``: HorizontalPodAutoscalers (autoscaling/v2, CPU 70 %, 2..10 replicas) that read metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.step import Check, Outputs, PlanResult, Reversibility, StepContext

from .._kube_step import ManifestStep, ref, user_manifests, verify_manifests
from ._common import HPA_FILE, AppStep, ManifestsDirSettings, base_values, render


class Hpa(AppStep, ManifestStep):
    """HorizontalPodAutoscalers (autoscaling/v2, CPU 70 %, 2..10 replicas) that read metrics.

    Applies templates/k8s/app/30-hpa.yaml (or the HorizontalPodAutoscalers of `manifests_dir`); verify requires every
    HPA to report `status.currentMetrics` (i.e. metrics-server answers), polling up to `metrics_wait_s` seconds.
    Rollback restores what was there before (deletes the HPAs it created).
    """

    id = "hpa"
    depends_on = ("k8s-deploy",)
    reversibility = Reversibility.REVERSIBLE

    class Settings(ManifestsDirSettings):
        metrics_wait_s: float = Field(60, ge=0, description="verify polls this long for HPA metrics")

    def manifests(self, ctx: StepContext) -> list[dict[str, Any]]:
        directory = ctx.typed(self.Settings).manifests_dir
        if directory:
            return [d for d in user_manifests(ctx, directory) if d.get("kind") == "HorizontalPodAutoscaler"]
        return render(ctx, (HPA_FILE,), base_values(ctx))

    def plan(self, ctx: StepContext) -> PlanResult:
        result = super().plan(ctx)
        result.unknown.append("whether metrics-server reports CPU metrics (checked by verify)")
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        out = super().apply(ctx)
        return {**out, "hpas": out["applied"]}

    def verify(self, ctx: StepContext) -> list[Check]:
        kube = ctx.adapters.kube()
        docs = self.manifests(ctx)
        deadline = time.monotonic() + ctx.typed(self.Settings).metrics_wait_s
        while True:
            checks = verify_manifests(ctx, docs)
            for doc in docs:
                meta = doc["metadata"]
                live = kube.get(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace")) or {}
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

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return f"{len(outputs.get('hpas') or [])} HorizontalPodAutoscaler(s)"
