"""Step ``ml-config``: Point the intent classifier at the model server: USE_TORCHSERVE / TORCHSERVE_URL in its ConfigMap, then"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.errors import StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, StepContext

from .._kube_step import digest as _digest
from ._common import RESTART_ANNOTATION, MlSettings, _kube, _Ml, _namespace, serving


class MlConfig(_Ml):
    """Point the intent classifier at the model server: USE_TORCHSERVE / TORCHSERVE_URL in its ConfigMap, then
    restart its Deployment so the pods read them. Rollback restores the values recorded before the first apply.

    The ConfigMap (``configmap``, default intent-classifier-config) is edited with a JSON merge patch of exactly
    these keys (the rest belongs to k8s-config). The previous values are written ahead to the ledger before the
    patch, so a crash mid-way still rolls back to the original values. Note: re-applying k8s-config afterwards
    resets these keys to the template's values; re-apply ml-config after it.
    """

    id = "ml-config"
    depends_on = ("models", "k8s-deploy")
    reversibility = Reversibility.REVERSIBLE
    timeout = 1200.0

    class Settings(MlSettings):
        configmap: str = Field("intent-classifier-config", description="the intent classifier's ConfigMap")
        deployment: str = Field("intent-classifier", description="the Deployment restarted to read the values")
        rollout_timeout: float = Field(600, gt=0, description="seconds for the restart to roll out")
        torchserve_url: str | None = Field(None, description="TORCHSERVE_URL (default: the torchserve step's)")
        sagemaker_endpoint: str | None = Field(None, description="SageMaker endpoint (default: the models step's)")

    def _target(self, ctx: StepContext) -> tuple[str, str, str]:
        return (
            _namespace(ctx),
            ctx.typed(self.Settings).configmap,
            ctx.typed(self.Settings).deployment,
        )

    def _desired(self, ctx: StepContext) -> dict[str, str]:
        ns = _namespace(ctx)
        if serving(ctx) == "sagemaker":
            recorded = ctx.output("models", "sagemaker", None) or {}
            endpoint = recorded.get("endpoint") or ctx.typed(self.Settings).sagemaker_endpoint or ""
            return {
                "USE_TORCHSERVE": "false",
                "TORCHSERVE_URL": "",
                "SAGEMAKER_ENDPOINT": str(endpoint),
                "SAGEMAKER_REGION": ctx.env.aws.region,
            }
        url = (
            ctx.typed(self.Settings).torchserve_url
            or ctx.output("torchserve", "service_url", None)
            or f"http://torchserve.{ns}.svc.cluster.local:8080"
        )
        return {"USE_TORCHSERVE": "true", "TORCHSERVE_URL": str(url)}

    def plan(self, ctx: StepContext) -> PlanResult:
        ns, cm_name, deploy = self._target(ctx)
        desired = self._desired(ctx)
        result = PlanResult(data={"desired": desired})
        kube = _kube(ctx)
        cm = kube.get("v1", "ConfigMap", cm_name, ns)
        if cm is None:
            result.findings.append(
                Finding(
                    "block",
                    f"ConfigMap {ns}/{cm_name} does not exist",
                    f"apply the app config first: bpmigrate apply --step k8s-config --env {ctx.env_name}",
                )
            )
            return result
        if kube.get("apps/v1", "Deployment", deploy, ns) is None:
            result.findings.append(
                Finding(
                    "block",
                    f"Deployment {ns}/{deploy} does not exist",
                    f"bpmigrate apply --step k8s-deploy --env {ctx.env_name}",
                )
            )
        data = cm.get("data") or {}
        for key, value in desired.items():
            if data.get(key) == value:
                result.in_place.append(f"{cm_name}.{key} = {value!r}")
            else:
                result.changes.append(
                    Change("update", f"ConfigMap {ns}/{cm_name} {key}", f"{data.get(key)!r} -> {value!r}")
                )
        if result.changes:
            result.changes.append(Change("run", f"Deployment {ns}/{deploy}", "rolling restart to read the new values"))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        ns, cm_name, deploy = self._target(ctx)
        desired = self._desired(ctx)
        kube = _kube(ctx)
        cm = self._require(ctx, "v1", "ConfigMap", cm_name, "k8s-config")
        previous = (ctx.checkpoints.get("previous") or {}).get("values")
        if previous is None:
            previous = ctx.upstream.get(self.id, {}).get("previous")
        if previous is None:  # first apply: remember what was there (None = key absent)
            data = cm.get("data") or {}
            previous = {k: data.get(k) for k in desired}
            live = kube.get("apps/v1", "Deployment", deploy, ns) or {}
            stamp = ((live.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations", {}) or {}
            ctx.checkpoints.put("previous", {"values": previous, "stamp": stamp.get(RESTART_ANNOTATION)})
        ctx.intent("configmap-patch", configmap=f"{ns}/{cm_name}", keys=sorted(desired))
        kube.patch("v1", "ConfigMap", cm_name, ns, {"data": desired})
        self._restart(ctx, _digest(desired))
        prev_stamp = (ctx.checkpoints.get("previous") or {}).get("stamp")
        return {
            "configmap": f"{ns}/{cm_name}",
            "deployment": f"{ns}/{deploy}",
            "applied": desired,
            "previous": previous,
            "previous_stamp": prev_stamp,
        }

    def _require(self, ctx: StepContext, api: str, kind: str, name: str, by_step: str) -> dict[str, Any]:
        """The live object, or StepFailed naming the step that deploys it."""
        ns = _namespace(ctx)
        live = _kube(ctx).get(api, kind, name, ns)
        if live is None:
            raise StepFailed(
                f"{kind} {ns}/{name} does not exist",
                f"the app is not deployed (step {by_step} creates it)",
                f"bpmigrate apply --step {by_step} --env {ctx.env_name}",
            )
        return live

    def _restart(self, ctx: StepContext, stamp: str | None) -> None:
        """Roll the Deployment by stamping a digest on its pod template (same stamp: no new rollout; None: remove)."""
        ns, _, deploy = self._target(ctx)
        kube = _kube(ctx)
        live = self._require(ctx, "apps/v1", "Deployment", deploy, "k8s-deploy")
        annotations = ((live.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {}
        if annotations.get(RESTART_ANNOTATION) != stamp:
            ctx.intent("deployment-restart", deployment=f"{ns}/{deploy}", stamp=stamp)
            kube.patch(
                "apps/v1",
                "Deployment",
                deploy,
                ns,
                {"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: stamp}}}}},
            )
        kube.wait_rollout("Deployment", deploy, ns, ctx.typed(self.Settings).rollout_timeout)

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.kube import rollout_status

        ns, cm_name, deploy = self._target(ctx)
        desired = self._desired(ctx)
        kube = _kube(ctx)
        data = (kube.get("v1", "ConfigMap", cm_name, ns) or {}).get("data") or {}
        checks = [Check(f"{cm_name}.{k}", data.get(k) == v, data.get(k), v) for k, v in desired.items()]
        live = kube.get("apps/v1", "Deployment", deploy, ns)
        stamp = ((live or {}).get("spec") or {}).get("template", {}).get("metadata", {}).get("annotations", {}) or {}
        checks.append(
            Check(
                f"{deploy} pods restarted with these values",
                stamp.get(RESTART_ANNOTATION) == _digest(desired),
                stamp.get(RESTART_ANNOTATION),
                _digest(desired),
            )
        )
        ok, why = rollout_status(live) if live else (False, "absent")
        checks.append(Check(f"Deployment {ns}/{deploy} available", ok, why, "available"))
        if serving(ctx) == "torchserve":
            checks.append(Check("Service torchserve exists", kube.get("v1", "Service", "torchserve", ns) is not None))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        previous = (ctx.checkpoints.get("previous") or {}).get("values")
        if previous is None:
            previous = ctx.upstream.get(self.id, {}).get("previous")
        if previous is None:
            ctx.log("ml-config never changed the ConfigMap: nothing to restore")
            return
        ns, cm_name, _ = self._target(ctx)
        kube = _kube(ctx)
        if kube.get("v1", "ConfigMap", cm_name, ns) is None:
            ctx.log(f"ConfigMap {ns}/{cm_name} is gone: nothing to restore")
            return
        ckpt = ctx.checkpoints.get("previous") or {}
        stamp = ckpt.get("stamp") if "values" in ckpt else ctx.upstream.get(self.id, {}).get("previous_stamp")
        ctx.intent("configmap-restore", configmap=f"{ns}/{cm_name}", previous=previous)
        kube.patch("v1", "ConfigMap", cm_name, ns, {"data": dict(previous)})  # None removes keys that were absent
        self._restart(ctx, stamp)  # back to the previous pod template: pods restart and read the restored values

    def summary(self, outputs: Mapping[str, Any]) -> str:
        applied = outputs.get("applied") or {}
        return f"{outputs.get('configmap')}: " + ", ".join(f"{k}={v}" for k, v in sorted(applied.items()))
