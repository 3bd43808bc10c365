"""Step ``ecr-repos``: ECR repositories, one per service, with scan-on-push and a lifecycle policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import MANAGED_TAG, AppSettings, AppStep, aws_app
from ._common import repo_names as _repo_names


class EcrRepos(AppStep, Step):
    """ECR repositories, one per service, with scan-on-push and a lifecycle policy.

    Creates (or adopts) `<prefix>/<service>` for frontend, api-gateway, intent-classifier, technique-selector and
    prompt-generator with image scanning on push, immutable tags (setting `tag_mutability`), AES256 encryption and
    a lifecycle policy (untagged images expire after `untagged_days`, only the newest `keep_images` are kept).
    Verify describes each repository and reads its lifecycle policy back.
    Rollback deletes the repositories bpmigrate created (tag managed-by=bpmigrate) that hold no images; repositories
    with images are kept and reported unless `rollback_delete_images = true`.
    """

    id = "ecr-repos"
    depends_on = ()
    reversibility = Reversibility.COMPENSABLE

    class Settings(AppSettings):
        repository_prefix: str = Field("betterprompts", description="repositories are named <prefix>/<service>")
        tag_mutability: Literal["IMMUTABLE", "MUTABLE"] = Field("IMMUTABLE", description="ECR tag mutability")
        keep_images: int = Field(30, ge=1, description="lifecycle: keep the newest N images")
        untagged_days: int = Field(7, ge=1, description="lifecycle: expire untagged images after N days")
        rollback_delete_images: bool = Field(False, description="rollback deletes repositories holding images too")

    def policy(self, ctx: StepContext) -> dict[str, Any]:
        from migrate.adapters.aws_app import lifecycle_policy

        s = ctx.typed(self.Settings)
        return lifecycle_policy(s.keep_images, s.untagged_days)

    def repo_names(self, ctx: StepContext) -> dict[str, str]:
        return _repo_names(ctx, ctx.typed(self.Settings).repository_prefix)

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return f"{len(outputs.get('repositories') or {})} ECR repositories in {outputs.get('registry') or '?'}"

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
        mutability = ctx.typed(self.Settings).tag_mutability
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
        delete_images = ctx.typed(self.Settings).rollback_delete_images
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
