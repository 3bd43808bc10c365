"""Phase 3 — the application on EKS: ECR repositories and images, configuration and secrets, Deployments and
Services, HPAs, the ALB ingress with its ACM certificate, smoke checks and the load-test gate.

Kubernetes steps skip (with the reason and how to provide a cluster) when no cluster is reachable; HTTP steps skip
when no service endpoint is configured. Secrets read from the Compose file are registered for redaction the moment
they are read and only ever leave this module towards AWS Secrets Manager and Kubernetes Secrets.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlsplit, urlunsplit

from migrate.errors import AdapterError, BpmError, ConfigError, DependencyNotReady, StepFailed
from migrate.redact import is_secret_key, register
from migrate.step import Change, Check, Finding, Outputs, PlanResult, RetryPolicy, Reversibility, Step, StepContext

if TYPE_CHECKING:
    from migrate.adapters.aws_app import AwsAppAdapter
    from migrate.adapters.builder import Builder
    from migrate.adapters.http import HttpAdapter, LatencyStats
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
#: AWS / Kubernetes API blips (throttling, 5xx, connection resets) are retried; every step here is idempotent
AWS_RETRY = RetryPolicy(attempts=3, wait_initial=2.0, wait_max=20.0)
_URL_CRED_RE = re.compile(r"://[^/@\s]*:[^@/\s]+@")


# -- shared helpers ------------------------------------------------------------------------------------------------
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
    from phases._security import check_manifests

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


# -- ecr-repos -----------------------------------------------------------------------------------------------------
class EcrRepos(Step):
    """ECR repositories, one per service, with scan-on-push and a lifecycle policy.

    Creates (or adopts) `<prefix>/<service>` for frontend, api-gateway, intent-classifier, technique-selector and
    prompt-generator with image scanning on push, immutable tags (setting `tag_mutability`), AES256 encryption and
    a lifecycle policy (untagged images expire after `untagged_days`, only the newest `keep_images` are kept).
    Verify describes each repository and reads its lifecycle policy back.
    Rollback deletes the repositories bpmigrate created (tag managed-by=bpmigrate) that hold no images; repositories
    with images are kept and reported unless `rollback_delete_images = true`.
    """

    id = "ecr-repos"
    retry = AWS_RETRY
    phase = PHASE
    depends_on = ()
    reversibility = Reversibility.COMPENSABLE

    def repo_names(self, ctx: StepContext) -> dict[str, str]:
        prefix = str(ctx.setting("repository_prefix", "betterprompts")).strip("/")
        return {svc: f"{prefix}/{svc}" if prefix else svc for svc in services(ctx)}

    def policy(self, ctx: StepContext) -> dict[str, Any]:
        from migrate.adapters.aws_app import lifecycle_policy

        return lifecycle_policy(int(ctx.setting("keep_images", 30)), int(ctx.setting("untagged_days", 7)))

    def plan(self, ctx: StepContext) -> PlanResult:
        app = aws_app(ctx)
        policy = self.policy(ctx)
        result = PlanResult(data={"repositories": self.repo_names(ctx), "lifecycle_policy": policy})
        for name in self.repo_names(ctx).values():
            repo = app.describe_repository(name)
            if repo is None:
                result.changes.append(Change("create", f"ecr:{name}", "scan-on-push, lifecycle policy"))
                continue
            problems = []
            if not repo.get("imageScanningConfiguration", {}).get("scanOnPush"):
                problems.append("enable scan-on-push")
            if app.get_lifecycle_policy(name) != policy:
                problems.append("set lifecycle policy")
            if problems:
                result.changes.append(Change("update", f"ecr:{name}", ", ".join(problems)))
            else:
                result.in_place.append(f"ecr:{name}")
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        app = aws_app(ctx)
        policy = self.policy(ctx)
        mutability = str(ctx.setting("tag_mutability", "IMMUTABLE"))
        out: dict[str, dict[str, str]] = {}
        for svc, name in self.repo_names(ctx).items():
            ctx.intent("ecr-create-repository", repository=name, scan_on_push=True, tag_mutability=mutability)
            repo = app.create_repository(name, scan_on_push=True, tag_mutability=mutability, tags=MANAGED_TAG)
            if app.get_lifecycle_policy(name) != policy:
                ctx.intent("ecr-put-lifecycle-policy", repository=name)
                app.put_lifecycle_policy(name, policy)
            out[svc] = {"name": name, "uri": str(repo["repositoryUri"]), "arn": str(repo["repositoryArn"])}
            ctx.log(f"ECR repository {name}: {repo['repositoryUri']}")
        registry = next(iter(out.values()))["uri"].split("/", 1)[0] if out else ""
        return {"repositories": out, "registry": registry}

    def verify(self, ctx: StepContext) -> list[Check]:
        app = aws_app(ctx)
        policy = self.policy(ctx)
        checks: list[Check] = []
        for name in self.repo_names(ctx).values():
            repo = app.describe_repository(name)
            checks.append(Check(f"ecr:{name} exists", repo is not None, bool(repo), True))
            if repo is None:
                continue
            scan = bool(repo.get("imageScanningConfiguration", {}).get("scanOnPush"))
            checks.append(Check(f"ecr:{name} scan-on-push", scan, scan, True))
            live = app.get_lifecycle_policy(name)
            checks.append(
                Check(
                    f"ecr:{name} lifecycle policy",
                    live == policy,
                    [r.get("description") for r in (live or {}).get("rules", [])],
                    [r["description"] for r in policy["rules"]],
                )
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        app = aws_app(ctx)
        delete_images = bool(ctx.setting("rollback_delete_images", False))
        for name in self.repo_names(ctx).values():
            repo = app.describe_repository(name)
            if repo is None:
                continue
            tags = app.repository_tags(str(repo["repositoryArn"]))
            if tags.get("managed-by") != "bpmigrate":
                ctx.log(f"ECR repository {name} was not created by bpmigrate: kept")
                continue
            images = app.image_tags(name)
            if images and not delete_images:
                ctx.log(
                    f"ECR repository {name} holds {len(images)} tagged image(s): kept "
                    "(set [steps.ecr-repos] rollback_delete_images = true to delete them too)"
                )
                continue
            ctx.intent("ecr-delete-repository", repository=name, images=len(images))
            app.delete_repository(name, force=bool(images))


# -- images --------------------------------------------------------------------------------------------------------
class Images(Step):
    """Service images in ECR: build and push them, or take already-pushed tags from the configuration.

    With a working container builder (a docker engine that answers `docker info`, or buildah) and `source_dir`
    set, each service is built from `<source_dir>/<context>` and pushed with tag `tag`. Without one, the plan says
    so and the step uses `[steps.images] tags = {service = "tag"}` (or `tag` for all), requiring each manifest to be
    in ECR already. In the sandbox (moto), a missing manifest is put into moto's ECR with `put_image` as a stand-in
    for a pushed image (no image is built; the plan says so).
    Verify reads each image back with DescribeImages and compares digests.
    """

    id = "images"
    retry = AWS_RETRY
    phase = PHASE
    depends_on = ("ecr-repos",)
    reversibility = Reversibility.COMPENSABLE

    def builder(self, ctx: StepContext) -> Builder:
        return cast("Builder", ctx.adapters.get("builder"))

    def repo_names(self, ctx: StepContext) -> dict[str, str]:
        recorded = ctx.output("ecr-repos", "repositories", None)
        if isinstance(recorded, Mapping):
            return {svc: str(recorded[svc]["name"]) for svc in services(ctx) if svc in recorded}
        return EcrRepos().repo_names(ctx)

    def tags(self, ctx: StepContext) -> dict[str, str | None]:
        per_service = ctx.setting("tags", {}) or {}
        default = ctx.setting("tag") or ("sandbox" if ctx.is_sandbox else None)
        return {svc: (str(per_service[svc]) if svc in per_service else default) for svc in services(ctx)}

    def mode(self, ctx: StepContext) -> tuple[str, str]:
        info = self.builder(ctx).detect()
        if info.available and ctx.setting("source_dir") and ctx.setting("build", True):
            return "build", info.describe()
        return "pushed-tags", info.describe()

    def plan(self, ctx: StepContext) -> PlanResult:
        app = aws_app(ctx)
        mode, builder = self.mode(ctx)
        tags = self.tags(ctx)
        repos = self.repo_names(ctx)
        result = PlanResult(data={"mode": mode, "builder": builder, "tags": tags, "repositories": repos})
        if mode == "pushed-tags":
            why = builder if not builder.startswith(("docker", "buildah")) else "no [steps.images] source_dir set"
            result.findings.append(
                Finding(
                    "info",
                    f"container builder unavailable for this run ({why}): images are taken from configured tags",
                    "to build here: start a Docker engine (or install buildah) and set [steps.images] source_dir",
                )
            )
        for svc, repo in repos.items():
            tag = tags.get(svc)
            if not tag:
                result.findings.append(
                    Finding(
                        "block",
                        f"no image tag configured for {svc}",
                        f'set [steps.images] tags = {{ {svc} = "<tag>" }} (or tag = "<tag>") in migrate.toml',
                    )
                )
                continue
            if tag == "latest":
                result.findings.append(Finding("warn", f"{svc} uses the tag 'latest'", "use an immutable version tag"))
            present = app.image_manifest(repo, tag)
            if present is not None:
                result.in_place.append(f"{repo}:{tag} ({present['digest']})")
            elif mode == "build":
                result.changes.append(Change("create", f"{repo}:{tag}", f"build and push with {builder}"))
            elif ctx.is_sandbox and app.is_emulated:
                result.changes.append(Change("create", f"{repo}:{tag}", "sandbox stand-in manifest (put_image)"))
            else:
                result.findings.append(
                    Finding(
                        "block",
                        f"image {repo}:{tag} is not in ECR and no builder is available ({builder})",
                        f"push it (docker push <registry>/{repo}:{tag}) or configure a tag that exists",
                    )
                )
        if ctx.is_sandbox and app.is_emulated and mode == "pushed-tags" and result.changes:
            result.findings.append(
                Finding(
                    "info",
                    "sandbox: no image is built; a small OCI manifest is put into moto's ECR with put_image to "
                    "stand for each pushed image",
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        app = aws_app(ctx)
        mode, builder_desc = self.mode(ctx)
        tags = self.tags(ctx)
        images: dict[str, dict[str, Any]] = {}
        logged_in = False
        for svc, repo_name in self.repo_names(ctx).items():
            tag = tags.get(svc)
            if not tag:
                raise ConfigError(
                    f"no image tag configured for {svc}",
                    "without a builder the images step needs the tags already pushed to ECR",
                    f'set [steps.images] tags = {{ {svc} = "<tag>" }} in migrate.toml',
                )
            repo = app.describe_repository(repo_name)
            if repo is None:
                raise DependencyNotReady(
                    f"ECR repository {repo_name} does not exist",
                    "the ecr-repos step creates it",
                    f"bpmigrate apply --step ecr-repos --env {ctx.env_name}",
                )
            uri = str(repo["repositoryUri"])
            manifest = app.image_manifest(repo_name, tag)
            if manifest is None and mode == "build":
                builder = self.builder(ctx)
                if not logged_in:
                    host, user, password = app.registry_login()
                    ctx.intent("registry-login", registry=host)
                    builder.login(host, user, password)
                    logged_in = True
                contexts = ctx.setting("contexts", {}) or {}
                source = Path(str(ctx.setting("source_dir"))).expanduser()
                context = source / str(contexts.get(svc, svc))
                ctx.intent("build-push-image", service=svc, image=f"{uri}:{tag}", context=str(context))
                builder.build(context, f"{uri}:{tag}")
                builder.push(f"{uri}:{tag}")
                manifest = app.image_manifest(repo_name, tag)
            elif manifest is None and ctx.is_sandbox and app.is_emulated:
                ctx.intent("ecr-put-standin-manifest", repository=repo_name, tag=tag)
                app.put_standin_manifest(repo_name, tag)
                ctx.log(f"sandbox: stand-in manifest for {repo_name}:{tag} put into moto's ECR (no image built)")
                manifest = app.image_manifest(repo_name, tag)
            if manifest is None:
                raise StepFailed(
                    f"image {repo_name}:{tag} is not in ECR",
                    f"no image was pushed with that tag and no builder is available ({builder_desc})",
                    f"push {uri}:{tag} (or fix [steps.images] tags), then `bpmigrate apply --step images "
                    f"--env {ctx.env_name}`",
                )
            images[svc] = {
                "repository": repo_name,
                "uri": uri,
                "tag": tag,
                "digest": str(manifest["digest"]),
                "image": f"{uri}:{tag}",
                "stand_in": ctx.is_sandbox and app.is_emulated and mode == "pushed-tags" and app.is_standin(manifest),
            }
        return {"mode": mode, "builder": builder_desc, "images": images}

    def verify(self, ctx: StepContext) -> list[Check]:
        app = aws_app(ctx)
        recorded = ctx.output(self.id, "images", None) or {}
        tags = self.tags(ctx)
        checks: list[Check] = []
        for svc, repo_name in self.repo_names(ctx).items():
            tag = (recorded.get(svc) or {}).get("tag") or tags.get(svc)
            if not tag:
                checks.append(Check(f"image {svc}", False, None, "a configured tag", "no tag configured"))
                continue
            described = app.describe_image(repo_name, str(tag))
            expected = (recorded.get(svc) or {}).get("digest")
            digest = (described or {}).get("imageDigest")
            ok = described is not None and (expected is None or digest == expected)
            checks.append(Check(f"image {repo_name}:{tag} in ECR", ok, digest, expected or "present"))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Pushed images are kept; sandbox stand-in manifests (not images) are removed so ecr-repos can go too."""
        app = aws_app(ctx)
        recorded = ctx.output(self.id, "images", None) or {}
        removed = 0
        if ctx.is_sandbox and app.is_emulated:
            for svc, image in sorted(recorded.items()):
                manifest = app.image_manifest(str(image["repository"]), str(image["tag"]))
                if manifest is not None and app.is_standin(manifest):
                    ctx.intent("ecr-delete-standin-manifest", service=svc, image=image["image"])
                    app.delete_image(str(image["repository"]), str(image["tag"]))
                    removed += 1
        ctx.log(
            f"images: {removed} sandbox stand-in manifest(s) removed; pushed images are kept "
            "(the ECR lifecycle policy expires old ones)"
        )


