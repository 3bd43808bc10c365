"""Step ``nvidia-plugin``: NVIDIA device plugin DaemonSet (templates/k8s/ml/nvidia-device-plugin.yaml) on the GPU nodes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.errors import StepFailed
from migrate.step import Check, Outputs, PlanResult, Reversibility, StepContext

from .._kube_step import ManifestStep, load_point, ref, render_templates, verify_manifests
from ._common import DEFAULT_GPU_SELECTOR, DEFAULT_PLUGIN_IMAGE, GPU_RESOURCE, MlSettings, _gpu_nodes, _Ml


class NvidiaPlugin(_Ml, ManifestStep):
    """NVIDIA device plugin DaemonSet (templates/k8s/ml/nvidia-device-plugin.yaml) on the GPU nodes.

    Server-side apply, wait for the DaemonSet rollout, then wait until every GPU node advertises allocatable
    nvidia.com/gpu. Rollback restores a DaemonSet that existed before this step first applied it (else deletes it).
    """

    id = "nvidia-plugin"
    depends_on = ("gpu-nodes",)
    reversibility = Reversibility.COMPENSABLE
    torchserve_only = True
    timeout = 900.0

    class Settings(MlSettings):
        image: str = Field(DEFAULT_PLUGIN_IMAGE, description="the device plugin image")
        template: str = Field("k8s/ml/nvidia-device-plugin.yaml", description="template (relative to templates/)")
        rollout_timeout: float = Field(300, gt=0, description="seconds for the DaemonSet to roll out")
        allocatable_timeout: float = Field(120, gt=0, description="seconds for every GPU node to advertise GPUs")
        gpu_node_selector: str = Field(DEFAULT_GPU_SELECTOR, description="label selector of the GPU nodes")

    def manifests(self, ctx: StepContext) -> list[dict[str, Any]]:
        s = ctx.typed(self.Settings)
        return render_templates(ctx, s.template, {"nvidia_plugin_image": s.image})

    def plan(self, ctx: StepContext) -> PlanResult:
        result = super().plan(ctx)
        nodes = _gpu_nodes(ctx, ctx.typed(self.Settings).gpu_node_selector)
        result.in_place.append(f"{len(nodes)} GPU node(s); allocatable GPUs now: {sum(nodes.values())}")
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        out = super().apply(ctx)
        gpus = self._wait_allocatable(ctx, ctx.typed(self.Settings).allocatable_timeout)
        point = load_point(ctx) or {}
        ds = next(d for d in self.manifests(ctx) if d["kind"] == "DaemonSet")
        return {
            **out,
            "daemonset": f"{ds['metadata'].get('namespace', 'kube-system')}/{ds['metadata']['name']}",
            "pre_existing": ref(ds) not in set(point.get("created", [])),
            "gpus": gpus,
            "total_gpus": sum(gpus.values()),
        }

    def _wait_allocatable(self, ctx: StepContext, timeout: float) -> dict[str, int]:
        selector = ctx.typed(self.Settings).gpu_node_selector
        deadline = time.monotonic() + timeout
        while True:
            gpus = _gpu_nodes(ctx, selector)
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
        gpus = _gpu_nodes(ctx, ctx.typed(self.Settings).gpu_node_selector)
        return [
            *verify_manifests(ctx, self.manifests(ctx)),
            Check(
                f"every GPU node reports allocatable {GPU_RESOURCE}",
                bool(gpus) and all(gpus.values()),
                gpus,
                ">= 1 per node",
            ),
        ]

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return f"device plugin on {len(outputs.get('gpus') or {})} GPU node(s) · {outputs.get('total_gpus', 0)} GPU(s)"
