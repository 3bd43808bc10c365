"""Helpers shared by the phase-4 steps (no step lives here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from migrate.errors import ConfigError
from migrate.step import RetryPolicy, Step, StepContext, StepSettings

from .._kube_step import kube_unreachable

if TYPE_CHECKING:
    from migrate.adapters.aws_ml import AwsMl
    from migrate.adapters.kube import KubeAdapter
    from migrate.adapters.torchserve import TorchServeClient


SERVING_MODES = ("torchserve", "sagemaker")


GPU_RESOURCE = "nvidia.com/gpu"


DEFAULT_GPU_SELECTOR = "node_group=gpu"


DEFAULT_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.15.0"


DEFAULT_TORCHSERVE_IMAGE = "pytorch/torchserve:0.11.1-gpu"


RESTART_ANNOTATION = "bpmigrate.io/ml-config"


class MlSettings(StepSettings):
    """Settings every phase-4 step shares."""

    serving: Literal["torchserve", "sagemaker"] = Field(
        "torchserve", description="phase 4's serving mode (set the same value in every phase-4 table)"
    )
    namespace: str | None = Field(None, description="namespace of the ML objects (default: the environment's)")


class TorchServeApiSettings(MlSettings):
    """For steps that talk to the TorchServe APIs (bpmigrate makes no port-forward)."""

    management_url: str | None = Field(None, description="TorchServe management API (e.g. http://127.0.0.1:8081)")
    inference_url: str | None = Field(None, description="TorchServe inference API (e.g. http://127.0.0.1:8080)")


def _setting(ctx: StepContext, key: str) -> Any:
    """A shared setting the step may or may not declare (its model's value, else the raw table's)."""
    model = ctx.settings_model
    return getattr(model, key, None) if model is not None else ctx.settings.get(key)


def serving(ctx: StepContext) -> str:
    value = str(_setting(ctx, "serving") or "torchserve")
    if value not in SERVING_MODES:
        raise ConfigError(
            f"[steps.{ctx.step_id}] serving = {value!r} is not one of {', '.join(SERVING_MODES)}",
            "phase 4 serves the intent model either with TorchServe on EKS GPU nodes or with a SageMaker endpoint",
            f'set serving = "torchserve" or "sagemaker" in [steps.{ctx.step_id}] of migrate.toml',
        )
    return value


def _kube(ctx: StepContext) -> KubeAdapter:
    return ctx.adapters.kube()


def _ml(ctx: StepContext) -> AwsMl:
    return ctx.adapters.get("aws_ml")  # type: ignore[no-any-return]


def _namespace(ctx: StepContext) -> str:
    return str(_setting(ctx, "namespace") or ctx.env.kube.namespace)


def _gpu_count(node: dict[str, Any]) -> int:
    raw = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")
    try:
        return int(str(raw))
    except ValueError:
        return 0


def _node_ready(node: dict[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status")) == "True"
    return False


def _gpu_nodes(ctx: StepContext, selector: str = DEFAULT_GPU_SELECTOR) -> dict[str, int]:
    return {str(n["metadata"]["name"]): _gpu_count(n) for n in _kube(ctx).nodes(selector)}


class _Ml(Step):
    """Phase-4 step base: skipped without a reachable Kubernetes API, or when the serving mode does not use it."""

    phase = 4
    retry = RetryPolicy(attempts=3, wait_initial=2.0)  # TransientError only (API blips); apply is idempotent
    uses_kube: ClassVar[bool] = True
    torchserve_only: ClassVar[bool] = False

    def skip_reason(self, ctx: StepContext) -> str | None:
        if self.torchserve_only and serving(ctx) != "torchserve":
            return (
                f'serving = "{serving(ctx)}" ([steps.{self.id}] serving): the model is served by SageMaker, '
                "so TorchServe on EKS GPU nodes is not used"
            )
        if self.uses_kube:
            return kube_unreachable(ctx)
        return None


def _ts_client(ctx: StepContext) -> TorchServeClient:
    """The TorchServe client: this step's management/inference URLs, else those the torchserve step recorded."""
    adapter = ctx.adapters.get("torchserve")
    upstream = ctx.step_id != "torchserve"
    mgmt = _setting(ctx, "management_url") or (upstream and ctx.output("torchserve", "management_url", None))
    infer = _setting(ctx, "inference_url") or (upstream and ctx.output("torchserve", "inference_url", None))
    if not mgmt:
        raise ConfigError(
            f"[steps.{ctx.step_id}] management_url is not set",
            "the TorchServe management API is reached over HTTP (no port-forward is made by bpmigrate)",
            "run `kubectl -n <ns> port-forward svc/torchserve 8080 8081` and set management_url = "
            '"http://127.0.0.1:8081" (and inference_url) in [steps.torchserve] of migrate.toml',
        )
    return adapter.client(str(mgmt), str(infer) if infer else None)  # type: ignore[no-any-return]
