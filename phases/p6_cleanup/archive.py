"""Step ``archive``: Archive of the old configuration: a tar.gz of the Compose file (and any ``paths`` configured), checksummed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

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

    class Settings(StepSettings):
        compose_file: str = Field(DEFAULT_COMPOSE_FILE, description="the old Compose file")
        paths: list[str] = Field(default_factory=list, description="more files/directories of the old deployment")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        if not outputs.get("sha256"):
            return ""
        return f"{len(outputs.get('members') or [])} files · {int(outputs.get('size') or 0) / 1024:.0f} KiB"

    def inputs(self, ctx: StepContext) -> list[str]:
        s = ctx.typed(self.Settings)
        return [s.compose_file or DEFAULT_COMPOSE_FILE, *s.paths]

    def _digests(self, ctx: StepContext) -> dict[str, str]:
        """arcname -> sha256 of every input file now (what the archive must hold to be current)."""
        adapter = files(ctx)
        found, _missing = adapter.resolve_inputs(self.inputs(ctx), ctx.project_root)
        return {
            adapter._arcname(f, ctx.project_root): adapter.sha256(f)[0]
            for f in adapter.files_under(found, ctx.project_root)
        }

    def _current(self, ctx: StepContext) -> list[Check]:
        """Is the recorded archive still the archive of these inputs and of the final backup recorded now?"""
        recorded = ctx.upstream.get(self.id, {})
        backup = ctx.upstream.get("final-backup", {}).get("sha256")
        return [
            Check(
                "inputs unchanged since archived (the archive is not stale)",
                recorded.get("inputs") == self._digests(ctx),
                sorted(recorded.get("inputs") or {}),
            ),
            Check(
                "bound to the final backup recorded now",
                recorded.get("final_backup_sha256") == backup,
                recorded.get("final_backup_sha256"),
                backup,
            ),
        ]

    def path(self, ctx: StepContext) -> Path:
        return ctx.state_dir / ctx.env_name / "artifacts" / self.id / f"old-config-{ctx.env_name}.tar.gz"

    def plan(self, ctx: StepContext) -> PlanResult:
        found, missing = files(ctx).resolve_inputs(self.inputs(ctx), ctx.project_root)
        result = PlanResult(data={"inputs": self.inputs(ctx)})
        recorded = ctx.upstream.get(self.id, {})
        stale = [c.name for c in self._current(ctx) if not c.ok]
        if recorded.get("sha256") and self.path(ctx).is_file() and not stale:
            result.in_place.append(f"archive {self.path(ctx)} of the current inputs and final backup")
            return result
        why = f"re-create (stale: {'; '.join(stale)})" if recorded.get("sha256") else "create"
        result.changes.append(Change("create", str(self.path(ctx)), f"{why}: tar.gz of {len(found)} path(s)"))
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
            "inputs": self._digests(ctx),
            "run_id": ctx.run_id,
            "final_backup_sha256": ctx.upstream.get("final-backup", {}).get("sha256"),
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
            *self._current(ctx),
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Delete the archive and its checksum file (the archived inputs are untouched)."""
        path = self.path(ctx)
        ctx.intent("remove-archive", path=str(path))
        files(ctx).remove(path)
        files(ctx).remove(path.with_name(path.name + ".sha256"))
