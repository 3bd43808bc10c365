"""Step ``kubeconfig``: A kubeconfig context for the EKS cluster (added or updated in place; other contexts are never touched)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

if TYPE_CHECKING:
    from migrate.adapters.kube import KubeAdapter


class Kubeconfig(Step):
    """A kubeconfig context for the EKS cluster (added or updated in place; other contexts are never touched).

    The file is ``[steps.kubeconfig] path``, else the environment's ``kube.kubeconfig``, else
    ``state/<env>/kubeconfig`` — never the operator's ``~/.kube/config`` unless configured to.
    """

    id = "kubeconfig"
    title = "kubeconfig context for the cluster"
    phase = 1
    depends_on = ("eks",)
    reversibility = Reversibility.COMPENSABLE

    class Settings(StepSettings):
        path: str | None = Field(
            None, description="kubeconfig file to write (default: the environment's kube.kubeconfig, else state/<env>/kubeconfig)"
        )

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return f"context {outputs.get('context', '?')} in {outputs.get('kubeconfig', '?')}"

    def _path(self, ctx: StepContext) -> Path:
        configured = ctx.typed(self.Settings).path or ctx.env.kube.kubeconfig
        if configured:
            path = Path(str(configured)).expanduser()
            return path if path.is_absolute() else ctx.project_root / path
        return ctx.state_dir / ctx.env_name / "kubeconfig"

    def _context(self, ctx: StepContext) -> str:
        return str(ctx.env.kube.context or ctx.output("eks", "cluster_name"))

    def skip_reason(self, ctx: StepContext) -> str | None:
        hint = (
            f"to rehearse Kubernetes steps point [environments.{ctx.env_name}] kube = "
            "{ kubeconfig = ..., context = ... } at a cluster"
        )
        if ctx.upstream.get("eks", {}).get("terraform_providers") == "builtin":
            return f"the EKS cluster is a terraform_data stand-in without an API server; {hint}"
        return None

    def _contexts(self, path: Path) -> dict[str, dict[str, Any]]:
        import yaml

        if not path.is_file():
            return {}
        doc = yaml.safe_load(path.read_text()) or {}
        clusters = {c.get("name"): c.get("cluster", {}) for c in doc.get("clusters") or []}
        out: dict[str, dict[str, Any]] = {}
        for c in doc.get("contexts") or []:
            cluster_name = (c.get("context") or {}).get("cluster")
            out[str(c.get("name"))] = {"cluster": cluster_name, "server": clusters.get(cluster_name, {}).get("server")}
        return out

    def _exec_args(self, ctx: StepContext) -> list[str]:
        args = [
            "eks",
            "get-token",
            "--cluster-name",
            str(ctx.output("eks", "cluster_name")),
            "--region",
            ctx.env.aws.region,
        ]
        if ctx.env.aws.profile:
            args += ["--profile", ctx.env.aws.profile]
        return args

    def plan(self, ctx: StepContext) -> PlanResult:
        path = self._path(ctx)
        result = PlanResult(data={"path": str(path)})
        try:
            name = self._context(ctx)
            server = ctx.output("eks", "cluster_endpoint")
        except Exception:
            result.changes.append(Change("create", f"kubeconfig context in {path}"))
            result.unknown.append("cluster name and endpoint (after the eks step)")
            return result
        current = self._contexts(path).get(name)
        if current is None:
            result.changes.append(Change("create", f"context {name} in {path}", str(server)))
        elif current.get("server") != server:
            result.changes.append(Change("update", f"context {name} in {path}", f"{current.get('server')} -> {server}"))
        else:
            result.in_place.append(f"context {name} in {path} points at {server}")
        others = [c for c in self._contexts(path) if c != name]
        if others:
            result.in_place.append(f"other contexts kept untouched: {', '.join(sorted(others))}")
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        path = self._path(ctx)
        name = self._context(ctx)
        ctx.intent("write-kubeconfig-context", path=str(path), context=name)
        kube: KubeAdapter = ctx.adapters.kube()
        kube.write_kubeconfig_context(
            path,
            context=name,
            cluster=str(ctx.output("eks", "cluster_name")),
            server=str(ctx.output("eks", "cluster_endpoint")),
            ca_data=str(ctx.output("eks", "cluster_ca", "") or ""),
            exec_args=self._exec_args(ctx),
            namespace=ctx.env.kube.namespace,
        )
        return {"kubeconfig": str(path), "context": name}

    def verify(self, ctx: StepContext) -> list[Check]:
        path = self._path(ctx)
        name = self._context(ctx)
        found = self._contexts(path).get(name)
        server = ctx.output("eks", "cluster_endpoint")
        return [
            Check(f"context {name} in {path}", found is not None, observed=bool(found), expected=True),
            Check(
                "context points at the cluster",
                (found or {}).get("server") == server,
                observed=(found or {}).get("server"),
                expected=server,
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        ctx.log(
            f"kubeconfig: context {self._context(ctx)} left in {self._path(ctx)} (harmless; remove with kubectl config delete-context)"
        )
