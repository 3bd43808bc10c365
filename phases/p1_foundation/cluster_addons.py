"""Step ``cluster-addons``: Cluster add-ons: metrics-server, cluster-autoscaler, AWS Load Balancer Controller (server-side apply of the"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, StepContext

if TYPE_CHECKING:
    from migrate.adapters.kube import KubeAdapter
from ._common import _PROTECTED_NAMESPACES, PROJECT, _aws, _KubeStep


class ClusterAddons(_KubeStep):
    """Cluster add-ons: metrics-server, cluster-autoscaler, AWS Load Balancer Controller (server-side apply of the
    manifests in templates/k8s/addons), verified by their Deployments becoming available."""

    id = "cluster-addons"
    title = "Cluster add-ons"
    phase = 1
    depends_on = ("kubeconfig",)
    reversibility = Reversibility.COMPENSABLE
    timeout = 1200.0

    def _docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        from migrate.adapters.manifests import render

        folder = ctx.templates_dir / str(ctx.setting("manifests", "k8s/addons"))  # an absolute setting wins
        eks = ctx.upstream.get("eks", {})
        values: dict[str, Any] = {
            "cluster_name": eks.get("cluster_name", f"{PROJECT}-{ctx.env_name}"),
            "region": ctx.env.aws.region,
            "aws_region": ctx.env.aws.region,
            "vpc_id": ctx.upstream.get("vpc", {}).get("vpc_id", ""),
            "env_name": ctx.env_name,
            "environment": ctx.env_name,
            "namespace": ctx.env.kube.namespace,
        }
        values.update(ctx.setting("values", {}) or {})
        if "account_id" not in values:
            accounts = ctx.upstream.get("aws-accounts", {}).get("accounts", {}) or {}
            values["account_id"] = ctx.env.aws.account_id or accounts.get(ctx.env_name) or _aws(ctx).account_id()
        return render(folder, values)

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        kube: KubeAdapter = ctx.adapters.kube()
        result = PlanResult()
        for doc in self._docs(ctx):
            meta = doc.get("metadata", {})
            ref = f"{doc.get('kind')}/{meta.get('namespace', '')}/{meta.get('name')}".replace("//", "/")
            current = kube.get(
                str(doc.get("apiVersion")), str(doc.get("kind")), str(meta.get("name")), meta.get("namespace")
            )
            if current is None:
                result.changes.append(Change("create", ref))
            else:
                result.changes.append(Change("update", ref, "server-side apply (no-op if unchanged)"))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        kube: KubeAdapter = ctx.adapters.kube()
        docs = self._docs(ctx)
        ctx.intent("kube-apply", objects=len(docs))
        refs = kube.apply(docs)
        timeout = float(ctx.setting("rollout_timeout", 300))
        workloads = [d for d in docs if d.get("kind") in ("Deployment", "DaemonSet", "StatefulSet")]
        for d in workloads:
            meta = d["metadata"]
            ctx.log(f"waiting for {d['kind']} {meta.get('namespace')}/{meta['name']}")
            kube.wait_rollout(str(d["kind"]), str(meta["name"]), str(meta.get("namespace", "kube-system")), timeout)
        return {
            "applied": refs,
            "workloads": [f"{d['kind']}/{d['metadata'].get('namespace')}/{d['metadata']['name']}" for d in workloads],
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.kube import rollout_status

        kube: KubeAdapter = ctx.adapters.kube()
        checks = []
        for d in self._docs(ctx):
            if d.get("kind") not in ("Deployment", "DaemonSet", "StatefulSet"):
                continue
            meta = d["metadata"]
            obj = kube.get(str(d["apiVersion"]), str(d["kind"]), str(meta["name"]), meta.get("namespace"))
            ok, why = rollout_status(obj) if obj else (False, "absent")
            checks.append(
                Check(
                    f"{d['kind']} {meta.get('namespace')}/{meta['name']} available",
                    ok,
                    observed=why,
                    expected="available",
                )
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        kube: KubeAdapter = ctx.adapters.kube()
        docs = self._docs(ctx)
        for d in reversed(docs):
            meta = d.get("metadata", {})
            if d.get("kind") == "Namespace" and meta.get("name") in _PROTECTED_NAMESPACES:
                continue
            ctx.intent("kube-delete", kind=d.get("kind"), name=meta.get("name"), namespace=meta.get("namespace"))
            kube.delete(str(d["apiVersion"]), str(d["kind"]), str(meta["name"]), meta.get("namespace"))
