"""Step ``autoscale-tune``: Autoscaling: HPA thresholds from settings, VPA objects in recommendation mode (updateMode "Off")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from migrate.step import Reversibility, StepContext, StepSettings

from .._kube_step import ManifestStep, render_templates, user_manifests

APP_SERVICES = ("frontend", "api-gateway", "intent-classifier", "technique-selector", "prompt-generator", "torchserve")
TEMPLATES = ("k8s/app/30-hpa.yaml", "k8s/cutover/vpa.yaml")  # the app's HPAs (step hpa), re-tuned


class HpaBounds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min: int | None = Field(None, ge=1, description="minReplicas")
    max: int | None = Field(None, ge=1, description="maxReplicas")
    cpu: int | None = Field(None, ge=1, le=100, description="target average CPU utilization, %")


DEFAULT_HPA = HpaBounds(min=2, max=10, cpu=70)


class AutoscaleTune(ManifestStep):
    """Autoscaling: HPA thresholds from settings, VPA objects in recommendation mode (updateMode "Off").

    ``plan`` shows the diff of each HorizontalPodAutoscaler against the live object (min/max replicas, CPU
    target). VPAs only recommend (``kubectl describe vpa -n <ns>``); they never evict pods.

    Settings: ``hpa = { <service> = { min = 2, max = 10, cpu = 70 } }`` per service (``default`` for all; defaults
    2/10/70 %), ``services`` (default: the BetterPrompts services), ``vpa = false`` when the cluster has no VPA
    installed (the plan blocks naming the missing API otherwise), ``manifests_dir`` for the team's own HPAs/VPAs.

    Rollback: restores the HPA specs recorded before the change, deletes the VPAs (and HPAs) it created.
    """

    id = "autoscale-tune"
    title = "HPA thresholds and VPA recommendations"
    reversibility = Reversibility.REVERSIBLE
    phase = 5
    depends_on = ("hpa",)

    class Settings(StepSettings):
        hpa: dict[str, HpaBounds] = Field(default_factory=dict, description="per service (or default): min/max/cpu")
        services: list[str] = Field(list(APP_SERVICES), description="services whose autoscalers are tuned")
        vpa: bool = Field(True, description="create VPAs in recommendation mode (needs the VPA CRD)")
        namespace: str | None = Field(None, description="the app namespace (default: the environment's)")
        manifests_dir: str | None = Field(None, description="tune these HPA/VPA manifests instead of the bundled")

    def bounds(self, s: Settings, target: str) -> dict[str, int]:
        merged: dict[str, int] = {}
        for layer in (DEFAULT_HPA, s.hpa.get("default"), s.hpa.get(target)):
            merged.update({k: v for k, v in (layer.model_dump() if layer else {}).items() if v is not None})
        return merged

    def docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        s = ctx.typed(self.Settings)
        if s.manifests_dir:
            rendered = user_manifests(ctx, s.manifests_dir)
        else:
            values = {"namespace": s.namespace or ctx.env.kube.namespace}
            rendered = [doc for name in TEMPLATES for doc in render_templates(ctx, name, values)]
        out = []
        for doc in rendered:
            spec = doc.get("spec") or {}
            target = (spec.get("scaleTargetRef") or spec.get("targetRef") or {}).get("name")
            if target not in s.services or (doc["kind"] == "VerticalPodAutoscaler" and not s.vpa):
                continue
            if doc["kind"] == "HorizontalPodAutoscaler":
                wanted = self.bounds(s, str(target))
                spec["minReplicas"], spec["maxReplicas"] = wanted["min"], wanted["max"]
                target_cpu = {"type": "Utilization", "averageUtilization": wanted["cpu"]}
                spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": target_cpu}}]
            out.append(doc)
        return out

    def manifests(self, ctx: StepContext) -> list[dict[str, Any]]:
        return self.docs(ctx)

    def summary(self, outputs: Mapping[str, Any]) -> str:
        applied = outputs.get("applied") or []
        hpas = sum(1 for r in applied if str(r).startswith("HorizontalPodAutoscaler/"))
        return f"{hpas} HPA(s) tuned · {len(applied) - hpas} VPA(s) recommending"
