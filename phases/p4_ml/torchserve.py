"""Step ``torchserve``: TorchServe Deployment/Service on the GPU nodes (templates/k8s/ml/torchserve.yaml); its management API answers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError, StepFailed
from migrate.step import Check, Finding, Outputs, PlanResult, Reversibility, StepContext

if TYPE_CHECKING:
    from migrate.adapters.torchserve import TorchServeClient
from ._common import (
    DEFAULT_TORCHSERVE_IMAGE,
    GPU_RESOURCE,
    _digest,
    _gpu_nodes,
    _kube,
    _Ml,
    _namespace,
    _plan_docs,
    _ref,
    _ts_client,
)


class TorchServe(_Ml):
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

    def _values(self, ctx: StepContext) -> dict[str, Any]:
        return {
            "namespace": _namespace(ctx),
            "torchserve_image": ctx.setting("image", DEFAULT_TORCHSERVE_IMAGE),
            "torchserve_replicas": int(ctx.setting("replicas", 1)),
            "gpus_per_pod": int(ctx.setting("gpus_per_pod", 1)),
        }

    def _docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        from migrate.adapters.manifests import render

        path = ctx.templates_dir / str(ctx.setting("template", "k8s/ml/torchserve.yaml"))
        return render(path, self._values(ctx))

    def plan(self, ctx: StepContext) -> PlanResult:
        if skipped := self._skip_plan(ctx):
            return skipped
        docs = self._docs(ctx)
        values = self._values(ctx)
        result = PlanResult(data={"manifests": _digest(docs)})
        _plan_docs(ctx, docs, result)
        need = values["torchserve_replicas"] * values["gpus_per_pod"]
        have = sum(_gpu_nodes(ctx).values())
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
        if ctx.setting("management_url"):
            try:
                _ts_client(ctx).list_models()
                result.in_place.append(f"management API answers at {ctx.setting('management_url')}")
            except AdapterError:
                result.findings.append(
                    Finding(
                        "info",
                        f"the TorchServe management API does not answer at {ctx.setting('management_url')} yet",
                        f"after the rollout apply waits up to {float(ctx.setting('api_timeout', 120)):g}s for it: start "
                        f"`kubectl -n {_namespace(ctx)} port-forward svc/torchserve 8080 8081` once the pods run",
                    )
                )
        else:
            result.findings.append(
                Finding(
                    "block",
                    "[steps.torchserve] management_url is not set",
                    "port-forward svc/torchserve 8081 and set management_url in migrate.toml",
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        kube = _kube(ctx)
        docs = self._docs(ctx)
        ns = _namespace(ctx)
        ctx.intent("kube-apply", objects=[_ref(d) for d in docs])
        refs = kube.apply(docs)
        kube.wait_rollout("Deployment", "torchserve", ns, float(ctx.setting("rollout_timeout", 900)))
        client = _ts_client(ctx)
        models = self._wait_api(client, float(ctx.setting("api_timeout", 120)))
        out: Outputs = {
            "applied": refs,
            "namespace": ns,
            "image": self._values(ctx)["torchserve_image"],
            "management_url": client.management_url,
            "inference_url": client.inference_url,
            "service_url": f"http://torchserve.{ns}.svc.cluster.local:8080",
            "models_at_apply": sorted(m.get("modelName", "") for m in models),
        }
        if client.inference_url:
            out["ping"] = client.ping().get("status")
        return out

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
        from migrate.adapters.kube import rollout_status

        ns = _namespace(ctx)
        kube = _kube(ctx)
        live = kube.get("apps/v1", "Deployment", "torchserve", ns)
        ok, why = rollout_status(live) if live else (False, "absent")
        pod = ((live or {}).get("spec") or {}).get("template", {}).get("spec", {})
        checks = [
            Check(f"Deployment {ns}/torchserve available", ok, why, "available"),
            Check(
                "scheduled on GPU nodes",
                (pod.get("nodeSelector") or {}).get("node_group") == "gpu",
                pod.get("nodeSelector"),
                {"node_group": "gpu"},
            ),
            Check("Service torchserve exists", kube.get("v1", "Service", "torchserve", ns) is not None),
        ]
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

    def rollback(self, ctx: StepContext) -> None:
        kube = _kube(ctx)
        for doc in reversed(self._docs(ctx)):
            meta = doc["metadata"]
            ctx.intent("kube-delete", ref=_ref(doc))
            kube.delete(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
