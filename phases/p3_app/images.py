"""Step ``images``: Service images in ECR: build and push them, or take already-pushed tags from the configuration."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import Field

from migrate.errors import ConfigError, DependencyNotReady, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

if TYPE_CHECKING:
    from migrate.adapters.builder import Builder
from ._common import AppSettings, AppStep, aws_app, repo_names, services


class Images(AppStep, Step):
    """Service images in ECR: build and push them, or take already-pushed tags from the configuration.

    With a working container builder (a docker engine that answers `docker info`, or buildah) and `source_dir`
    set, each service is built from `<source_dir>/<context>` and pushed with tag `tag`. Without one, the plan says
    so and the step uses `[steps.images] tags = {service = "tag"}` (or `tag` for all), requiring each manifest to be
    in ECR already. In the sandbox (moto), a missing manifest is put into moto's ECR with `put_image` as a stand-in
    for a pushed image (no image is built; the plan says so).
    Verify reads each image back with DescribeImages and compares digests.
    """

    id = "images"
    depends_on = ("ecr-repos",)
    reversibility = Reversibility.COMPENSABLE

    class Settings(AppSettings):
        tag: str | None = Field(None, description="image tag for every service (sandbox default: sandbox)")
        tags: dict[str, str] = Field(default_factory=dict, description="image tag per service (wins over tag)")
        source_dir: str | None = Field(None, description="with a builder: build <source_dir>/<context> and push")
        contexts: dict[str, str] = Field(
            default_factory=dict, description="build context per service (default: its name)"
        )
        build: bool = Field(True, description="build when a builder and source_dir are available")

    def builder(self, ctx: StepContext) -> Builder:
        return cast("Builder", ctx.adapters.get("builder"))

    def repo_names(self, ctx: StepContext) -> dict[str, str]:
        recorded = ctx.output("ecr-repos", "repositories", None)
        if isinstance(recorded, Mapping):
            return {svc: str(recorded[svc]["name"]) for svc in services(ctx) if svc in recorded}
        return repo_names(ctx)

    def tags(self, ctx: StepContext) -> dict[str, str | None]:
        s = ctx.typed(self.Settings)
        per_service = s.tags
        default = s.tag or ("sandbox" if ctx.is_sandbox else None)
        return {svc: (str(per_service[svc]) if svc in per_service else default) for svc in services(ctx)}

    def mode(self, ctx: StepContext) -> tuple[str, str]:
        info = self.builder(ctx).detect()
        s = ctx.typed(self.Settings)
        if info.available and s.source_dir and s.build:
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
                contexts = ctx.typed(self.Settings).contexts
                source = Path(str(ctx.typed(self.Settings).source_dir)).expanduser()
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

    def summary(self, outputs: Mapping[str, Any]) -> str:
        images = outputs.get("images") or {}
        tags = sorted({str(i.get("tag")) for i in images.values()})
        return f"{len(images)} image(s) in ECR · tags {', '.join(tags) or '?'} · {outputs.get('mode')}"

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
