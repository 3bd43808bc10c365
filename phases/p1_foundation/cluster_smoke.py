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
        scale_up: bool = Field(
            True,
            description="then request more CPU than the nodes have: the autoscaler must add a node, then remove it",
        )
        scale_up_timeout: float = Field(900, gt=0, description="seconds for the Cluster Autoscaler to add a node")
        scale_down_timeout: float = Field(1800, gt=0, description="seconds for the node count to fall back")

    def skip_reason(self, ctx: StepContext) -> str | None:
        return kube_unreachable(ctx)

    def _ns(self, ctx: StepContext) -> str:
        return ctx.typed(self.Settings).namespace

    def _docs(self, ctx: StepContext, replicas: int = 1, cpu: str = "10m") -> list[dict[str, Any]]:
        ns = self._ns(ctx)
        labels = {"app": "nginx-smoke", "app.kubernetes.io/managed-by": "bpmigrate"}
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "nginx-smoke", "namespace": ns, "labels": labels},
                "spec": {
                    "replicas": replicas,
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
                                    "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}},
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
                    f"deploy, scale to {' then '.join(map(str, steps))}, check readiness, "
                    + ("force a node scale-up and back, " if ctx.typed(self.Settings).scale_up else "")
                    + "delete",
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
        nodes = self._scale_up(ctx) if ctx.typed(self.Settings).scale_up else {}
        self._cleanup(ctx)
        if nodes.get("before") is not None:
            s = ctx.typed(self.Settings)
            after = kube.wait_node_count(lambda n: n <= nodes["before"], s.scale_down_timeout, what="node scale-down")
            nodes["after"] = after
            ctx.log(f"smoke: node count back to {after}")
        return {"namespace": ns, "replicas_ready": reached, "cleaned_up": True, "nodes": nodes}

    def _scale_up(self, ctx: StepContext) -> dict[str, Any]:
        """Request more CPU than the nodes have, so the Cluster Autoscaler must add a node: (before, peak)."""
        from migrate.adapters.kube import overflow_request

        kube: KubeAdapter = ctx.adapters.kube()
        nodes = kube.nodes()
        if not nodes:
            ctx.log("smoke: no nodes visible to this identity: the node scale-up test is skipped")
            return {"skipped": "no nodes visible"}
        replicas, millis = overflow_request(nodes)
        ctx.intent("smoke-scale-up", replicas=replicas, cpu=f"{millis}m", nodes_before=len(nodes))
        kube.apply(self._docs(ctx, replicas=replicas, cpu=f"{millis}m"))
        s = ctx.typed(self.Settings)
        peak = kube.wait_node_count(lambda n: n > len(nodes), s.scale_up_timeout, what="node scale-up")
        kube.wait_rollout("Deployment", "nginx-smoke", self._ns(ctx), s.scale_up_timeout)
        ctx.log(f"smoke: {replicas} pods of {millis}m CPU made the autoscaler grow the cluster {len(nodes)} -> {peak}")
        return {"before": len(nodes), "peak": peak, "replicas": replicas, "cpu_millis": millis}

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
        nodes = ctx.upstream.get(self.id, {}).get("nodes") or {}
        if nodes.get("before") is not None:
            rose = nodes["peak"] > nodes["before"] >= nodes.get("after", nodes["peak"])
            seen = f"{nodes['before']} -> {nodes['peak']} -> {nodes.get('after')}"
            checks.append(
                Check("node count rose under load and fell back", rose, seen, "before < peak, after <= before")
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        self._cleanup(ctx)

    def summary(self, outputs: Mapping[str, Any]) -> str:
        reached = outputs.get("replicas_ready") or []
        return f"nginx ready at {' then '.join(map(str, reached)) or '?'} replicas · cleaned up: {outputs.get('cleaned_up')}"
