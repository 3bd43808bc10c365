"""Helpers shared by the phase-3 steps (no step lives here)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlsplit, urlunsplit

from migrate.errors import BpmError, ConfigError
from migrate.redact import is_secret_key, register
from migrate.step import Change, Finding, PlanResult, RetryPolicy, StepContext

if TYPE_CHECKING:
    from migrate.adapters.aws_app import AwsAppAdapter
    from migrate.adapters.http import HttpAdapter
    from migrate.adapters.kube import KubeAdapter


PHASE = 3


SERVICES = ("frontend", "api-gateway", "intent-classifier", "technique-selector", "prompt-generator")


APP_TEMPLATES = "k8s/app"


CONFIG_FILES = ("00-namespace.yaml", "10-configmaps.yaml")


WORKLOAD_FILES = (
    "20-frontend.yaml",
    "21-api-gateway.yaml",
    "22-intent-classifier.yaml",
    "23-technique-selector.yaml",
    "24-prompt-generator.yaml",
)


HPA_FILE = "30-hpa.yaml"


INGRESS_FILE = "40-ingress.yaml"


DEFAULT_COMPOSE = "templates/compose/docker-compose.yml"


MANAGED_TAG = {"managed-by": "bpmigrate"}


AWS_RETRY = RetryPolicy(attempts=3, wait_initial=2.0, wait_max=20.0)


_URL_CRED_RE = re.compile(r"://[^/@\s]*:[^@/\s]+@")


def image_key(service: str) -> str:
    """The template placeholder of a service's image: ``api-gateway`` -> ``api_gateway_image``."""
    return service.replace("-", "_") + "_image"


def services(ctx: StepContext) -> list[str]:
    return [str(s) for s in ctx.setting("services", SERVICES)]


def namespace(ctx: StepContext) -> str:
    return str(ctx.setting("namespace") or ctx.env.kube.namespace)


def aws_app(ctx: StepContext) -> AwsAppAdapter:
    return cast("AwsAppAdapter", ctx.adapters.get("aws_app"))


def kube_unreachable(ctx: StepContext) -> str | None:
    try:
        return ctx.adapters.kube().unreachable_reason()
    except BpmError as exc:
        return f"no Kubernetes cluster: {exc.what} ({exc.next_cmd})"


def template(ctx: StepContext, name: str) -> Path:
    return ctx.templates_dir / APP_TEMPLATES / name


def render(ctx: StepContext, files: tuple[str, ...], values: Mapping[str, Any]) -> list[dict[str, Any]]:
    from migrate.adapters.manifests import render as render_manifests

    docs: list[dict[str, Any]] = []
    for name in files:
        docs.extend(render_manifests(template(ctx, name), values))
    return docs


def ref(doc: Mapping[str, Any]) -> str:
    from migrate.adapters.kube import ref_of

    return ref_of(doc)


