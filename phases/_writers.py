"""The writers of the cutover: fences for the stacks that write (old Compose stack, new stack) and the app
configuration they are pointed with (``DATABASE_URL``/``REDIS_URL``), as ``data-switch`` drives them so that one
writer writes at every instant."""

from __future__ import annotations

import string
import time
from collections.abc import Mapping
from typing import Any

from migrate.errors import ConfigError, StepFailed
from migrate.step import Check, StepContext

from ._sync import _pg

DEFAULT_DATA_ENV = {
    "DATABASE_URL": "postgresql://${pg_user}@${pg_host}:${pg_port}/${pg_dbname}",
    "REDIS_URL": "${redis_scheme}://${redis_host}:${redis_port}/0",
}
#: fence kinds that stop the OLD stack's writers (scale stops Kubernetes Deployments: the new stack)
OLD_STACK_KINDS = ("compose", "http", "process")


class ScaleFence:
    """Kubernetes Deployments to 0 replicas and back (previous counts checkpointed before scaling)."""

    kind = "scale"

    def __init__(self, ctx: StepContext, name: str, raw: dict[str, Any]) -> None:
        self.ctx = ctx
        self.name = name
        self.deployments = [str(d) for d in raw.get("deployments", [])]
        self.namespace = str(raw.get("namespace") or ctx.env.kube.namespace)
        self.timeout = float(raw.get("timeout_s", 120))
        self.key = f"scale-{name}"

    def describe(self) -> str:
        return f"{self.name} (scale {', '.join(self.deployments)})"

    def _split(self, ref: str) -> tuple[str, str]:
        return (ref.split("/", 1)[0], ref.split("/", 1)[1]) if "/" in ref else (self.namespace, ref)

    def on(self) -> None:
        kube = self.ctx.adapters.kube()
        replicas: dict[str, int] = dict((self.ctx.checkpoints.get(self.key) or {}).get("replicas") or {})
        for ref in self.deployments:
            ns, name = self._split(ref)
            obj = kube.get("apps/v1", "Deployment", name, ns)
            if obj is None:
                raise StepFailed(
                    f"fence {self.name}: Deployment {ns}/{name} not found",
                    "the writers to stop are named in the fence's deployments",
                    "fix the list in migrate.toml and re-run",
                )
            if ref not in replicas:
                replicas[ref] = int((obj.get("spec") or {}).get("replicas", 1))
                # durable before scaling: a run killed half-way still knows what to scale back to
                self.ctx.checkpoints.put(self.key, {"replicas": replicas})
            self.ctx.intent("scale-to-zero", deployment=f"{ns}/{name}", previous=replicas[ref])
            kube.scale("Deployment", name, ns, 0)
        deadline = time.monotonic() + self.timeout
        for ref in self.deployments:
            ns, name = self._split(ref)
            while int(((kube.get("apps/v1", "Deployment", name, ns) or {}).get("status") or {}).get("replicas") or 0):
                if time.monotonic() >= deadline:
                    raise StepFailed(
                        f"fence {self.name}: Deployment {ns}/{name} still has pods after {self.timeout:g}s",
                        "writers may still be running: the fence would not hold",
                        f"kubectl -n {ns} get pods; re-run data-switch",
                    )
                time.sleep(0.2)

    def point(self, target: Any) -> None:
        """The Deployments read their configuration from the ConfigMap (``app_config``), patched separately."""

    def off(self) -> None:
        kube = self.ctx.adapters.kube()
        for ref, n in dict((self.ctx.checkpoints.get(self.key) or {}).get("replicas") or {}).items():
            ns, name = self._split(ref)
            self.ctx.intent("scale-back", deployment=f"{ns}/{name}", replicas=n)
            kube.scale("Deployment", name, ns, int(n))

    def state(self) -> dict[str, Any]:
        return {}