# -- compose credentials -------------------------------------------------------------------------------------------
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


# -- k8s-config ----------------------------------------------------------------------------------------------------
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


# -- k8s-deploy ----------------------------------------------------------------------------------------------------
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


class K8sDeploy(Step):
    """Deployments and Services for every service, rolled out with a timeout; rollback = the quick rollback.

    Renders templates/k8s/app/2*.yaml with the image references recorded by `images` and the namespace, applies
    them server-side, and waits for every Deployment to roll out (observedGeneration, updated and available
    replicas) within `rollout_timeout` seconds — a timeout names the pods' reasons (e.g. ImagePullBackOff).
    Before applying, the live manifests (and so the images) are recorded in
    state/<env>/artifacts/k8s-deploy/; rollback re-applies exactly those and deletes what did not exist before.
    """

    id = "k8s-deploy"
    retry = AWS_RETRY
    phase = PHASE
    depends_on = ("images", "k8s-config")
    reversibility = Reversibility.REVERSIBLE

    def skip_reason(self, ctx: StepContext) -> str | None:
        return kube_unreachable(ctx)

    def images(self, ctx: StepContext) -> dict[str, str] | None:
        recorded = ctx.output("images", "images", None)
        if not isinstance(recorded, Mapping):
            return None
        missing = [svc for svc in services(ctx) if svc not in recorded]
        if missing:
            return None
        return {svc: str(recorded[svc]["image"]) for svc in services(ctx)}

    def docs(self, ctx: StepContext, images: Mapping[str, str]) -> list[dict[str, Any]]:
        values = base_values(ctx)
        values.update({image_key(svc): image for svc, image in images.items()})
        files = tuple(str(f) for f in ctx.setting("templates", WORKLOAD_FILES))
        return render(ctx, files, values)

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        images = self.images(ctx)
        if images is None:
            return PlanResult(
                changes=[Change("update", f"Deployments/Services in {namespace(ctx)}", "images from step images")],
                unknown=["image references (outputs of step images)"],
            )
        result = PlanResult(data={"images": images, "namespace": namespace(ctx)})
        kube = ctx.adapters.kube()
        docs = self.docs(ctx, images)
        result.findings.extend(security_findings(docs))
        plan_docs(kube, docs, result)
        for doc in docs:
            if doc["kind"] != "Deployment":
                continue
            live = kube.get("apps/v1", "Deployment", doc["metadata"]["name"], doc["metadata"]["namespace"])
            if live is not None and container_images(live) != container_images(doc):
                result.findings.append(
                    Finding("info", f"{ref(doc)}: {container_images(live)} -> {container_images(doc)}")
                )
        return result

    # the rollback point: what was live before this deployment, kept across crashes and re-runs
    def point_path(self, ctx: StepContext) -> Path:
        return ctx.artifacts_dir() / "rollback-point.json"

    def load_point(self, ctx: StepContext) -> dict[str, Any] | None:
        path = self.point_path(ctx)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None

    def snapshot(self, ctx: StepContext, docs: list[dict[str, Any]]) -> dict[str, Any]:
        """Record the previously-live objects before applying (reused when a run is retried)."""
        fingerprint = hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()[:16]
        refs = [ref(d) for d in docs]
        point = self.load_point(ctx)
        if point is not None and (point.get("fingerprint") == fingerprint or not point.get("completed")):
            # same deployment re-run, or the last one never finished: the state before it is still the way back
            point["fingerprint"] = fingerprint
            point["refs"] = sorted(set(point.get("refs", [])) | set(refs))
            point["completed"] = False
        else:
            kube = ctx.adapters.kube()
            previous: dict[str, dict[str, Any]] = {}
            for doc in docs:
                meta = doc["metadata"]
                live = live_object(kube, doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
                if live is not None:
                    live.setdefault("apiVersion", doc["apiVersion"])
                    live.setdefault("kind", doc["kind"])
                    previous[ref(doc)] = clean_live(live)
            snap = ctx.artifacts_dir() / f"previous-{fingerprint}.json"
            ctx.intent("record-previous-manifests", file=str(snap), objects=sorted(previous))
            write_json_atomic(snap, previous)
            record_artifact(ctx, "k8s-previous-manifests", snap)
            point = {"fingerprint": fingerprint, "snapshot": snap.name, "refs": sorted(refs), "completed": False}
        point["recorded_at"] = time.time()
        write_json_atomic(self.point_path(ctx), point)
        ctx.checkpoints.put("rollback-point", {k: v for k, v in point.items() if k != "recorded_at"})
        return point

    def previous_objects(self, ctx: StepContext, point: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        path = ctx.artifacts_dir() / str(point["snapshot"])
        if not path.is_file():
            raise StepFailed(
                f"the recorded previous manifests {path} are missing",
                "the rollback point names a snapshot file that is no longer there",
                "restore it from a backup of the state directory, or redeploy a known-good version with "
                f"`bpmigrate apply --step k8s-deploy --env {ctx.env_name}`",
            )
        data = json.loads(path.read_text())
        return dict(data) if isinstance(data, dict) else {}

    def wait(self, ctx: StepContext, deployments: list[tuple[str, str]], timeout: float) -> None:
        kube = ctx.adapters.kube()
        deadline = time.monotonic() + timeout
        for ns, name in deployments:
            remaining = max(1.0, deadline - time.monotonic())
            try:
                kube.wait_rollout("Deployment", name, ns, remaining)
            except StepFailed as exc:
                raise StepFailed(
                    exc.what,
                    exc.why,
                    f"kubectl -n {ns} describe deployment {name}; restore the previous version with "
                    f"`bpmigrate rollback --step {self.id} --env {ctx.env_name}` (quick rollback), or fix the cause "
                    f"and re-run `bpmigrate apply --step {self.id} --env {ctx.env_name}`",
                ) from None

    def apply(self, ctx: StepContext) -> Outputs:
        images = self.images(ctx)
        if images is None:
            raise DependencyNotReady(
                "k8s-deploy needs the image references recorded by step images",
                "the images step has not been applied in this environment",
                f"bpmigrate apply --step images --env {ctx.env_name}",
            )
        kube = ctx.adapters.kube()
        docs = self.docs(ctx, images)
        point = self.snapshot(ctx, docs)
        previous = self.previous_objects(ctx, point)
        refs = [ref(d) for d in docs]
        ctx.intent("kube-apply", refs=refs, images=images)
        kube.apply(docs)
        deployments = [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Deployment"]
        self.wait(ctx, deployments, float(ctx.setting("rollout_timeout", 600)))
        point["completed"] = True
        write_json_atomic(self.point_path(ctx), point)
        return {
            "namespace": namespace(ctx),
            "deployments": [ref(d) for d in docs if d["kind"] == "Deployment"],
            "services": [ref(d) for d in docs if d["kind"] == "Service"],
            "images": images,
            "previous_images": {
                r.split("/")[-1]: next(iter(container_images(previous[r])), None) if r in previous else None
                for r in refs
                if r.startswith("Deployment/")
            },
            "rollback_point": str(self.point_path(ctx)),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.kube import rollout_status

        images = self.images(ctx)
        if images is None:
            return [Check("image references recorded by step images", False, None, "recorded")]
        kube = ctx.adapters.kube()
        checks: list[Check] = []
        for doc in self.docs(ctx, images):
            meta = doc["metadata"]
            live = kube.get(doc["apiVersion"], doc["kind"], meta["name"], meta["namespace"])
            if live is None:
                checks.append(Check(ref(doc), False, "missing", "exists"))
                continue
            if doc["kind"] == "Deployment":
                live.setdefault("kind", "Deployment")
                want = container_images(doc)
                have = container_images(live)
                checks.append(Check(f"{ref(doc)} image", have == want, have, want))
                done, detail = rollout_status(live)
                checks.append(Check(f"{ref(doc)} rolled out", done, detail, "all replicas updated and available"))
            elif doc["kind"] == "Service":
                selector = (live.get("spec") or {}).get("selector")
                want_sel = (doc.get("spec") or {}).get("selector")
                checks.append(Check(f"{ref(doc)} selector", selector == want_sel, selector, want_sel))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        point = self.load_point(ctx)
        if point is None:
            ctx.log("k8s-deploy rollback: no rollback point recorded (nothing was applied): nothing to do")
            return
        kube = ctx.adapters.kube()
        previous = self.previous_objects(ctx, point)
        restore = [previous[r] for r in point.get("refs", []) if r in previous]
        absent = [r for r in point.get("refs", []) if r not in previous]
        if restore:
            ctx.intent("kube-restore-previous", refs=[ref(d) for d in restore])
            kube.apply(restore)
        for r in absent:
            kind, ns, name = r.split("/", 2)
            api = "apps/v1" if kind == "Deployment" else "v1"
            ctx.intent("kube-delete", ref=r)
            kube.delete(api, kind, name, ns)
        deployments = [
            (d["metadata"]["namespace"], d["metadata"]["name"]) for d in restore if d["kind"] == "Deployment"
        ]
        self.wait(ctx, deployments, float(ctx.setting("rollout_timeout", 600)))
        point["rolled_back_at"] = time.time()
        point["completed"] = True
        write_json_atomic(self.point_path(ctx), point)
        ctx.log(f"k8s-deploy rollback: restored {len(restore)} object(s), deleted {len(absent)} new one(s)")


# -- hpa -----------------------------------------------------------------------------------------------------------
class Hpa(Step):
    """HorizontalPodAutoscalers (autoscaling/v2, CPU 70 %, 2..10 replicas) that read metrics.

    Applies templates/k8s/app/30-hpa.yaml; verify requires every HPA to report `status.currentMetrics` (i.e.
    metrics-server answers), polling up to `metrics_wait_s` seconds. Rollback deletes the HPAs.
    """

    id = "hpa"
    retry = AWS_RETRY
    phase = PHASE
    depends_on = ("k8s-deploy",)
    reversibility = Reversibility.REVERSIBLE

    def skip_reason(self, ctx: StepContext) -> str | None:
        return kube_unreachable(ctx)

    def docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        return render(ctx, (HPA_FILE,), base_values(ctx))

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        result = PlanResult(unknown=["whether metrics-server reports CPU metrics (checked by verify)"])
        plan_docs(ctx.adapters.kube(), self.docs(ctx), result)
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        docs = self.docs(ctx)
        ctx.intent("kube-apply", refs=[ref(d) for d in docs])
        return {"hpas": ctx.adapters.kube().apply(docs)}

    def verify(self, ctx: StepContext) -> list[Check]:
        kube = ctx.adapters.kube()
        deadline = time.monotonic() + float(ctx.setting("metrics_wait_s", 60))
        while True:
            checks: list[Check] = []
            for doc in self.docs(ctx):
                meta = doc["metadata"]
                live = kube.get("autoscaling/v2", "HorizontalPodAutoscaler", meta["name"], meta["namespace"])
                if live is None:
                    checks.append(Check(ref(doc), False, "missing", "exists"))
                    continue
                spec = live.get("spec") or {}
                bounds = (spec.get("minReplicas"), spec.get("maxReplicas"))
                want = (doc["spec"]["minReplicas"], doc["spec"]["maxReplicas"])
                checks.append(Check(f"{ref(doc)} replicas", bounds == want, bounds, want))
                metrics = (live.get("status") or {}).get("currentMetrics") or []
                cpu = [
                    m.get("resource", {}).get("current", {}).get("averageUtilization")
                    for m in metrics
                    if m.get("type") == "Resource"
                ]
                checks.append(
                    Check(
                        f"{ref(doc)} reads metrics",
                        bool(metrics),
                        f"cpu {cpu[0]} %" if cpu and cpu[0] is not None else ("none" if not metrics else "present"),
                        "status.currentMetrics present",
                        "" if metrics else "no metrics yet: is metrics-server installed and answering?",
                    )
                )
            if all(c.ok for c in checks) or time.monotonic() >= deadline:
                return checks
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    def rollback(self, ctx: StepContext) -> None:
        kube = ctx.adapters.kube()
        for doc in self.docs(ctx):
            ctx.intent("kube-delete", ref=ref(doc))
            kube.delete(
                "autoscaling/v2", "HorizontalPodAutoscaler", doc["metadata"]["name"], doc["metadata"]["namespace"]
            )


# -- ingress -------------------------------------------------------------------------------------------------------
class Ingress(Step):
    """ALB Ingress for api.<domain> with an ACM certificate requested and validated through the API.

    Requests (or reuses) a DNS-validated ACM certificate for the host, writes the validation CNAMEs into Route53
    when `hosted_zone_id` is set (otherwise logs them), waits for ISSUED up to `cert_timeout` seconds, then applies
    the ALB Ingress (ingressClassName alb, certificate-arn annotation). Verify reads the certificate status from ACM
    and the Ingress back from the cluster. Rollback deletes the Ingress and the certificate bpmigrate requested.
    """

    id = "ingress"
    retry = AWS_RETRY
    phase = PHASE
    depends_on = ("k8s-deploy",)
    reversibility = Reversibility.COMPENSABLE

    def skip_reason(self, ctx: StepContext) -> str | None:
        return kube_unreachable(ctx)

    def host(self, ctx: StepContext) -> str:
        return str(ctx.setting("host") or f"api.{ctx.env.domain}")

    def docs(self, ctx: StepContext, arn: str) -> list[dict[str, Any]]:
        values = base_values(ctx)
        values["certificate_arn"] = arn
        return render(ctx, (INGRESS_FILE,), values)

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        host = self.host(ctx)
        arn = aws_app(ctx).find_certificate(host)
        result = PlanResult(data={"host": host, "hosted_zone_id": ctx.setting("hosted_zone_id")})
        if arn is None:
            result.changes.append(Change("create", f"acm:{host}", "DNS-validated certificate"))
            result.changes.append(
                Change("create", f"Ingress/{namespace(ctx)}/betterprompts", "ALB, TLS with the new cert")
            )
            result.unknown.append("the certificate ARN (known after the request)")
        else:
            result.in_place.append(f"acm:{host} ({arn})")
            plan_docs(ctx.adapters.kube(), self.docs(ctx, arn), result)
        if not ctx.setting("hosted_zone_id") and not ctx.is_sandbox:
            result.findings.append(
                Finding(
                    "warn",
                    "no hosted_zone_id: the ACM validation records will be logged for you to create",
                    'set [steps.ingress] hosted_zone_id = "Z..." to let bpmigrate write them to Route53',
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        app = aws_app(ctx)
        host = self.host(ctx)
        token = hashlib.sha256(f"{ctx.env_name}:{host}".encode()).hexdigest()[:32]
        ctx.intent("acm-request-certificate", domain=host, idempotency_id=token)
        arn = app.request_certificate(host, token=token, tags=MANAGED_TAG)
        records = app.validation_records(arn)
        zone = ctx.setting("hosted_zone_id")
        if zone and records:
            ctx.intent("route53-upsert-validation-records", zone=zone, records=[r["Name"] for r in records])
            app.upsert_validation_records(str(zone), records)
        else:
            for rec in records:
                ctx.log(f"ACM validation record to create: {rec['Name']} {rec['Type']} {rec['Value']}")
        default_timeout = 60 if app.is_emulated else 1800
        status = app.wait_certificate_issued(
            arn, timeout=float(ctx.setting("cert_timeout", default_timeout)), poll=0.5 if app.is_emulated else 10.0
        )
        docs = self.docs(ctx, arn)
        ctx.intent("kube-apply", refs=[ref(d) for d in docs], certificate_arn=arn)
        applied = ctx.adapters.kube().apply(docs)
        live = ctx.adapters.kube().get("networking.k8s.io/v1", "Ingress", "betterprompts", namespace(ctx)) or {}
        lb = ((live.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return {
            "certificate_arn": arn,
            "certificate_status": status,
            "host": host,
            "ingress": applied,
            "alb_hostname": (lb[0].get("hostname") if lb else None),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        app = aws_app(ctx)
        host = self.host(ctx)
        arn = app.find_certificate(host)
        cert = app.describe_certificate(arn) if arn else None
        status = (cert or {}).get("Status")
        checks = [Check(f"acm:{host} issued", status == "ISSUED", status, "ISSUED")]
        live = ctx.adapters.kube().get("networking.k8s.io/v1", "Ingress", "betterprompts", namespace(ctx))
        if live is None:
            return [*checks, Check(f"Ingress/{namespace(ctx)}/betterprompts", False, "missing", "exists")]
        spec = live.get("spec") or {}
        annotations = (live.get("metadata") or {}).get("annotations") or {}
        hosts = [r.get("host") for r in spec.get("rules") or []]
        checks.append(
            Check("ingress class", spec.get("ingressClassName") == "alb", spec.get("ingressClassName"), "alb")
        )
        cert_ann = annotations.get("alb.ingress.kubernetes.io/certificate-arn")
        checks.append(Check("ingress certificate", bool(arn) and cert_ann == arn, cert_ann, arn))
        checks.append(Check("ingress host", host in hosts, hosts, host))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        app = aws_app(ctx)
        ctx.intent("kube-delete", ref=f"Ingress/{namespace(ctx)}/betterprompts")
        ctx.adapters.kube().delete("networking.k8s.io/v1", "Ingress", "betterprompts", namespace(ctx))
        arn = app.find_certificate(self.host(ctx))
        if arn and app.certificate_tags(arn).get("managed-by") == "bpmigrate":
            ctx.intent("acm-delete-certificate", certificate_arn=arn)
            try:
                app.delete_certificate(arn)
            except AdapterError as exc:
                ctx.log(
                    f"certificate {arn} not deleted ({exc.what}); it is probably still attached to the ALB being "
                    f"removed: delete it later with `aws acm delete-certificate --certificate-arn {arn}`"
                )


# -- app-smoke -----------------------------------------------------------------------------------------------------
def endpoints(ctx: StepContext) -> dict[str, str]:
    raw = ctx.setting("endpoints", {}) or {}
    return {str(k): str(v).rstrip("/") for k, v in raw.items() if v}


def http(ctx: StepContext, urls: list[str]) -> HttpAdapter:
    adapter = ctx.adapters.http()
    for url in urls:
        adapter.allow(url)  # configured in migrate.toml for this step: an allowed target
    return adapter


class AppSmoke(Step):
    """Smoke and health checks over HTTP against the service endpoints.

    For every endpoint in `[steps.app-smoke] endpoints = {service = "http://..."}` it requires GET
    `<endpoint><health_path>` (default /health) to answer 2xx; extra `checks = [{name, url|service+path, method,
    json, expect_status, expect_contains}]` run too. Results are recorded as outputs; a failed check fails the step.
    """

    id = "app-smoke"
    phase = PHASE
    depends_on = ("k8s-deploy",)
    reversibility = Reversibility.REVERSIBLE

    def skip_reason(self, ctx: StepContext) -> str | None:
        if endpoints(ctx):
            return None
        return (
            "no service endpoints configured: set [steps.app-smoke] endpoints = "
            f'{{ api-gateway = "https://api.{ctx.env.domain}" }} in migrate.toml'
        )

    def checks(self, ctx: StepContext) -> list[dict[str, Any]]:
        eps = endpoints(ctx)
        default_path = str(ctx.setting("health_path", "/health"))
        paths = ctx.setting("health_paths", {}) or {}
        out: list[dict[str, Any]] = [
            {
                "name": f"{svc} health",
                "url": f"{url}{paths.get(svc, default_path)}",
                "method": "GET",
                "expect_status": 200,
            }
            for svc, url in eps.items()
        ]
        for i, extra in enumerate(ctx.setting("checks", []) or []):
            url = extra.get("url") or f"{eps.get(str(extra.get('service')), '')}{extra.get('path', '/')}"
            if "://" not in url:
                raise ConfigError(
                    f"[steps.app-smoke] checks[{i}] has no usable url",
                    f"service {extra.get('service')!r} has no endpoint and no url was given",
                    'give url = "http://..." or a service named in endpoints',
                )
            out.append(
                {
                    "name": str(extra.get("name") or f"check {i + 1}"),
                    "url": url,
                    "method": str(extra.get("method", "GET")).upper(),
                    "json": extra.get("json"),
                    "expect_status": int(extra.get("expect_status", 200)),
                    "expect_contains": extra.get("expect_contains"),
                }
            )
        return out

    def run(self, ctx: StepContext, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        adapter = http(ctx, [c["url"] for c in checks])
        timeout = float(ctx.setting("timeout", 10))
        results = []
        for check in checks:
            entry: dict[str, Any] = {"name": check["name"], "url": check["url"], "method": check["method"]}
            try:
                resp = adapter.request(check["method"], check["url"], timeout=timeout, json_body=check.get("json"))
            except AdapterError as exc:
                entry.update(ok=False, status=None, error=exc.what)
            else:
                ok = resp.status == check["expect_status"]
                if ok and check.get("expect_contains"):
                    ok = str(check["expect_contains"]) in resp.body
                entry.update(ok=ok, status=resp.status, elapsed_ms=resp.elapsed_ms)
                if not ok:
                    entry["error"] = f"HTTP {resp.status} (expected {check['expect_status']}): {resp.body[:120]}"
            results.append(entry)
            ctx.log(
                f"smoke {'ok  ' if entry['ok'] else 'FAIL'} {check['method']} {check['url']}: {entry.get('status')}"
            )
        return results

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        checks = self.checks(ctx)
        http(ctx, [c["url"] for c in checks])  # refuses non-configured targets at plan time already
        return PlanResult(
            changes=[Change("run", f"{c['method']} {c['url']}", c["name"]) for c in checks],
            data={"checks": [{k: v for k, v in c.items() if k != "json"} for c in checks]},
        )

    def apply(self, ctx: StepContext) -> Outputs:
        checks = self.checks(ctx)
        ctx.intent("http-smoke", checks=[c["name"] for c in checks])
        results = self.run(ctx, checks)
        failed = [r for r in results if not r["ok"]]
        if failed:
            raise StepFailed(
                f"{len(failed)} of {len(results)} smoke check(s) failed: " + ", ".join(r["name"] for r in failed),
                "; ".join(f"{r['name']}: {r.get('error')}" for r in failed),
                f"check the pods (kubectl -n {namespace(ctx)} get pods) and logs, then re-run "
                f"`bpmigrate apply --step app-smoke --env {ctx.env_name}`",
            )
        return {"checks": results, "passed": len(results), "endpoints": endpoints(ctx)}

    def verify(self, ctx: StepContext) -> list[Check]:
        health = [c for c in self.checks(ctx) if c["name"].endswith(" health")]
        return [
            Check(r["name"], bool(r["ok"]), r.get("status"), 200, str(r.get("error", "")))
            for r in self.run(ctx, health)
        ]

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("app-smoke changes nothing: nothing to roll back")


# -- load-test -----------------------------------------------------------------------------------------------------
class LoadTest(Step):
    """Load-test gate: configurable RPS for a configurable time; p95 < 200 ms and error rate < 1 % or the step fails.

    Drives `rps` requests per second for `duration_s` seconds (at most `max_requests`) at `url` (default: the
    api-gateway endpoint + `path`), with an asyncio open-loop client. Percentiles are exact over every sample.
    Results are shown as a table, saved as a JSON report artifact and stored as outputs; a missed target fails the
    step with the numbers. Verify re-checks with a short closed-loop probe.
    """

    id = "load-test"
    phase = PHASE
    depends_on = ("app-smoke",)
    reversibility = Reversibility.REVERSIBLE

    def url(self, ctx: StepContext) -> str | None:
        if ctx.setting("url"):
            return str(ctx.setting("url"))
        eps = ctx.setting("endpoints") or ctx.upstream.get("app-smoke", {}).get("endpoints") or {}
        base = dict(eps).get("api-gateway") if isinstance(eps, Mapping) else None
        return f"{str(base).rstrip('/')}{ctx.setting('path', '/health')}" if base else None

    def skip_reason(self, ctx: StepContext) -> str | None:
        if self.url(ctx):
            return None
        return (
            "no load-test endpoint configured: set [steps.load-test] url = "
            f'"https://api.{ctx.env.domain}/health" (or endpoints = {{ api-gateway = "..." }}) in migrate.toml'
        )

    def params(self, ctx: StepContext) -> dict[str, Any]:
        rps = float(ctx.setting("rps", 20))
        duration = float(ctx.setting("duration_s", 30))
        return {
            "url": self.url(ctx),
            "method": str(ctx.setting("method", "GET")).upper(),
            "rps": rps,
            "duration_s": duration,
            "max_requests": int(ctx.setting("max_requests", math.ceil(rps * duration))),
            "timeout": float(ctx.setting("timeout", 5.0)),
            "max_in_flight": int(ctx.setting("max_in_flight", 256)),
            "p95_ms_max": float(ctx.setting("p95_ms", 200.0)),
            "error_rate_max": float(ctx.setting("max_error_rate", 0.01)),
        }

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        p = self.params(ctx)
        http(ctx, [str(p["url"])])
        rows = [
            ("target", f"{p['method']} {p['url']}"),
            ("rate", f"{p['rps']:g} req/s for {p['duration_s']:g} s (at most {p['max_requests']} requests)"),
            ("gate", f"p95 < {p['p95_ms_max']:g} ms and error rate < {p['error_rate_max'] * 100:g} %"),
        ]
        return PlanResult(
            changes=[Change("run", f"load {p['url']}", f"{p['rps']:g} rps x {p['duration_s']:g} s")],
            unknown=["latency and error rate (measured by apply)"],
            data={"params": p, "table": rows},
        )

    def check_gate(self, stats: LatencyStats, p: Mapping[str, Any]) -> list[str]:
        failures = []
        if stats.count == 0:
            failures.append("no request completed")
        if stats.p95_ms >= p["p95_ms_max"]:
            failures.append(f"p95 {stats.p95_ms:.1f} ms >= {p['p95_ms_max']:g} ms")
        if stats.error_rate >= p["error_rate_max"]:
            failures.append(f"error rate {stats.error_rate * 100:.2f} % >= {p['error_rate_max'] * 100:g} %")
        return failures

    def apply(self, ctx: StepContext) -> Outputs:
        p = self.params(ctx)
        url = str(p["url"])
        adapter = http(ctx, [url])
        ctx.intent("http-load", url=url, rps=p["rps"], duration_s=p["duration_s"], max_requests=p["max_requests"])
        with ctx.progress(f"load test {url}", total=p["max_requests"], unit="requests") as bar:
            sent = [0]

            def progress(n: int) -> None:
                bar.advance(n - sent[0])
                sent[0] = n

            stats = adapter.load(
                url,
                rps=p["rps"],
                duration_s=p["duration_s"],
                max_requests=p["max_requests"],
                timeout=p["timeout"],
                method=p["method"],
                max_in_flight=p["max_in_flight"],
                on_progress=progress,
            )
        failures = self.check_gate(stats, p)
        rows = stats.rows()
        rows.append(("gate", "PASSED" if not failures else "FAILED: " + "; ".join(failures)))
        ctx.log("load test results\n" + text_table(rows))
        report = ctx.artifacts_dir() / "load-test-report.json"
        write_json_atomic(report, {"params": p, "stats": stats.to_dict(), "failures": failures, "at": time.time()})
        record_artifact(ctx, "load-test-report", report)
        ctx.metrics(requests=stats.count, errors=stats.errors, p95_ms=stats.p95_ms, p99_ms=stats.p99_ms)
        if failures:
            raise StepFailed(
                "load-test gate failed: " + "; ".join(failures),
                f"{stats.count} requests at {stats.achieved_rps:g} req/s: p50 {stats.p50_ms:.1f} ms, p95 "
                f"{stats.p95_ms:.1f} ms, p99 {stats.p99_ms:.1f} ms, errors {stats.errors} "
                f"({', '.join(f'{k}: {v}' for k, v in sorted(stats.error_kinds.items())) or 'none'}); "
                f"report: {report}",
                "find the slow/failing service (HPA, pod logs, RDS/ElastiCache metrics), fix it, then re-run "
                f"`bpmigrate apply --step load-test --env {ctx.env_name}`",
            )
        return {"params": p, "stats": stats.to_dict(), "table": [list(r) for r in rows], "passed": True}

    def verify(self, ctx: StepContext) -> list[Check]:
        p = self.params(ctx)
        adapter = http(ctx, [str(p["url"])])
        stats = adapter.probe(
            str(p["url"]),
            requests=int(ctx.setting("verify_requests", 20)),
            concurrency=int(ctx.setting("verify_concurrency", 4)),
            timeout=p["timeout"],
            method=p["method"],
        )
        return [
            Check("probe p95", stats.p95_ms < p["p95_ms_max"], stats.p95_ms, f"< {p['p95_ms_max']:g} ms"),
            Check(
                "probe error rate",
                stats.error_rate < p["error_rate_max"],
                stats.error_rate,
                f"< {p['error_rate_max']:g}",
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("load-test changes nothing: nothing to roll back")
