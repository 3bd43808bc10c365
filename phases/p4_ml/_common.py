"""Helpers shared by the phase-4 steps (no step lives here)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, ClassVar

from migrate.errors import ConfigError
from migrate.step import Change, PlanResult, RetryPolicy, Step, StepContext

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


def serving(ctx: StepContext) -> str:
    value = str(ctx.setting("serving", "torchserve"))
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
    return str(ctx.setting("namespace", ctx.env.kube.namespace))


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


def _gpu_nodes(ctx: StepContext) -> dict[str, int]:
    selector = str(ctx.setting("gpu_node_selector", DEFAULT_GPU_SELECTOR))
    return {str(n["metadata"]["name"]): _gpu_count(n) for n in _kube(ctx).nodes(selector)}


def _ref(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{ns}/{meta.get('name')}" if ns else f"{doc.get('kind')}/{meta.get('name')}"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plan_docs(ctx: StepContext, docs: list[dict[str, Any]], result: PlanResult) -> None:
    """Create/update/in-place per document (server-side dry-run apply compared with the live object)."""
    for action, ref in _kube(ctx).diff(docs):
        if action == "unchanged":
            result.in_place.append(ref)
        else:
            result.changes.append(Change(action, ref, "server-side apply"))


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
            return _kube(ctx).unreachable_reason()
        return None

    def _skip_plan(self, ctx: StepContext) -> PlanResult | None:
        reason = self.skip_reason(ctx)
        return PlanResult(skip_reason=reason) if reason else None


def _ts_client(
    ctx: StepContext, management_url: str | None = None, inference_url: str | None = None
) -> TorchServeClient:
    adapter = ctx.adapters.get("torchserve")
    mgmt = management_url or ctx.setting("management_url") or ctx.upstream.get("torchserve", {}).get("management_url")
    infer = inference_url or ctx.setting("inference_url") or ctx.upstream.get("torchserve", {}).get("inference_url")
    if not mgmt:
        raise ConfigError(
            f"[steps.{ctx.step_id}] management_url is not set",
            "the TorchServe management API is reached over HTTP (no port-forward is made by bpmigrate)",
            "run `kubectl -n <ns> port-forward svc/torchserve 8080 8081` and set management_url = "
            '"http://127.0.0.1:8081" (and inference_url) in [steps.torchserve] of migrate.toml',
        )
    return adapter.client(str(mgmt), str(infer) if infer else None)  # type: ignore[no-any-return]


def sample_archive_bytes(model_name: str) -> bytes:
    """A tiny, deterministic TorchServe-shaped archive (zip with MAR-INF/MANIFEST.json) for rehearsals and tests."""
    import io
    import zipfile

    manifest = {
        "createdOn": "01/01/2026 00:00:00",
        "runtime": "python",
        "model": {"modelName": model_name, "handler": "text_classifier", "modelVersion": "1.0"},
        "archiverVersion": "0.11.1",
        "note": "bpmigrate sample archive (no weights): generated for a sandbox rehearsal",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("MAR-INF/MANIFEST.json", date_time=(2026, 1, 1, 0, 0, 0))
        zf.writestr(info, json.dumps(manifest, indent=2, sort_keys=True))
    return buf.getvalue()


def stats_table(stats: dict[str, Any], gate_ms: float, max_error_rate: float) -> str:
    rows = [
        ("requests", f"{stats['count']}", ""),
        ("errors", f"{stats['errors']} ({stats['error_rate'] * 100:.2f} %)", f"< {max_error_rate * 100:.2f} %"),
        ("p50", f"{stats['p50_ms']:.1f} ms", ""),
        ("p95", f"{stats['p95_ms']:.1f} ms", f"< {gate_ms:g} ms"),
        ("p99", f"{stats['p99_ms']:.1f} ms", ""),
        ("max", f"{stats['max_ms']:.1f} ms", ""),
    ]
    width = max(len(r[1]) for r in rows)
    lines = [f"{'metric':<9}{'observed':<{width + 2}}gate", "-" * (width + 24)]
    lines += [f"{name:<9}{value:<{width + 2}}{gate}" for name, value, gate in rows]
    return "\n".join(lines)


