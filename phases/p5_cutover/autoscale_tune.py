"""Step ``autoscale-tune``: Autoscaling: HPA thresholds from settings, VPA objects in recommendation mode (updateMode "Off")."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from migrate.step import Outputs, Reversibility, StepContext

from ._common import APP_SERVICES, DEFAULT_HPA, PHASE, KubeTemplateStep, kube_unreachable, ref


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