def contains(desired: Any, live: Any) -> bool:
    """True when every field of ``desired`` has the same value in ``live`` (what server-side apply would change)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(k in live and contains(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(contains(d, v) for d, v in zip(desired, live, strict=True))
        )
    if isinstance(desired, (int, float)) and isinstance(live, (int, float)):
        return desired == live
    return str(desired) == str(live)


def live_object(
    kube: KubeAdapter, api_version: str, kind: str, name: str, ns: str | None = None
) -> dict[str, Any] | None:
    """The live object, or None.

    A Namespace is inferred from the objects inside it (a ConfigMap cannot exist in a missing namespace): the
    API-server test double in tests/ cannot serve reads of Namespace objects, and bpmigrate only needs existence.
    """
    if kind == "Namespace":
        present = kube.list("v1", "ConfigMap", name) or kube.list("v1", "Secret", name)
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} if present else None
    return kube.get(api_version, kind, name, ns)


def plan_docs(kube: KubeAdapter, docs: list[dict[str, Any]], result: PlanResult) -> None:
    """Add one Change (create/update) or in_place entry per manifest, comparing with the live objects."""
    for doc in docs:
        meta = doc.get("metadata") or {}
        live = live_object(kube, doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
        if live is None:
            result.changes.append(Change("create", ref(doc), "server-side apply"))
        elif doc["kind"] == "Namespace" or contains({k: v for k, v in doc.items() if k != "status"}, live):
            result.in_place.append(ref(doc))
        else:
            result.changes.append(Change("update", ref(doc), "server-side apply (fields differ from the live object)"))


def security_findings(docs: list[dict[str, Any]]) -> list[Finding]:
    """The shared manifest security check (phases/_security.py): real findings block, exempted ones inform."""
    from .._security import check_manifests

    out = []
    for f in check_manifests((APP_TEMPLATES, d) for d in docs):
        level = "info" if f.exempted else "block"
        out.append(Finding(level, f"security: {f}", f.fix))
    return out


def split_host_port(value: str, default_port: int) -> tuple[str, int]:
    """``host:port`` (as RDS ``endpoint`` attributes are) or ``host``."""
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and host and "]" not in port:
        return host, int(port)
    return value, default_port


def data_endpoints(ctx: StepContext) -> tuple[dict[str, Any], list[str]]:
    """RDS/ElastiCache endpoints for the ConfigMaps: data-phase outputs, else the environment's target settings."""
    values: dict[str, Any] = {}
    unknown: list[str] = []
    pg = ctx.env.postgres.get("target")
    rd = ctx.env.redis.get("target")
    rds_host = ctx.output("rds", "endpoint", None)
    rds_port = ctx.output("rds", "port", None)
    if not rds_host and pg is not None and pg.host != "from-terraform":
        rds_host, rds_port = pg.host, rds_port or pg.port
    if rds_host:
        host, port = split_host_port(str(rds_host), int(rds_port or 5432))
        values["rds_endpoint"], values["rds_port"] = host, int(rds_port or port)
    else:
        unknown.append("RDS endpoint (output 'endpoint' of step rds)")
    cache_host = ctx.output("elasticache", "endpoint", None)
    cache_port = ctx.output("elasticache", "port", None)
    if not cache_host and rd is not None and rd.host != "from-terraform":
        cache_host, cache_port = rd.host, cache_port or rd.port
    if cache_host:
        host, port = split_host_port(str(cache_host), int(cache_port or 6379))
        values["redis_endpoint"], values["redis_port"] = host, int(cache_port or port)
    else:
        unknown.append("ElastiCache endpoint (output 'endpoint' of step elasticache)")
    values["database_name"] = pg.dbname if pg is not None else "betterprompts"
    values["database_sslmode"] = ctx.setting("database_sslmode", "disable" if ctx.is_sandbox else "require")
    values["redis_tls"] = bool(rd.tls) if rd is not None else not ctx.is_sandbox
    return values, unknown


def base_values(ctx: StepContext) -> dict[str, Any]:
    return {"namespace": namespace(ctx), "environment": ctx.env_name, "domain": ctx.env.domain}


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def record_artifact(ctx: StepContext, kind: str, path: Path) -> None:
    blob = path.read_bytes()
    ctx.artifact(kind, path, hashlib.sha256(blob).hexdigest(), len(blob))


