"""Step ``gpu-nodes``: GPU nodes: nodes labelled node_group=gpu exist, are Ready, and (once the device plugin runs) report"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.errors import StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, RetryPolicy, Reversibility, StepContext

from ._common import DEFAULT_GPU_SELECTOR, GPU_RESOURCE, MlSettings, _gpu_count, _kube, _Ml, _node_ready


class GpuNodes(_Ml):
    """GPU nodes: nodes labelled node_group=gpu exist, are Ready, and (once the device plugin runs) report
    allocatable nvidia.com/gpu.

    Read-only: apply records what it found (node names and GPU counts) and fails when no labelled node exists
    (the EKS GPU node group is missing or scaled to zero). Allocatable GPUs appear only after the NVIDIA device
    plugin runs (next step); the ``nvidia-plugin`` step verifies them.
    """

    id = "gpu-nodes"
    depends_on = ("cluster-addons",)
    reversibility = Reversibility.REVERSIBLE
    torchserve_only = True
    retry = RetryPolicy(attempts=3, wait_initial=2.0)
    timeout = 120.0

    class Settings(MlSettings):
        gpu_node_selector: str = Field(DEFAULT_GPU_SELECTOR, description="label selector of the GPU nodes")
        min_nodes: int = Field(1, ge=0, description="fewest GPU nodes the step accepts")

    def plan(self, ctx: StepContext) -> PlanResult:
        selector = ctx.typed(self.Settings).gpu_node_selector
        nodes = _kube(ctx).nodes(selector)
        result = PlanResult(data={"selector": selector})
        for node in nodes:
            name = node["metadata"]["name"]
            state = "Ready" if _node_ready(node) else "NotReady"
            result.in_place.append(f"node {name} ({state}): allocatable {GPU_RESOURCE}={_gpu_count(node)}")
        result.changes.append(Change("noop", f"nodes {selector}", f"read-only check: found {len(nodes)} node(s)"))
        minimum = ctx.typed(self.Settings).min_nodes
        if len(nodes) < minimum:
            result.findings.append(
                Finding(
                    "block",
                    f"found {len(nodes)} node(s) labelled {selector}, need at least {minimum}",
                    "apply the eks step (GPU node group with label node_group=gpu) or scale the GPU node group up: "
                    f"bpmigrate apply --step eks --env {ctx.env_name}",
                )
            )
        elif not any(_gpu_count(n) for n in nodes):
            why = "expected before the NVIDIA device plugin runs: the nvidia-plugin step installs it"
            no_gpus = f"the {len(nodes)} GPU node(s) report no allocatable {GPU_RESOURCE} yet"
            result.findings.append(Finding("info", no_gpus, why))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        selector = ctx.typed(self.Settings).gpu_node_selector
        nodes = _kube(ctx).nodes(selector)
        minimum = ctx.typed(self.Settings).min_nodes
        if len(nodes) < minimum:
            raise StepFailed(
                f"found {len(nodes)} node(s) labelled {selector}, need at least {minimum}",
                "the EKS GPU node group is missing, unlabelled or scaled to zero",
                f"kubectl get nodes -l {selector}; then bpmigrate apply --step eks --env {ctx.env_name}",
            )
        gpus = {str(n["metadata"]["name"]): _gpu_count(n) for n in nodes}
        ready = [str(n["metadata"]["name"]) for n in nodes if _node_ready(n)]
        ctx.log(f"GPU nodes ({selector}): " + ", ".join(f"{k}={v} GPU" for k, v in sorted(gpus.items())))
        return {
            "selector": selector,
            "nodes": sorted(gpus),
            "ready": sorted(ready),
            "gpus": gpus,
            "total_gpus": sum(gpus.values()),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        selector = ctx.typed(self.Settings).gpu_node_selector
        nodes = _kube(ctx).nodes(selector)
        minimum = ctx.typed(self.Settings).min_nodes
        ready = [n["metadata"]["name"] for n in nodes if _node_ready(n)]
        return [
            Check(f"at least {minimum} node(s) labelled {selector}", len(nodes) >= minimum, len(nodes), minimum),
            Check("GPU nodes Ready", len(ready) == len(nodes) and bool(nodes), sorted(ready), "all"),
        ]

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("gpu-nodes is a read-only check: nothing to roll back")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return f"{len(outputs.get('nodes') or [])} GPU node(s) · {outputs.get('total_gpus', 0)} allocatable GPU(s)"
