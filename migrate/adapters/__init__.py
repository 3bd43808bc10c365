"""Adapters: the only code with side effects (AWS, Kubernetes, PostgreSQL, Redis, Terraform, subprocesses, HTTP).

Steps reach them through ``ctx.adapters``; each is imported lazily so that read-only commands such as
``bpmigrate status`` never pay for boto3 or kubernetes. Third-party errors are translated at this edge into
``migrate.errors.AdapterError`` / ``TransientError`` with secrets redacted.

Every adapter module exposes ``from_config(env, **kw)`` building its adapter from the environment's settings.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrate.adapters.aws import AwsAdapter
    from migrate.adapters.http import HttpAdapter
    from migrate.adapters.kube import KubeAdapter
    from migrate.adapters.postgres import PostgresAdapter
    from migrate.adapters.proc import ProcRunner
    from migrate.adapters.redis import RedisAdapter
    from migrate.adapters.terraform import TerraformRunner
    from migrate.config import EnvConfig


class Adapters:
    """Lazy, cached factory of adapters for one environment."""

    def __init__(self, env: EnvConfig, *, project_root: Path, state_dir: Path) -> None:
        self.env = env
        self.project_root = project_root
        self.state_dir = state_dir
        self._cache: dict[tuple[str, str], Any] = {}

    def _get(self, module: str, role: str = "", **kw: Any) -> Any:
        key = (module, role)
        if key not in self._cache:
            mod = importlib.import_module(f"migrate.adapters.{module}")
            args: dict[str, Any] = dict(kw)
            if role:
                args["role"] = role
            self._cache[key] = mod.from_config(self.env, project_root=self.project_root, state_dir=self.state_dir, **args)
        return self._cache[key]

    def aws(self) -> AwsAdapter:
        return self._get("aws")  # type: ignore[no-any-return]

    def postgres(self, role: str) -> PostgresAdapter:
        return self._get("postgres", role)  # type: ignore[no-any-return]

    def redis(self, role: str) -> RedisAdapter:
        return self._get("redis", role)  # type: ignore[no-any-return]

    def terraform(self) -> TerraformRunner:
        return self._get("terraform")  # type: ignore[no-any-return]

    def kube(self) -> KubeAdapter:
        return self._get("kube")  # type: ignore[no-any-return]

    def http(self) -> HttpAdapter:
        return self._get("http")  # type: ignore[no-any-return]

    def proc(self) -> ProcRunner:
        return self._get("proc")  # type: ignore[no-any-return]

    def get(self, module: str, role: str = "") -> Any:
        """Any other adapter module in migrate/adapters/ exposing from_config (e.g. ``get("aws_route53")``)."""
        return self._get(module, role)

    def close(self) -> None:
        for adapter in self._cache.values():
            closer = getattr(adapter, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception:  # noqa: BLE001 - closing must never mask the real outcome
                    pass
        self._cache.clear()
