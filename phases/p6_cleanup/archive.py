"""Step ``archive``: Archive of the old configuration: a tar.gz of the Compose file (and any ``paths`` configured), checksummed."""

from __future__ import annotations

from pathlib import Path

from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from ..p5_cutover._common import step_settings
from ._common import DEFAULT_COMPOSE_FILE, PHASE, files


class Archive(Step):
    """Archive of the old configuration: a tar.gz of the Compose file (and any ``paths`` configured), checksummed.

    Inputs: ``templates/compose/docker-compose.yml`` (setting ``compose_file``) plus every entry of ``paths``
    (files or directories, relative to the project). Written to ``state/<env>/artifacts/archive/`` with a
    ``.sha256`` sidecar and recorded as a ledger artifact. The old Compose file carries plaintext credentials:
    keep the archive where secrets may live (file mode 0600), never in a ticket or a shared drive.

    Verify re-reads the archive completely, compares its member list and sha256 with the recorded ones.
    Rollback deletes the archive (the inputs are untouched).
    """

    id = "archive"
    title = "tar.gz of the old configuration, checksummed"
    phase = PHASE
    depends_on = ("final-backup",)
    reversibility = Reversibility.REVERSIBLE

    def inputs(self, ctx: StepContext) -> list[str]:
        compose = str(
            ctx.setting("compose_file", step_settings(ctx, "decommission").get("compose_file", DEFAULT_COMPOSE_FILE))
        )
        return [compose, *[str(p) for p in ctx.setting("paths", [])]]

    def path(self, ctx: StepContext) -> Path:
        return ctx.state_dir / ctx.env_name / "artifacts" / self.id / f"old-config-{ctx.env_name}.tar.gz"

    def plan(self, ctx: StepContext) -> PlanResult:
        found, missing = files(ctx).resolve_inputs(self.inputs(ctx), ctx.project_root)
        result = PlanResult(data={"inputs": self.inputs(ctx)})
        result.changes.append(Change("create", str(self.path(ctx)), f"tar.gz of {len(found)} path(s)"))
        for item in missing:
            result.findings.append(
                Finding(
                    "warn",
                    f"configured path {item} does not exist: it will be missing from the archive",
                    "fix [steps.archive] paths",
                )
            )
        if not found:
            result.findings.append(Finding("block", "nothing to archive", "set [steps.archive] compose_file / paths"))
        result.findings.append(
            Finding("info", "the archive holds the old Compose file's plaintext credentials: store it as a secret")
        )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        adapter = files(ctx)
        found, missing = adapter.resolve_inputs(self.inputs(ctx), ctx.project_root)
        out = self.path(ctx)
        ctx.intent("write-archive", path=str(out), inputs=[str(p) for p in found])
        result = adapter.make_tar_gz(out, found, ctx.project_root)
        adapter.restrict(out)
        adapter.write_text(out.with_name(out.name + ".sha256"), result.sha256 + "\n")
        ctx.artifact("config-archive", out, result.sha256, result.size)
        return {
            "path": str(out),
            "sha256": result.sha256,
            "size": result.size,
            "members": list(result.members),
            "missing": missing,
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        recorded = ctx.upstream.get(self.id, {})
        path = Path(recorded.get("path") or self.path(ctx))
        if not path.is_file():
            return [Check("archive exists", False, "missing", str(path))]
        adapter = files(ctx)
        sha, _size = adapter.sha256(path)
        members = adapter.list_tar(path)
        return [
            Check(
                "archive sha256 matches the recorded one", sha == recorded.get("sha256"), sha, recorded.get("sha256")
            ),
            Check(
                "archive members match",
                members == recorded.get("members"),
                len(members),
                len(recorded.get("members") or []),
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Delete the archive and its checksum file (the archived inputs are untouched)."""
        path = self.path(ctx)
        ctx.intent("remove-archive", path=str(path))
        files(ctx).remove(path)
        files(ctx).remove(path.with_name(path.name + ".sha256"))
