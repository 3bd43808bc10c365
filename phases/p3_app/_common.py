"""Helpers shared by the phase-3 steps (no step lives here)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from pydantic import Field

from migrate.step import Finding, RetryPolicy, StepContext, StepSettings

if TYPE_CHECKING:
    from migrate.adapters.aws_app import AwsAppAdapter
    from migrate.adapters.http import HttpAdapter


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


class AppStep:
    """Mixin of every phase-3 step: the phase number and the retry policy for AWS/Kubernetes API blips."""

    phase: ClassVar[int] = PHASE
    retry: ClassVar[RetryPolicy] = AWS_RETRY


class AppSettings(StepSettings):
    """Settings every phase-3 Kubernetes step shares."""

    namespace: str | None = Field(None, description="the app namespace (default: the environment's kube.namespace)")
    services: list[str] = Field(list(SERVICES), description="the BetterPrompts services this step handles")


class ManifestsDirSettings(AppSettings):
    """For steps that can apply a team's own manifests instead of the bundled templates."""

    manifests_dir: str | None = Field(
        None,
        description="apply the YAML files in this directory (plain, or a kustomize layout) instead of the bundled "
        "templates; relative to the project root",
    )


def image_key(service: str) -> str:
    """The template placeholder of a service's image: ``api-gateway`` -> ``api_gateway_image``."""
    return service.replace("-", "_") + "_image"


def services(ctx: StepContext) -> list[str]:
    model = ctx.settings_model
    configured = getattr(model, "services", None) if model is not None else ctx.settings.get("services")
    return [str(s) for s in (configured or SERVICES)]


def namespace(ctx: StepContext) -> str:
    model = ctx.settings_model
    configured = getattr(model, "namespace", None) if model is not None else ctx.settings.get("namespace")
    return str(configured or ctx.env.kube.namespace)


def aws_app(ctx: StepContext) -> AwsAppAdapter:
    return cast("AwsAppAdapter", ctx.adapters.get("aws_app"))


def render(ctx: StepContext, files: tuple[str, ...], values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Render bundled app templates (``templates/k8s/app/<file>``)."""
    from .._kube_step import render_templates

    docs: list[dict[str, Any]] = []
    for name in files:
        docs.extend(render_templates(ctx, f"{APP_TEMPLATES}/{name}", values))
    return docs


def security_findings(docs: list[dict[str, Any]]) -> list[Finding]:
    """The shared manifest security check (phases/_security.py): real findings block, exempted ones inform."""
    from .._security import check_manifests

    out = []
    for f in check_manifests((APP_TEMPLATES, d) for d in docs):
        level = "info" if f.exempted else "block"
        out.append(Finding(level, f"security: {f}", f.fix))
    return out


def base_values(ctx: StepContext) -> dict[str, Any]:
    return {"namespace": namespace(ctx), "environment": ctx.env_name, "domain": ctx.env.domain}


def record_artifact(ctx: StepContext, kind: str, path: Path) -> None:
    blob = path.read_bytes()
    ctx.artifact(kind, path, hashlib.sha256(blob).hexdigest(), len(blob))


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


def repo_names(ctx: StepContext, prefix: str = "betterprompts") -> dict[str, str]:
    """The ECR repository per service (``<prefix>/<service>``)."""
    prefix = prefix.strip("/")
    return {svc: f"{prefix}/{svc}" if prefix else svc for svc in services(ctx)}
