"""Step ``pg-backup``: Consistent backup of the source PostgreSQL (pg_dump -Fc), kept as an artifact with size and sha256."""

from __future__ import annotations

import time
from pathlib import Path

from migrate.errors import StepFailed
from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import MB, pg


class PgBackup(Step):
    """Consistent backup of the source PostgreSQL (pg_dump -Fc), kept as an artifact with size and sha256.

    The file is what a DB rollback restores from (db-rollback-point reads this step's outputs path/sha256).
    Rollback keeps the file: deleting a backup is never a compensation.
    """

    id = "pg-backup"
    phase = 2
    reversibility = Reversibility.REVERSIBLE
    timeout = 6 * 3600.0

    def _path(self, ctx: StepContext) -> Path:
        name = f"{ctx.env.postgres['source'].dbname}.dump" if "source" in ctx.env.postgres else "source.dump"
        return ctx.state_dir / ctx.env_name / "artifacts" / self.id / name

    def plan(self, ctx: StepContext) -> PlanResult:
        source = pg(ctx, "source")
        path = self._path(ctx)
        result = PlanResult(data={"path": str(path)})
        sidecar = path.with_name(path.name + ".sha256")
        if path.is_file() and sidecar.is_file():
            result.in_place.append(
                f"backup {path} ({path.stat().st_size} bytes, sha256 {sidecar.read_text().strip()[:12]}…)"
            )
            result.changes.append(Change("noop", str(path), "a complete backup exists; apply reuses it"))
            return result
        size = source.database_size()
        result.changes.append(
            Change(
                "create",
                str(path),
                f"pg_dump -Fc of {source.endpoint} (database {size / MB:.0f} MB, PostgreSQL {source.server_version()})",
            )
        )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        from migrate.adapters.postgres import file_sha256

        source = pg(ctx, "source")
        path = self._path(ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        sidecar = path.with_name(path.name + ".sha256")
        if not (path.is_file() and sidecar.is_file() and ctx.setting("reuse_existing", True)):
            ctx.intent("pg-dump", source=source.endpoint, path=str(path))
            started = time.monotonic()
            source.dump(path, fmt="c")
            sha, size = file_sha256(path)
            sidecar.write_text(sha + "\n")
            ctx.log(f"pg_dump -Fc: {size / MB:.1f} MB in {time.monotonic() - started:.1f}s")
        sha, size = file_sha256(path)
        if sidecar.read_text().strip() != sha:
            raise StepFailed(
                f"backup {path} does not match its recorded sha256",
                "the file was modified or truncated after it was written",
                f"delete {path} and {sidecar} and run: bpmigrate apply --step {self.id} --env {ctx.env_name}",
            )
        ctx.artifact("pg-backup", path, sha, size)
        ctx.metrics(bytes=float(size))
        return {
            "path": str(path),
            "sha256": sha,
            "size": size,
            "server_version": source.server_version(),
            "source": source.endpoint,
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
        toc = source.restore_list(path)
        data_entries = {" ".join(line.split()[-3:-1]) for line in toc if " TABLE DATA " in line}
        tables = source.tables()
        missing = [t.qualified for t in tables if f"{t.schema} {t.name}" not in data_entries]
        return [
            Check("sha256 re-read matches the recorded one", sha == expected_sha, observed=sha, expected=expected_sha),
            Check("size matches", recorded.get("size") in (None, size), observed=size, expected=recorded.get("size")),
            Check(
                "pg_restore --list reads the archive", len(toc) > 0, observed=f"{len(toc)} TOC entries", expected="> 0"
            ),
            Check(
                "every source table has a TABLE DATA entry", not missing, observed=missing[:5] or "all", expected="all"
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("pg-backup rollback keeps the backup file (it is what a DB rollback restores from)")
