"""Step ``k8s-config``: Namespace, ConfigMaps, and Kubernetes Secrets whose values come from AWS Secrets Manager."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migrate.errors import ConfigError, DependencyNotReady, StepFailed
from migrate.redact import register
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import (
    AWS_RETRY,
    CONFIG_FILES,
    DEFAULT_COMPOSE,
    MANAGED_TAG,
    PHASE,
    SERVICES,
    aws_app,
    base_values,
    compose_credentials,
    data_endpoints,
    kube_unreachable,
    live_object,
    namespace,
    plan_docs,
    ref,
    render,
    rewrite_url_hosts,
    services,
    with_database_login,
)


class K8sConfig(Step):
    """Namespace, ConfigMaps, and Kubernetes Secrets whose values come from AWS Secrets Manager.

    Reads the Compose file (`compose_file`), moves every plaintext credential it carries into Secrets Manager FIRST
    (one JSON secret per service, `<sm_prefix>/<service>`), then builds `<service>-secrets` Kubernetes Secrets
    from Secrets Manager (Compose hostnames in URLs are pointed at the RDS/ElastiCache endpoints). Values are never
    printed, logged or stored in outputs (only key names). Verify reads the Secrets back from the cluster and
    compares them (by hash) with Secrets Manager.
    Rollback deletes the ConfigMaps and Secrets; the Secrets Manager secrets and the namespace are kept.
    """

    id = "k8s-config"
    retry = AWS_RETRY
    phase = PHASE
    depends_on = ()
    reversibility = Reversibility.COMPENSABLE

    def skip_reason(self, ctx: StepContext) -> str | None:
        return kube_unreachable(ctx)

    def compose_path(self, ctx: StepContext) -> Path:
        configured = ctx.setting("compose_file")
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
        path = self.compose_path(ctx)
        if not path.is_file():
            raise ConfigError(
                f"Compose file {path} not found",
                "k8s-config moves the credentials of the Compose deployment into Secrets Manager",
                'set [steps.k8s-config] compose_file = "path/to/docker-compose.yml" in migrate.toml',
            )
        return compose_credentials(path.read_text(), source=str(path))

    def secret_name(self, ctx: StepContext, svc: str) -> str:
        prefix = str(ctx.setting("sm_prefix", f"betterprompts/{ctx.env_name}/compose")).strip("/")
        return f"{prefix}/{svc}"

    def values(self, ctx: StepContext) -> tuple[dict[str, Any], list[str]]:
        values, unknown = data_endpoints(ctx)
        values.update(base_values(ctx))
        return values, unknown

    def rds_login(self, ctx: StepContext) -> tuple[str, str] | None:
        """(user, password) of the target database when it has its own secret (RDS), else None (keep Compose's).

        From `database_password_secret` or the environment's postgres.target.password_secret (Secrets Manager; JSON
        key "password", or the whole string).
        """
        target = ctx.env.postgres.get("target")
        ref = ctx.setting("database_password_secret") or (target.password_secret if target is not None else None)
        if not ref:
            return None
        got = aws_app(ctx).get_secret(str(ref))
        if got is None:
            raise DependencyNotReady(
                f"the target database secret {ref} does not exist in Secrets Manager",
                "the services' database password is taken from it (the RDS master/app credentials)",
                f"create it (Terraform / data phase) or fix postgres.target.password_secret, then re-run "
                f"`bpmigrate apply --step k8s-config --env {ctx.env_name}`",
            )
        password = got.get("password", got.get("value", ""))
        user = got.get("username") or (target.user if target is not None else "") or ""
        register(password)
        return user, password

    def host_map(self, values: Mapping[str, Any], ctx: StepContext) -> dict[str, str]:
        mapping: dict[str, str] = {}
        if "rds_endpoint" in values:
            mapping["postgres"] = f"{values['rds_endpoint']}:{values['rds_port']}"
        if "redis_endpoint" in values:
            mapping["redis"] = f"{values['redis_endpoint']}:{values['redis_port']}"
        mapping.update({str(k): str(v) for k, v in (ctx.setting("host_map", {}) or {}).items()})
        return mapping

    def k8s_secret_docs(
        self, ctx: StepContext, stored: Mapping[str, Mapping[str, str]], values: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        hosts = self.host_map(values, ctx)
        rds_login = self.rds_login(ctx)
        docs = []
        for svc in services(ctx):
            data = {k: rewrite_url_hosts(v, hosts) for k, v in sorted((stored.get(svc) or {}).items())}
            if rds_login is not None:
                data = with_database_login(data, rds_login, {hosts.get("postgres", ""), "postgres"})
            for value in data.values():
                register(value)
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {
                        "name": f"{svc}-secrets",
                        "namespace": namespace(ctx),
                        "labels": {
                            "app.kubernetes.io/name": svc,
                            "app.kubernetes.io/part-of": "betterprompts",
                            "app.kubernetes.io/managed-by": "bpmigrate",
                        },
                        "annotations": {"bpmigrate.io/source": f"AWS Secrets Manager {self.secret_name(ctx, svc)}"},
                    },
                    "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
                }
            )
        return docs

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        app = aws_app(ctx)
        kube = ctx.adapters.kube()
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
        plan_docs(kube, render(ctx, CONFIG_FILES, values), result)
        for doc in self.k8s_secret_docs(ctx, creds, values):
            meta = doc["metadata"]
            live = kube.get("v1", "Secret", meta["name"], meta["namespace"])
            if live is None:
                result.changes.append(Change("create", ref(doc), f"keys {', '.join(doc['data']) or '(none)'}"))
            elif (live.get("data") or {}) != doc["data"]:
                result.changes.append(Change("update", ref(doc), "values from Secrets Manager"))
            else:
                result.in_place.append(ref(doc))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        app = aws_app(ctx)
        kube = ctx.adapters.kube()
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
            moved[svc] = {"sm_name": name, "keys": sorted(found), "changed": res["changed"]}
            ctx.log(f"{svc}: {len(found)} credential(s) {'stored in' if res['changed'] else 'already in'} {name}")
        # 2. namespace + ConfigMaps
        docs = render(ctx, CONFIG_FILES, values)
        ctx.intent("kube-apply", refs=[ref(d) for d in docs])
        applied = kube.apply(docs)
        # 3. Kubernetes Secrets, values read back from Secrets Manager (not from the Compose file)
        stored: dict[str, dict[str, str]] = {}
        for svc in creds:
            got = app.get_secret(self.secret_name(ctx, svc))
            if got is None:
                raise StepFailed(
                    f"secret {self.secret_name(ctx, svc)} is missing right after it was written",
                    "Secrets Manager did not return it",
                    f"check it with `aws secretsmanager describe-secret`, then re-run the step ({ctx.env_name})",
                )
            stored[svc] = got
        secret_docs = self.k8s_secret_docs(ctx, stored, values)
        ctx.intent("kube-apply-secrets", refs=[ref(d) for d in secret_docs])
        secret_refs = kube.apply(secret_docs)
        return {
            "namespace": namespace(ctx),
            "compose_file": str(self.compose_path(ctx)),
            "applied": applied,
            "configmaps": [ref(d) for d in docs if d["kind"] == "ConfigMap"],
            "secrets": {
                svc: {
                    "kubernetes": f"{svc}-secrets",
                    **{k: v for k, v in moved.get(svc, {}).items() if k != "changed"},
                }
                for svc in services(ctx)
            },
            "kubernetes_secrets": secret_refs,
            "moved_count": sum(len(c) for c in creds.values()),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        app = aws_app(ctx)
        kube = ctx.adapters.kube()
        values, _ = self.values(ctx)
        ns = namespace(ctx)
        checks = [
            Check(f"namespace {ns}", live_object(kube, "v1", "Namespace", ns) is not None, None, "exists (has objects)")
        ]
        if "rds_endpoint" in values and "redis_endpoint" in values:
            for doc in render(ctx, CONFIG_FILES, values):
                if doc["kind"] != "ConfigMap":
                    continue
                live = kube.get("v1", "ConfigMap", doc["metadata"]["name"], ns)
                ok = live is not None and (live.get("data") or {}) == doc.get("data")
                checks.append(Check(ref(doc), ok, "matches" if ok else "differs or missing", "rendered data"))
        creds = self.credentials(ctx)
        stored = {svc: app.get_secret(self.secret_name(ctx, svc)) or {} for svc in creds}
        for svc, found in creds.items():
            in_sm = set(stored[svc]) == set(found)
            checks.append(
                Check(f"Secrets Manager {self.secret_name(ctx, svc)}", in_sm, sorted(stored[svc]), sorted(found))
            )
        for doc in self.k8s_secret_docs(ctx, stored, values):
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

    def rollback(self, ctx: StepContext) -> None:
        kube = ctx.adapters.kube()
        ns = namespace(ctx)
        for svc in services(ctx):
            ctx.intent("kube-delete", ref=f"Secret/{ns}/{svc}-secrets")
            kube.delete("v1", "Secret", f"{svc}-secrets", ns)
        for name in ["betterprompts-config", *(f"{svc}-config" for svc in SERVICES)]:
            ctx.intent("kube-delete", ref=f"ConfigMap/{ns}/{name}")
            kube.delete("v1", "ConfigMap", name, ns)
        ctx.log("k8s-config rollback: Secrets Manager secrets and the namespace are kept (harmless, audited)")
