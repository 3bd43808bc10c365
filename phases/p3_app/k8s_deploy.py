"""Step ``k8s-deploy``: Deployments and Services for every service, rolled out with a timeout; rollback = the quick rollback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.errors import DependencyNotReady
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, StepContext

from .._kube_step import (
    ManifestStep,
    digest,
    load_point,
    plan_manifests,
    point_path,
    previous_objects,
    ref,
    user_manifests,
    verify_manifests,
)
from ._common import (
    WORKLOAD_FILES,
    AppStep,
    ManifestsDirSettings,
    base_values,
    container_images,
    image_key,
    namespace,
    render,
    security_findings,
    services,
)


class K8sDeploy(AppStep, ManifestStep):
    """Deployments and Services for every service, rolled out with a timeout; rollback = the quick rollback.

    Renders templates/k8s/app/2*.yaml with the image references recorded by `images` and the namespace (or applies
    the team's own manifests from `manifests_dir`), applies them server-side, and waits for every Deployment to roll
    out (observedGeneration, updated and available replicas) within `rollout_timeout` seconds — a timeout names the
    pods' reasons (e.g. ImagePullBackOff). Before applying, the live manifests (and so the images) are recorded in
    state/<env>/artifacts/k8s-deploy/; rollback re-applies exactly those and deletes what did not exist before.
    """

    id = "k8s-deploy"
    depends_on = ("images", "k8s-config")
    reversibility = Reversibility.REVERSIBLE
    delete_without_point = False  # the live app may predate bpmigrate: never delete it without a recorded point

    class Settings(ManifestsDirSettings):
        rollout_timeout: float = Field(600, gt=0, description="seconds for every Deployment to roll out")
        templates: list[str] = Field(list(WORKLOAD_FILES), description="bundled templates under templates/k8s/app")

    def images(self, ctx: StepContext) -> dict[str, str] | None:
        recorded = ctx.output("images", "images", None)
        if not isinstance(recorded, Mapping) or any(svc not in recorded for svc in services(ctx)):
            return None
        return {svc: str(recorded[svc]["image"]) for svc in services(ctx)}

    def docs(self, ctx: StepContext, images: Mapping[str, str]) -> list[dict[str, Any]]:
        s = ctx.typed(self.Settings)
        if s.manifests_dir:
            return user_manifests(ctx, s.manifests_dir)
        values = base_values(ctx)
        values.update({image_key(svc): image for svc, image in images.items()})
        return render(ctx, tuple(s.templates), values)

    def manifests(self, ctx: StepContext) -> list[dict[str, Any]]:
        images = self.images(ctx)
        if images is None and not ctx.typed(self.Settings).manifests_dir:
            raise DependencyNotReady(
                "k8s-deploy needs the image references recorded by step images",
                "the images step has not been applied in this environment",
                f"bpmigrate apply --step images --env {ctx.env_name}",
            )
        return self.docs(ctx, images or {})

    def plan(self, ctx: StepContext) -> PlanResult:
        images = self.images(ctx)
        if images is None and not ctx.typed(self.Settings).manifests_dir:
            return PlanResult(
                changes=[Change("update", f"Deployments/Services in {namespace(ctx)}", "images from step images")],
                unknown=["image references (outputs of step images)"],
            )
        docs = self.docs(ctx, images or {})
        result = PlanResult(data={"images": images, "namespace": namespace(ctx), "manifests": digest(docs)})
        result.findings.extend(security_findings(docs))
        plan_manifests(ctx, docs, result)
        kube = ctx.adapters.kube()
        for doc in docs:
            if doc["kind"] != "Deployment":
                continue
            live = kube.get("apps/v1", "Deployment", doc["metadata"]["name"], doc["metadata"].get("namespace"))
            if live is not None and container_images(live) != container_images(doc):
                result.findings.append(
                    Finding("info", f"{ref(doc)}: {container_images(live)} -> {container_images(doc)}")
                )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        docs = self.manifests(ctx)
        out = self.apply_manifests(ctx, docs)
        point = load_point(ctx) or {}
        previous = previous_objects(ctx, point)
        deployments = [ref(d) for d in docs if d["kind"] == "Deployment"]
        return {
            **out,
            "namespace": namespace(ctx),
            "deployments": deployments,
            "services": [ref(d) for d in docs if d["kind"] == "Service"],
            "images": self.images(ctx),
            "previous_images": {
                r.split("/")[-1]: next(iter(container_images(previous[r])), None) if r in previous else None
                for r in deployments
            },
            "rollback_point": str(point_path(ctx)),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        if self.images(ctx) is None and not ctx.typed(self.Settings).manifests_dir:
            return [Check("image references recorded by step images", False, None, "recorded")]
        return verify_manifests(ctx, self.manifests(ctx))

    def summary(self, outputs: Mapping[str, Any]) -> str:
        images = outputs.get("images") or {}
        tags = sorted({str(i).rsplit(":", 1)[-1] for i in images.values()})
        return f"{len(outputs.get('deployments') or [])} Deployment(s) rolled out · images {', '.join(tags) or '?'}"
