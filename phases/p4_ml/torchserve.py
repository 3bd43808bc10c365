"""Step ``torchserve``: TorchServe Deployment/Service on the GPU nodes (templates/k8s/ml/torchserve.yaml); its management API answers."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from migrate.errors import AdapterError, StepFailed
from migrate.step import Check, Finding, Outputs, PlanResult, Reversibility, StepContext

from .._kube_step import ManifestStep, render_templates, verify_manifests
from ._common import (
    DEFAULT_GPU_SELECTOR,
    DEFAULT_TORCHSERVE_IMAGE,
    GPU_RESOURCE,
    TorchServeApiSettings,
    _gpu_nodes,
    _Ml,
    _namespace,
    _ts_client,
)

if TYPE_CHECKING:
    from migrate.adapters.torchserve import TorchServeClient


class TorchServe(_Ml, ManifestStep):
    """TorchServe Deployment/Service on the GPU nodes (templates/k8s/ml/torchserve.yaml); its management API answers.

    Server-side apply, rollout wait (observedGeneration, updated and available replicas; a timeout names the pod
    reason), then the management API (``management_url``; bpmigrate makes no port-forward) must answer
    ``GET /models``. Rollback deletes what this step created.
    """

    id = "torchserve"
    depends_on = ("nvidia-plugin",)
    reversibility = Reversibility.COMPENSABLE
    torchserve_only = True
    timeout = 1800.0
    rollback_mode = "delete"

    class Settings(TorchServeApiSettings):
        image: str = Field(DEFAULT_TORCHSERVE_IMAGE, description="the TorchServe image")
        replicas: int = Field(1, ge=1, description="TorchServe pods")
        gpus_per_pod: int = Field(1, ge=1, description="GPUs requested by each pod")
        template: str = Field("k8s/ml/torchserve.yaml", description="template (relative to templates/)")
        rollout_timeout: float = Field(900, gt=0, description="seconds for the Deployment to roll out")
        api_timeout: float = Field(120, gt=0, description="seconds for the management API to answer after rollout")
        gpu_node_selector: str = Field(DEFAULT_GPU_SELECTOR, description="label selector of the GPU nodes")

    def _values(self, ctx: StepContext) -> dict[str, Any]:
        s = ctx.typed(self.Settings)
        return {
            "namespace": _namespace(ctx),
            "torchserve_image": s.image,
            "torchserve_replicas": s.replicas,
            "gpus_per_pod": s.gpus_per_pod,
        }

    def manifests(self, ctx: StepContext) -> list[dict[str, Any]]:
        return render_templates(ctx, ctx.typed(self.Settings).template, self._values(ctx))

    def plan(self, ctx: StepContext) -> PlanResult:
        s = ctx.typed(self.Settings)
        result = super().plan(ctx)
        need = s.replicas * s.gpus_per_pod
        have = sum(_gpu_nodes(ctx, s.gpu_node_selector).values())
        if have < need:
            result.findings.append(
                Finding(
                    "block",
                    f"TorchServe needs {need} {GPU_RESOURCE} but the GPU nodes advertise {have}: its pods would stay "
                    "Pending",
                    f"apply nvidia-plugin (bpmigrate apply --step nvidia-plugin --env {ctx.env_name}) or scale the GPU "
                    "node group",
                )
            )
        if not s.management_url:
            result.findings.append(
                Finding(
                    "block",
                    "[steps.torchserve] management_url is not set",
                    "port-forward svc/torchserve 8081 and set management_url in migrate.toml",
                )
            )
            return result
        try:
            _ts_client(ctx).list_models()
            result.in_place.append(f"management API answers at {s.management_url}")
        except AdapterError:
            result.findings.append(
                Finding(
                    "info",
                    f"the TorchServe management API does not answer at {s.management_url} yet",
                    f"after the rollout apply waits up to {s.api_timeout:g}s for it: start "
                    f"`kubectl -n {_namespace(ctx)} port-forward svc/torchserve 8080 8081` once the pods run",
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        out = super().apply(ctx)
        ns = _namespace(ctx)
        client = _ts_client(ctx)
        models = self._wait_api(client, ctx.typed(self.Settings).api_timeout)
        result: Outputs = {
            **out,
            "namespace": ns,
            "image": ctx.typed(self.Settings).image,
            "management_url": client.management_url,
            "inference_url": client.inference_url,
            "service_url": f"http://torchserve.{ns}.svc.cluster.local:8080",
            "models_at_apply": sorted(m.get("modelName", "") for m in models),
        }
        if client.inference_url:
            result["ping"] = client.ping().get("status")
        return result

    @staticmethod
    def _wait_api(client: TorchServeClient, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return client.list_models()
            except AdapterError as exc:
                if time.monotonic() >= deadline:
                    raise StepFailed(
                        f"TorchServe is rolled out but its management API at {client.management_url} does not answer",
                        f"{exc.what}: {exc.why}",
                        "check the port-forward / management_url and `kubectl logs deploy/torchserve`, then re-run",
                    ) from None
                time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    def verify(self, ctx: StepContext) -> list[Check]:
        checks = verify_manifests(ctx, self.manifests(ctx))
        client = _ts_client(ctx)
        try:
            models = client.list_models()
            checks.append(Check("management API answers GET /models", True, f"{len(models)} model(s)"))
        except AdapterError as exc:
            checks.append(Check("management API answers GET /models", False, exc.what, "HTTP 200"))
        if client.inference_url:
            try:
                status = client.ping().get("status")
                checks.append(Check("inference API /ping", status == "Healthy", status, "Healthy"))
            except AdapterError as exc:
                checks.append(Check("inference API /ping", False, exc.what, "Healthy"))
        return checks

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return f"TorchServe {outputs.get('image')} · {len(outputs.get('models_at_apply') or [])} model(s) at apply"
