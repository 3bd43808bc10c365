"""Step ``k8s-config``: Namespace, ConfigMaps, and Kubernetes Secrets whose values come from AWS Secrets Manager."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from migrate.errors import ConfigError, DependencyNotReady, StepFailed
from migrate.redact import register
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, StepContext

from .._kube_step import ManifestStep, digest, plan_manifests, ref, verify_manifests
from ._common import (
    CONFIG_FILES,
    DEFAULT_COMPOSE,
    MANAGED_TAG,
    AppSettings,
    AppStep,
    aws_app,
    base_values,
    namespace,
    render,
    services,
)


class K8sConfig(AppStep, ManifestStep):
    """Namespace, ConfigMaps, and Kubernetes Secrets whose values come from AWS Secrets Manager.

    Reads the Compose file (`compose_file`), moves every plaintext credential it carries into Secrets Manager FIRST
    (one JSON secret per service, `<sm_prefix>/<service>`), then builds `<service>-secrets` Kubernetes Secrets
    from Secrets Manager (Compose hostnames in URLs are pointed at the RDS/ElastiCache endpoints, read from the
    outputs of steps rds and elasticache). Values are never printed, logged or stored in outputs (only key names).
    Verify reads the Secrets back from the cluster and compares them (by hash) with Secrets Manager.
    Rollback deletes the ConfigMaps and Secrets it created; the Secrets Manager secrets and the namespace are kept.
    """

    id = "k8s-config"
    depends_on = ("rds", "elasticache")
    reversibility = Reversibility.COMPENSABLE
    rollback_mode = "delete"  # never keep Secret contents on disk

    class Settings(AppSettings):
        compose_file: str | None = Field(
            None, description="the Compose file whose credentials move (required outside the sandbox)"
        )
        sm_prefix: str | None = Field(None, description="Secrets Manager names <sm_prefix>/<service>")
        database_password_secret: str | None = Field(
            None, description="Secrets Manager secret of the target database login (default: postgres.target's)"
        )
        host_map: dict[str, str] = Field(
            default_factory=dict, description="extra Compose hostname -> host:port rewrites in URLs"
        )
        database_sslmode: str | None = Field(None, description="sslmode in the ConfigMap (sandbox: disable)")

    def compose_path(self, ctx: StepContext) -> Path:
        configured = ctx.typed(self.Settings).compose_file
        if not configured and not ctx.is_sandbox:
            raise ConfigError(
                f"[steps.k8s-config] compose_file is not set for environment {ctx.env_name}",
                "outside the sandbox the step must read the real Compose deployment's credentials",
                f'add [environments.{ctx.env_name}.steps.k8s-config] compose_file = "/path/to/docker-compose.yml" '
                "to migrate.toml",
            )
        path = Path(str(configured or DEFAULT_COMPOSE)).expanduser()
        path = path if path.is_absolute() else ctx.project_root / path
        if not ctx.is_sandbox and path.resolve() == (ctx.project_root / DEFAULT_COMPOSE).resolve():
            raise ConfigError(
                f"compose_file for {ctx.env_name} is the bundled sample {DEFAULT_COMPOSE} (fake credentials)",
                "moving sample values into a real Secrets Manager and cluster would break every service",
                f"point [environments.{ctx.env_name}.steps.k8s-config] compose_file at the real docker-compose.yml",
            )
        return path

    def credentials(self, ctx: StepContext) -> dict[str, dict[str, str]]:
        from migrate.adapters.compose import credentials

        return credentials(self.compose_path(ctx))

    def secret_name(self, ctx: StepContext, svc: str) -> str:
        prefix = str(ctx.typed(self.Settings).sm_prefix or f"betterprompts/{ctx.env_name}/compose").strip("/")
        return f"{prefix}/{svc}"

    def values(self, ctx: StepContext) -> tuple[dict[str, Any], list[str]]:
        """RDS/ElastiCache endpoints for the ConfigMaps: data-phase outputs, else the environment's target settings."""
        from migrate.adapters.hostport import split_host_port

        values: dict[str, Any] = {}
        unknown: list[str] = []
        pg, rd = ctx.env.postgres.get("target"), ctx.env.redis.get("target")
        for step, key, role, port in (("rds", "rds", pg, 5432), ("elasticache", "redis", rd, 6379)):
            host, out_port = ctx.output(step, "endpoint", None), ctx.output(step, "port", None)
            if not host and role is not None and role.host != "from-terraform":
                host, out_port = role.host, out_port or role.port
            if host:
                name, parsed = split_host_port(host, int(out_port or port))
                values[f"{key}_endpoint"], values[f"{key}_port"] = name, int(out_port or parsed)
            else:
                what = "RDS" if step == "rds" else "ElastiCache"
                unknown.append(f"{what} endpoint (output 'endpoint' of step {step})")
        values["database_name"] = pg.dbname if pg is not None else "betterprompts"
        values["database_sslmode"] = ctx.typed(self.Settings).database_sslmode or (
            "disable" if ctx.is_sandbox else "require"
        )
        values["redis_tls"] = bool(rd.tls) if rd is not None else not ctx.is_sandbox
        values.update(base_values(ctx))
        return values, unknown

    def rds_login(self, ctx: StepContext) -> tuple[str, str] | None:
        """(user, password) of the target database when it has its own secret (RDS), else None (keep Compose's).

        From `database_password_secret` or the environment's postgres.target.password_secret (Secrets Manager; JSON
        key "password", or the whole string).
        """
        target = ctx.env.postgres.get("target")
        secret = ctx.typed(self.Settings).database_password_secret or (target.password_secret if target else None)
        if not secret:
            return None
        got = aws_app(ctx).get_secret(str(secret))
        if got is None:
            raise DependencyNotReady(
                f"the target database secret {secret} does not exist in Secrets Manager",
                "the services' database password is taken from it (the RDS master/app credentials)",
                f"create it (Terraform / data phase) or fix postgres.target.password_secret, then re-run "
                f"`bpmigrate apply --step k8s-config --env {ctx.env_name}`",
            )
        password = got.get("password", got.get("value", ""))
        user = got.get("username") or (target.user if target is not None else "") or ""
        register(password)
        return user, password

    def host_map(self, values: Mapping[str, Any], ctx: StepContext) -> dict[str, str]:
        from migrate.adapters.hostport import join_host_port

        mapping: dict[str, str] = {}
        if "rds_endpoint" in values:
            mapping["postgres"] = join_host_port(values["rds_endpoint"], values["rds_port"])
        if "redis_endpoint" in values:
            mapping["redis"] = join_host_port(values["redis_endpoint"], values["redis_port"])
        mapping.update(ctx.typed(self.Settings).host_map)
        return mapping

    def secret_docs(
        self, ctx: StepContext, stored: Mapping[str, Mapping[str, str]], values: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        from migrate.adapters.compose import rewrite_url_hosts, with_database_login

        hosts = self.host_map(values, ctx)
        rds_login = self.rds_login(ctx)
        docs = []
        for svc in services(ctx):
            data = {k: rewrite_url_hosts(v, hosts) for k, v in sorted((stored.get(svc) or {}).items())}
            if rds_login is not None:
                data = with_database_login(data, rds_login, {hosts.get("postgres", ""), "postgres"})
            for value in data.values():
                register(value)
            labels = {"app.kubernetes.io/name": svc, "app.kubernetes.io/part-of": "betterprompts"}
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {
                        "name": f"{svc}-secrets",
                        "namespace": namespace(ctx),
                        "labels": {**labels, "app.kubernetes.io/managed-by": "bpmigrate"},
                        "annotations": {"bpmigrate.io/source": f"AWS Secrets Manager {self.secret_name(ctx, svc)}"},
                    },
                    "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
                }
            )
        return docs

    def stored(self, ctx: StepContext, creds: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """What Secrets Manager holds for each service with credentials."""
        return {svc: aws_app(ctx).get_secret(self.secret_name(ctx, svc)) or {} for svc in creds}

    def manifests(self, ctx: StepContext) -> list[dict[str, Any]]:
        values, _ = self.values(ctx)
        creds = self.credentials(ctx)
        return render(ctx, CONFIG_FILES, values) + self.secret_docs(ctx, self.stored(ctx, creds), values)

    def plan(self, ctx: StepContext) -> PlanResult:
        app = aws_app(ctx)
        creds = self.credentials(ctx)
        values, unknown = self.values(ctx)
        result = PlanResult(
            unknown=unknown,
            data={
                "compose_file": str(self.compose_path(ctx)),
                "credentials": {svc: sorted(c) for svc, c in creds.items()},  # key names only
                "namespace": namespace(ctx),
            },
        )
        for svc, found in creds.items():
            name = self.secret_name(ctx, svc)
            current = app.get_secret(name)
            keys = ", ".join(sorted(found))
            if current is None:
                result.changes.append(Change("create", f"Secrets Manager {name}", f"keys {keys}"))
            elif dict(current) != found:
                result.changes.append(Change("update", f"Secrets Manager {name}", f"keys {keys}"))
            else:
                result.in_place.append(f"Secrets Manager {name}")
        if creds:
            count = sum(len(c) for c in creds.values())
            result.findings.append(
                Finding(
                    "warn",
                    f"{count} plaintext credential(s) in {self.compose_path(ctx).name} will be moved to Secrets Manager",
                    "after the cutover, remove them from the Compose file and rotate them",
                )
            )
        if unknown:
            result.changes.append(Change("update", "ConfigMaps and Secrets", "endpoints known after the data phase"))
            return result
        docs = render(ctx, CONFIG_FILES, values) + self.secret_docs(ctx, creds, values)
        result.data["manifests"] = digest([d for d in docs if d["kind"] != "Secret"])
        plan_manifests(ctx, docs, result)
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        app = aws_app(ctx)
        creds = self.credentials(ctx)
        values, unknown = self.values(ctx)
        if unknown:
            raise DependencyNotReady(
                f"k8s-config needs {', '.join(unknown)}",
                "the ConfigMaps point the services at the data stores",
                f"bpmigrate apply --phase 2 --env {ctx.env_name} (or set the target host in migrate.toml)",
            )
        # 1. credentials into Secrets Manager first
        moved: dict[str, dict[str, Any]] = {}
        for svc, found in sorted(creds.items()):
            name = self.secret_name(ctx, svc)
            ctx.intent("secretsmanager-put-secret", sm_name=name, keys=sorted(found))
            res = app.put_secret(
                name,
                found,
                description=f"BetterPrompts {svc} credentials moved from docker-compose ({ctx.env_name})",
                tags={**MANAGED_TAG, "service": svc},
            )
            moved[svc] = {"sm_name": name, "keys": sorted(found)}
            ctx.log(f"{svc}: {len(found)} credential(s) {'stored in' if res['changed'] else 'already in'} {name}")
        # 2. namespace, ConfigMaps and Secrets (values read back from Secrets Manager, not from the Compose file)
        stored = self.stored(ctx, creds)
        missing = [svc for svc in creds if not stored[svc]]
        if missing:
            raise StepFailed(
                f"secret {self.secret_name(ctx, missing[0])} is missing right after it was written",
                "Secrets Manager did not return it",
                f"check it with `aws secretsmanager describe-secret`, then re-run the step ({ctx.env_name})",
            )
        config_docs = render(ctx, CONFIG_FILES, values)
        secret_docs = self.secret_docs(ctx, stored, values)
        applied = self.apply_manifests(ctx, config_docs + secret_docs)["applied"]
        return {
            "namespace": namespace(ctx),
            "compose_file": str(self.compose_path(ctx)),
            "applied": [r for r in applied if not r.startswith("Secret/")],
            "configmaps": [ref(d) for d in config_docs if d["kind"] == "ConfigMap"],
            "secrets": {svc: {"kubernetes": f"{svc}-secrets", **moved.get(svc, {})} for svc in services(ctx)},
            "kubernetes_secrets": [ref(d) for d in secret_docs],
            "moved_count": sum(len(c) for c in creds.values()),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        kube = ctx.adapters.kube()
        values, unknown = self.values(ctx)
        ns = namespace(ctx)
        checks = [Check(f"namespace {ns}", kube.get("v1", "Namespace", ns) is not None, None, "exists")]
        if not unknown:
            checks.extend(
                verify_manifests(ctx, [d for d in render(ctx, CONFIG_FILES, values) if d["kind"] != "Namespace"])
            )
        creds = self.credentials(ctx)
        stored = self.stored(ctx, creds)
        for svc, found in creds.items():
            in_sm = set(stored[svc]) == set(found)
            checks.append(
                Check(f"Secrets Manager {self.secret_name(ctx, svc)}", in_sm, sorted(stored[svc]), sorted(found))
            )
        for doc in self.secret_docs(ctx, stored, values):
            live = kube.get("v1", "Secret", doc["metadata"]["name"], ns)
            live_data = (live or {}).get("data") or {}
            same_keys = sorted(live_data) == sorted(doc["data"])
            same_values = same_keys and all(
                hashlib.sha256(str(live_data[k]).encode()).digest() == hashlib.sha256(v.encode()).digest()
                for k, v in doc["data"].items()
            )
            checks.append(
                Check(
                    ref(doc),
                    live is not None and same_values,
                    {"keys": sorted(live_data), "values_match": same_values},
                    {"keys": sorted(doc["data"]), "values_match": True},
                    "values compared by hash with Secrets Manager (never shown)",
                )
            )
        return checks

    def summary(self, outputs: Mapping[str, Any]) -> str:
        secrets = outputs.get("kubernetes_secrets") or []
        return (
            f"{outputs.get('moved_count', 0)} credential(s) moved to Secrets Manager · "
            f"{len(outputs.get('configmaps') or [])} ConfigMap(s) · {len(secrets)} Secret(s) in {outputs.get('namespace')}"
        )