class Writers:
    """Every stack that can write, fenced together: ``[steps.data-switch] fences`` (+ the older single
    ``maintenance`` hook). One writer at every instant: all are fenced before the data moves, pointed at the new
    primary while fenced, and released together."""

    def __init__(self, ctx: StepContext) -> None:
        from migrate.adapters import fences as fence_kinds

        self.ctx = ctx
        raws: list[tuple[str, dict[str, Any]]] = []
        legacy = dict(ctx.setting("maintenance") or {})
        if legacy and str(legacy.get("kind", "none")) != "none":
            raws.append((str(legacy.get("name") or "app"), legacy))
        for i, raw in enumerate(ctx.setting("fences") or []):
            raws.append((str(raw.get("name") or f"fence-{i + 1}"), dict(raw)))
        self.env_templates = {
            **DEFAULT_DATA_ENV,
            **{str(k): str(v) for k, v in dict(ctx.setting("data_env") or {}).items()},
        }
        self.fences: list[Any] = []
        self.raw: dict[str, dict[str, Any]] = {}
        for name, raw in raws:
            self.raw[name] = raw
            if str(raw.get("kind")) == "scale":
                self.fences.append(ScaleFence(ctx, name, raw))
            else:
                self.fences.append(
                    fence_kinds.build(
                        name,
                        raw,
                        http=ctx.adapters.http() if raw.get("kind") == "http" else None,
                        proc=ctx.adapters.proc() if raw.get("kind") == "compose" else None,
                    )
                )

    @property
    def kinds(self) -> list[str]:
        return [f.kind for f in self.fences]

    def fences_old_stack(self) -> bool:
        return any(k in OLD_STACK_KINDS for k in self.kinds)

    def unavailable(self) -> str | None:
        if "scale" in self.kinds:
            return self.ctx.adapters.kube().unreachable_reason()
        return None

    def describe(self) -> str:
        return ", ".join(f.describe() for f in self.fences) or "none"

    def target_for(self, role: str, fence_name: str | None = None) -> Any:
        from migrate.adapters.fences import DataTarget

        templates = dict(self.env_templates)
        if fence_name is not None:
            templates.update({str(k): str(v) for k, v in dict(self.raw[fence_name].get("env") or {}).items()})
        values = {k: str(v) for k, v in _endpoints(self.ctx, role).items()}
        return DataTarget(role, {k: string.Template(v).safe_substitute(values) for k, v in templates.items()})

    def _all(self, action: str, call: Any, **details: Any) -> None:
        """Run ``call(fence)`` for every fence at once (the write downtime is the slowest fence, not their sum);
        intents are written first, in order; the first failure is raised after all finished."""
        from concurrent.futures import ThreadPoolExecutor

        for fence in self.fences:
            self.ctx.intent(action, fence=fence.name, kind=fence.kind, **details)
        if len(self.fences) <= 1:
            for fence in self.fences:
                call(fence)
            return
        with ThreadPoolExecutor(max_workers=len(self.fences)) as pool:
            futures = [pool.submit(call, fence) for fence in self.fences]
        for future in futures:
            future.result()

    def on(self) -> None:
        self._all("fence-on", lambda f: f.on())

    def point(self, role: str) -> None:
        self._all("fence-point", lambda f: f.point(self.target_for(role, f.name)), role=role)

    def off(self) -> None:
        self._all("fence-off", lambda f: f.off())

    def off_quietly(self) -> list[str]:
        """Release every fence, collecting failures (used while undoing: the first error must not hide the rest)."""
        errors = []
        for fence in self.fences:
            try:
                self.ctx.intent("fence-off", fence=fence.name, kind=fence.kind)
                fence.off()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{fence.name}: {exc}")
        return errors

    def states(self) -> dict[str, dict[str, Any]]:
        return {f.name: f.state() for f in self.fences}

    def point_checks(self, role: str = "target") -> list[Check]:
        """One check per stack that reports its DATABASE_URL: it is the one ``role`` templates to."""
        want = {f.name: self.target_for(role, f.name).database_url for f in self.fences}
        return [
            Check(f"stack {name} points at the {role}", state["database_url"] == want[name], state, want[name])
            for name, state in self.states().items()
            if state.get("database_url") is not None
        ]


