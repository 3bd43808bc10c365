"""Step ``pg-backup``: Consistent backup of the source PostgreSQL (pg_dump -Fc), bound to the source it was taken from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from .._backup import backup_checks, backup_staleness, human_size, reusable, take_backup, take_or_retake
from ._common import MB, pg


class PgBackup(Step):
    """Consistent backup of the source PostgreSQL (pg_dump -Fc), bound to the source it was taken from.

    The file is what a DB rollback restores from (db-rollback-point reads this step's outputs path/sha256). Beside
    it, ``<dump>.sha256`` and ``<dump>.json``: the source's identity as of the dump's snapshot (system identifier,
    database, server version, WAL position, next transaction id, time) and the ledger run that took it.

    Plan reuses an existing backup only when this environment's ledger recorded it, it comes from the same source,
    and the source has had no write since (or it is younger than ``max_age_h``); otherwise it says "re-take (why)".
    Apply writes a new dump beside the old one, keeps the old one as ``.prev`` until the new one reads back
    (sha256 + a TABLE DATA entry per source table), then removes it. ``apply --step pg-backup --refresh`` re-takes
    deliberately. Rollback keeps the file: deleting a backup is never a compensation.
    """

    id = "pg-backup"
    phase = 2
    reversibility = Reversibility.REVERSIBLE
    timeout = 6 * 3600.0

    class Settings(StepSettings):
        reuse_existing: bool = Field(
            True, description="reuse a complete backup of this same source (false: always re-take)"
        )
        max_age_h: float = Field(
            0.0,
            ge=0,
            description="reuse a backup younger than this many hours even if the source was written since "
            "(0: any write since makes it stale)",
        )

    def summary(self, outputs: Mapping[str, Any]) -> str:
        if not outputs.get("sha256"):
            return ""
        how = "reused" if outputs.get("reused") else "taken"
        ident = outputs.get("identity") or {}
        return (
            f"{human_size(int(outputs.get('size') or 0))} · sha256 {str(outputs['sha256'])[:12]} · {how} · "
            f"source at WAL {ident.get('lsn', '?')}"
        )

    def _path(self, ctx: StepContext) -> Path:
        name = f"{ctx.env.postgres['source'].dbname}.dump" if "source" in ctx.env.postgres else "source.dump"
        return ctx.state_dir / ctx.env_name / "artifacts" / self.id / name

    def plan(self, ctx: StepContext) -> PlanResult:
        source = pg(ctx, "source")
        path = self._path(ctx)
        result = PlanResult(data={"path": str(path)})
        s = ctx.typed(self.Settings)
        why = backup_staleness(ctx, self.id, path, source, max_age_h=s.max_age_h, reuse=s.reuse_existing)
        if why is None:
            result.in_place.append(f"backup {path} ({path.stat().st_size} bytes) of this source, no write since")
            result.changes.append(Change("noop", str(path), "a backup of the source as it is exists; apply reuses it"))
            return result
        size = source.database_size()
        result.changes.append(
            Change(
                "create",
                str(path),
                f"{take_or_retake(why)}: pg_dump -Fc of {source.endpoint} (database {size / MB:.0f} MB, "
                f"PostgreSQL {source.server_version()})",
            )
        )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        source = pg(ctx, "source")
        s = ctx.typed(self.Settings)
        why, meta = reusable(ctx, source, self._path(ctx), max_age_h=s.max_age_h, reuse=s.reuse_existing)
        if why is None:
            ctx.log(f"reusing the backup taken at {meta['identity']['at']} (run {meta.get('run_id')}): no write since")
            return {**self._outputs(meta), "reused": True}
        meta = take_backup(ctx, source, self._path(ctx), why, kind="pg-backup")
        return {**self._outputs(meta), "reused": False}

    @staticmethod
    def _outputs(meta: Mapping[str, Any]) -> dict[str, Any]:
        ident = meta["identity"]
        return {
            "path": meta["path"],
            "sha256": meta["sha256"],
            "size": meta["size"],
            "server_version": ident.get("server_version"),
            "identity": dict(ident),
            "taken_in_run": meta.get("run_id"),
            "reason": meta.get("reason"),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.postgres import file_sha256

        source = pg(ctx, "source")
        recorded = ctx.upstream.get(self.id, {})
        path = Path(recorded.get("path") or self._path(ctx))
        if not path.is_file():
            return [Check("backup file exists", False, observed="missing", expected=str(path))]
        sha, size = file_sha256(path)
        expected_sha = recorded.get("sha256") or path.with_name(path.name + ".sha256").read_text().strip()
        identity = dict(recorded.get("identity") or {})
        checks = [
            Check("sha256 re-read matches the recorded one", sha == expected_sha, observed=sha, expected=expected_sha),
            Check("size matches", recorded.get("size") in (None, size), observed=size, expected=recorded.get("size")),
        ]
        return checks + backup_checks(source, path, sha, size, identity)

    def rollback(self, ctx: StepContext) -> None:
        ctx.log(
            "pg-backup rollback keeps the backup file (it is what a DB rollback restores from); "
            f"to re-take it: bpmigrate apply --step {self.id} --refresh --env {ctx.env_name}"
        )
