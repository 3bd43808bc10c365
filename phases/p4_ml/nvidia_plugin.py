"""Step ``nvidia-plugin``: NVIDIA device plugin DaemonSet (templates/k8s/ml/nvidia-device-plugin.yaml) on the GPU nodes."""

from __future__ import annotations

import time
from typing import Any

from migrate.errors import StepFailed
from migrate.step import Check, Outputs, PlanResult, Reversibility, StepContext

from ._common import DEFAULT_PLUGIN_IMAGE, GPU_RESOURCE, _digest, _gpu_nodes, _kube, _Ml, _plan_docs, _ref


class NvidiaPlugin(_Ml):
    """NVIDIA device plugin DaemonSet (templates/k8s/ml/nvidia-device-plugin.yaml) on the GPU nodes.

    Server-side apply, wait for the DaemonSet rollout, then wait until every GPU node advertises allocatable
    nvidia.com/gpu. Rollback deletes the DaemonSet unless it existed before this step first applied it.
    """

    id = "nvidia-plugin"
    depends_on = ("gpu-nodes",)
    reversibility = Reversibility.COMPENSABLE
    torchserve_only = True
    timeout = 900.0

    def _docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        from migrate.adapters.manifests import render

        path = ctx.templates_dir / str(ctx.setting("template", "k8s/ml/nvidia-device-plugin.yaml"))
        return render(path, {"nvidia_plugin_image": ctx.setting("image", DEFAULT_PLUGIN_IMAGE)})

    def _daemonset(self, ctx: StepContext) -> dict[str, Any]:
        return next(d for d in self._docs(ctx) if d["kind"] == "DaemonSet")

    def plan(self, ctx: StepContext) -> PlanResult:
        if skipped := self._skip_plan(ctx):
            return skipped
        docs = self._docs(ctx)
        result = PlanResult(data={"manifests": _digest(docs)})
        _plan_docs(ctx, docs, result)
        nodes = _gpu_nodes(ctx)
        result.in_place.append(f"{len(nodes)} GPU node(s); allocatable GPUs now: {sum(nodes.values())}")
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        kube = _kube(ctx)
        docs = self._docs(ctx)
        ds = self._daemonset(ctx)
        name, namespace = ds["metadata"]["name"], ds["metadata"].get("namespace", "kube-system")
        if ctx.checkpoints.get("pre_existing") is None:
            live = kube.get("apps/v1", "DaemonSet", name, namespace)
            managed = ((live or {}).get("metadata") or {}).get("labels", {}).get("app.kubernetes.io/managed-by")
            ctx.checkpoints.put("pre_existing", {"value": live is not None and managed != "bpmigrate"})
        ctx.intent("kube-apply", objects=[_ref(d) for d in docs])
        refs = kube.apply(docs)
        kube.wait_rollout("DaemonSet", name, namespace, float(ctx.setting("rollout_timeout", 300)))
        gpus = self._wait_allocatable(ctx, float(ctx.setting("allocatable_timeout", 120)))
        pre = bool((ctx.checkpoints.get("pre_existing") or {}).get("value"))
        return {
            "applied": refs,
            "daemonset": f"{namespace}/{name}",
            "pre_existing": pre,
            "gpus": gpus,
            "total_gpus": sum(gpus.values()),
        }

    def _wait_allocatable(self, ctx: StepContext, timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            gpus = _gpu_nodes(ctx)
            missing = sorted(n for n, c in gpus.items() if c < 1)
            if gpus and not missing:
                return gpus
            if time.monotonic() >= deadline:
                raise StepFailed(
                    f"the device plugin runs but GPU node(s) {', '.join(missing) or '(none)'} report no allocatable "
                    f"{GPU_RESOURCE} after {timeout:g}s",
                    "the NVIDIA driver is missing on the node AMI, or the plugin pod on that node is failing",
                    "kubectl -n kube-system logs ds/nvidia-device-plugin-daemonset; use an EKS GPU AMI, then re-run",
                )
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.kube import rollout_status

        ds = self._daemonset(ctx)
        name, namespace = ds["metadata"]["name"], ds["metadata"].get("namespace", "kube-system")
        live = _kube(ctx).get("apps/v1", "DaemonSet", name, namespace)
        ok, why = rollout_status(live) if live else (False, "absent")
        gpus = _gpu_nodes(ctx)
        image = (((live or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", [{}])[0]
        return [
            Check(f"DaemonSet {namespace}/{name} rolled out", ok, why, "all pods updated and available"),
            Check(
                "device plugin image",
                image.get("image") == ds["spec"]["template"]["spec"]["containers"][0]["image"],
                image.get("image"),
                ds["spec"]["template"]["spec"]["containers"][0]["image"],
            ),
            Check(
                f"every GPU node reports allocatable {GPU_RESOURCE}",
                bool(gpus) and all(gpus.values()),
                gpus,
                ">= 1 per node",
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        pre = (ctx.checkpoints.get("pre_existing") or {}).get("value")
        if pre is None:
            pre = ctx.upstream.get(self.id, {}).get("pre_existing", False)
        if pre:
            ctx.log("the device plugin DaemonSet existed before this step: left in place")
            return
        kube = _kube(ctx)
        for doc in reversed(self._docs(ctx)):
            meta = doc["metadata"]
            ctx.intent("kube-delete", ref=_ref(doc))
            kube.delete(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