def _endpoints(ctx: StepContext, role: str = "target") -> dict[str, Any]:
    """Connection facts of the source or target data stores (no secrets): templates' ``${pg_host}`` etc."""
    out: dict[str, Any] = {}
    if role in ctx.env.postgres:
        t = _pg(ctx, role)
        out.update(pg_host=t.host, pg_port=t.port, pg_dbname=t.dbname, pg_user=t.user)
    if role in ctx.env.redis:
        from .p2_data._common import rds

        r = rds(ctx, role)
        out.update(redis_host=r.host, redis_port=r.port, redis_scheme="rediss" if r.tls else "redis")
    return out


class AppConfig:
    """Points the app's ConfigMap at the target (values are templates over the target endpoints)."""

    def __init__(self, ctx: StepContext) -> None:
        raw = dict(ctx.setting("app_config", {}) or {})
        self.ctx = ctx
        self.name = str(raw.get("configmap", ""))
        self.namespace = str(raw.get("namespace") or ctx.env.kube.namespace)
        self.templates = {str(k): str(v) for k, v in dict(raw.get("data", {}) or {}).items()}

    def reachable(self) -> bool:
        return bool(self.name) and self.ctx.adapters.kube().unreachable_reason() is None

    def values(self, endpoints: dict[str, Any]) -> dict[str, str]:
        try:
            return {k: string.Template(v).substitute(endpoints) for k, v in self.templates.items()}
        except KeyError as exc:
            raise ConfigError(
                f"[steps.data-switch] app_config.data uses ${{{exc.args[0]}}}, which is not known",
                f"known names: {', '.join(sorted(endpoints))}",
                "fix the template in migrate.toml",
            ) from None

    def point(self, endpoints: dict[str, Any]) -> dict[str, str | None]:
        """Patch the ConfigMap; returns the previous values (None = key absent) for rollback."""
        kube = self.ctx.adapters.kube()
        current = kube.get("v1", "ConfigMap", self.name, self.namespace)
        if current is None:
            raise StepFailed(
                f"ConfigMap {self.namespace}/{self.name} not found",
                "data-switch points the app's existing configuration at the target",
                "fix [steps.data-switch] app_config.configmap (or deploy the app first) and re-run",
            )
        data = dict(current.get("data") or {})
        new = self.values(endpoints)
        previous = {k: data.get(k) for k in new}
        self.ctx.intent("patch-configmap", configmap=f"{self.namespace}/{self.name}", keys=sorted(new))
        kube.patch("v1", "ConfigMap", self.name, self.namespace, {"data": new})
        return previous

    def revert(self, previous: dict[str, str | None]) -> None:
        kube = self.ctx.adapters.kube()
        self.ctx.intent("revert-configmap", configmap=f"{self.namespace}/{self.name}", keys=sorted(previous))
        kube.patch("v1", "ConfigMap", self.name, self.namespace, {"data": dict(previous)})

    def check(self, endpoints: dict[str, Any]) -> Check:
        """The ConfigMap holds the values its templates give over ``endpoints``."""
        current = (self.ctx.adapters.kube().get("v1", "ConfigMap", self.name, self.namespace) or {}).get("data") or {}
        wanted = self.values(endpoints)
        return Check(
            "app ConfigMap points at the target",
            all(current.get(k) == v for k, v in wanted.items()),
            observed={k: current.get(k) for k in wanted},
            expected=wanted,
        )


def point_stacks(ctx: StepContext, writers: Writers, role: str) -> dict[str, Any]:
    """Every stack pointed at ``role``'s data stores, and the app's ConfigMap when it is configured and reachable;
    what the way back needs: ``endpoints``, ``config_previous`` (the ConfigMap's values before), ``configmap``."""
    writers.point(role)
    out: dict[str, Any] = {"endpoints": _endpoints(ctx, role)}
    cfg = AppConfig(ctx)
    if cfg.reachable():
        out["config_previous"] = cfg.point(out["endpoints"])
        out["configmap"] = f"{cfg.namespace}/{cfg.name}"
    else:
        out["configmap"] = None
    return out


def point_stacks_back(ctx: StepContext, writers: Writers, recorded: Mapping[str, Any]) -> None:
    """Every stack pointed at the source again; the ConfigMap's values before the switch restored."""
    writers.point("source")
    prev = recorded.get("config_previous")
    cfg = AppConfig(ctx)
    if prev and cfg.reachable():
        cfg.revert(dict(prev))