def text_table(rows: list[tuple[str, str]], headers: tuple[str, str] = ("metric", "value")) -> str:
    width = max(len(headers[0]), *(len(r[0]) for r in rows)) if rows else len(headers[0])
    lines = [f"{headers[0]:<{width}}  {headers[1]}", f"{'-' * width}  {'-' * max(len(headers[1]), 8)}"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def compose_environment(body: Mapping[str, Any]) -> dict[str, str]:
    env = body.get("environment") or {}
    out: dict[str, str] = {}
    if isinstance(env, Mapping):
        for key, value in env.items():
            if value is not None:
                out[str(key)] = str(value)
    elif isinstance(env, list):
        for item in env:
            key, sep, value = str(item).partition("=")
            if sep:
                out[key] = value
    return out


def compose_credentials(text: str, *, source: str = "docker-compose.yml") -> dict[str, dict[str, str]]:
    """Plaintext credentials per Compose service: secret-looking variables, URLs with passwords, --requirepass.

    Every value is registered for redaction before this function returns.
    """
    import yaml

    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML", str(exc)[:300], f"fix {source}") from None
    found: dict[str, dict[str, str]] = {}
    for svc, body in (doc.get("services") or {}).items():
        if not isinstance(body, Mapping):
            continue
        creds: dict[str, str] = {}
        for key, value in compose_environment(body).items():
            if value and (is_secret_key(key) or _URL_CRED_RE.search(value)):
                creds[key] = value
        command = body.get("command")
        args = command.split() if isinstance(command, str) else [str(a) for a in command or []]
        for i, arg in enumerate(args[:-1]):
            if arg == "--requirepass":
                creds["REDIS_PASSWORD"] = args[i + 1]
        for value in creds.values():
            register(value)
        if creds:
            found[str(svc)] = creds
    return found


DB_PASSWORD_KEYS = ("DATABASE_PASSWORD", "DB_PASSWORD", "POSTGRES_PASSWORD", "PGPASSWORD")


def with_database_login(data: Mapping[str, str], login: tuple[str, str], db_hosts: set[str]) -> dict[str, str]:
    """Replace the Compose database credentials with the target database's (password keys and database URLs)."""
    user, password = login
    out = dict(data)
    for key, value in data.items():
        if key in DB_PASSWORD_KEYS:
            out[key] = password
        elif "://" in value:
            parts = urlsplit(value)
            hostport = parts.netloc.rpartition("@")[2]
            if parts.scheme.startswith("postgres") and (hostport in db_hosts or parts.hostname in db_hosts):
                login_part = f"{quote(user or parts.username or '', safe='')}:{quote(password, safe='')}"
                out[key] = urlunsplit(
                    (parts.scheme, f"{login_part}@{hostport}", parts.path, parts.query, parts.fragment)
                )
    return out


def rewrite_url_hosts(value: str, host_map: Mapping[str, str]) -> str:
    """Point a Compose URL (``postgres://u:p@postgres:5432/db``) at the AWS endpoint mapped for its host."""
    if "://" not in value:
        return value
    parts = urlsplit(value)
    if not parts.hostname or parts.hostname not in host_map:
        return value
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@{host_map[parts.hostname]}" if userinfo else host_map[parts.hostname]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_VOLATILE_META = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink")


def clean_live(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A live object as a manifest that can be re-applied (no status, no server-managed metadata)."""
    out: dict[str, Any] = json.loads(json.dumps(dict(obj)))
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in _VOLATILE_META:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    annotations.pop("deployment.kubernetes.io/revision", None)
    if not annotations:
        meta.pop("annotations", None)
    if out.get("kind") == "Service":
        spec = out.get("spec") or {}
        for key in ("clusterIP", "clusterIPs"):
            spec.pop(key, None)
    return out


def container_images(doc: Mapping[str, Any]) -> list[str]:
    pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [str(c.get("image")) for c in pod.get("containers") or []]


def endpoints(ctx: StepContext) -> dict[str, str]:
    raw = ctx.setting("endpoints", {}) or {}
    return {str(k): str(v).rstrip("/") for k, v in raw.items() if v}


def http(ctx: StepContext, urls: list[str]) -> HttpAdapter:
    adapter = ctx.adapters.http()
    for url in urls:
        adapter.allow(url)  # configured in migrate.toml for this step: an allowed target
    return adapter


def repo_names(ctx: StepContext) -> dict[str, str]:
    """The ECR repository per service (``repository_prefix``/<service>)."""
    prefix = str(ctx.setting("repository_prefix", "betterprompts")).strip("/")
    return {svc: f"{prefix}/{svc}" if prefix else svc for svc in services(ctx)}
