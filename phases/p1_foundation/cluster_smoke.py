"""Step ``cluster-smoke``: Cluster smoke test (the guide's nginx test): deploy nginx, scale to 3 then 10, check readiness, clean up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from migrate.errors import StepFailed
from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from .._kube_step import PROTECTED_NAMESPACES, kube_unreachable

if TYPE_CHECKING:
    from migrate.adapters.kube import KubeAdapter


class ClusterSmoke(Step):
    """Cluster smoke test (the guide's nginx test): deploy nginx, scale to 3 then 10, check readiness, clean up."""

    id = "cluster-smoke"
    title = "Cluster smoke test (nginx)"
    phase = 1
    timeout = 1200.0
    depends_on = ("cluster-addons",)
    reversibility = Reversibility.REVERSIBLE

    class Settings(StepSettings):
        namespace: str = Field("bpmigrate-smoke", description="namespace of the throw-away nginx Deployment")
        image: str = Field("nginx:1.27-alpine", description="the smoke test's container image")
        scale_steps: list[int] = Field([3, 10], description="replica counts to scale through, in order")
        rollout_timeout: float = Field(300, gt=0, description="seconds for each scale step to become ready")

    def skip_reason(self, ctx: StepContext) -> str | None:
        return kube_unreachable(ctx)

    def _ns(self, ctx: StepContext) -> str:
        return ctx.typed(self.Settings).namespace

    def _docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        ns = self._ns(ctx)
        labels = {"app": "nginx-smoke", "app.kubernetes.io/managed-by": "bpmigrate"}
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "nginx-smoke", "namespace": ns, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "nginx-smoke"}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "nginx",
                                    "image": ctx.typed(self.Settings).image,
                                    "ports": [{"containerPort": 80}],
                                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                }
                            ]
                        },
                    },
                },
            },
        ]

    def plan(self, ctx: StepContext) -> PlanResult:
        steps = ctx.typed(self.Settings).scale_steps
        return PlanResult(
            changes=[
                Change(
                    "run",
                    f"Deployment {self._ns(ctx)}/nginx-smoke",
                    f"deploy, scale to {' then '.join(map(str, steps))}, check readiness, delete",
                )
            ]
        )

    def apply(self, ctx: StepContext) -> Outputs:
        kube: KubeAdapter = ctx.adapters.kube()
        ns = self._ns(ctx)
        timeout = ctx.typed(self.Settings).rollout_timeout
        ctx.intent("smoke-deploy", namespace=ns)
        kube.apply(self._docs(ctx))
        kube.wait_rollout("Deployment", "nginx-smoke", ns, timeout)
        reached: list[int] = []
        for replicas in ctx.typed(self.Settings).scale_steps:
            ctx.intent("smoke-scale", replicas=int(replicas))
            kube.scale("Deployment", "nginx-smoke", ns, int(replicas))
            kube.wait_rollout("Deployment", "nginx-smoke", ns, timeout)
            obj = kube.get("apps/v1", "Deployment", "nginx-smoke", ns) or {}
            ready = int(
                (obj.get("status") or {}).get("readyReplicas")
                or (obj.get("status") or {}).get("availableReplicas")
                or 0
            )
            if ready < int(replicas):
                raise StepFailed(
                    f"smoke test: {ready}/{replicas} nginx replicas ready",
                    "the cluster could not schedule the pods (capacity, autoscaler, or image pull)",
                    f"kubectl -n {ns} describe deployment nginx-smoke; then bpmigrate apply --step {self.id} --env {ctx.env_name}",
                )
            reached.append(ready)
            ctx.log(f"smoke: {ready}/{replicas} replicas ready")
        self._cleanup(ctx)
        return {"namespace": ns, "replicas_ready": reached, "cleaned_up": True}

    def _cleanup(self, ctx: StepContext) -> None:
        kube: KubeAdapter = ctx.adapters.kube()
        ns = self._ns(ctx)
        ctx.intent("smoke-cleanup", namespace=ns)
        kube.delete("apps/v1", "Deployment", "nginx-smoke", ns)
        if ns not in PROTECTED_NAMESPACES:
            kube.delete("v1", "Namespace", ns)

    def verify(self, ctx: StepContext) -> list[Check]:
        kube: KubeAdapter = ctx.adapters.kube()
        ns = self._ns(ctx)
        leftover = kube.get("apps/v1", "Deployment", "nginx-smoke", ns)
        reached = list(ctx.upstream.get(self.id, {}).get("replicas_ready", []))
        want = ctx.typed(self.Settings).scale_steps
        checks = [
            Check("smoke deployment cleaned up", leftover is None, observed=leftover is not None, expected=False),
            Check(
                "API server answers", bool(kube.server_version()), observed=kube.server_version(), expected="a version"
            ),
        ]
        if reached:
            checks.append(
                Check("replicas became ready at each scale step", reached == want, observed=reached, expected=want)
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        self._cleanup(ctx)

    def summary(self, outputs: Mapping[str, Any]) -> str:
        reached = outputs.get("replicas_ready") or []
        return f"nginx ready at {' then '.join(map(str, reached)) or '?'} replicas · cleaned up: {outputs.get('cleaned_up')}"
