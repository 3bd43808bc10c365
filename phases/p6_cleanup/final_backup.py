"""Step ``final-backup``: Final source backup: a checksummed pg_dump of the old (Compose) PostgreSQL before anything is stopped."""

from __future__ import annotations

from pathlib import Path

from migrate.errors import AdapterError
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from ..p5_cutover._common import Clock, iso
from ._common import PHASE, files


class FinalBackup(Step):
    """Final source backup: a checksummed pg_dump of the old (Compose) PostgreSQL before anything is stopped.

    Custom-format pg_dump through the postgres adapter (the server's own pg_dump version) into
    ``state/<env>/artifacts/final-backup/``, with its sha256 in a ``.sha256`` sidecar and as a ledger artifact.
    Verify re-reads the file's sha256 and lists it with ``pg_restore --list`` (a different mechanism than writing it):
    it must hold a TABLE DATA entry per source table.

    Rollback keeps the file: deleting a backup is never a compensation.
    """

    id = "final-backup"
    title = "Final checksummed backup of the source database"
    phase = PHASE
    depends_on = ("post-cutover-watch",)
    reversibility = Reversibility.REVERSIBLE
    timeout = 6 * 3600.0

    def path(self, ctx: StepContext) -> Path:
        dbname = ctx.env.postgres["source"].dbname if "source" in ctx.env.postgres else "source"
        return ctx.state_dir / ctx.env_name / "artifacts" / self.id / f"{dbname}-final.dump"

    def plan(self, ctx: StepContext) -> PlanResult:
        source = ctx.adapters.postgres("source")
        result = PlanResult(data={"path": str(self.path(ctx))})
        reason = source.unreachable_reason()
        if reason:
            result.findings.append(
                Finding("block", f"source PostgreSQL unreachable: {reason}", "start the Compose stack's database")
            )
            return result
        result.changes.append(
            Change(
                "create",
                str(self.path(ctx)),
                f"pg_dump -Fc of {source.endpoint} ({source.database_size() / 2**20:.0f} MB)",
            )
        )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        source = ctx.adapters.postgres("source")
        path = self.path(ctx)
        ctx.intent("pg-dump", source=source.endpoint, path=str(path))
        result = files(ctx).final_backup(source, path)
        files(ctx).write_text(path.with_name(path.name + ".sha256"), result.sha256 + "\n")
        ctx.artifact("final-backup", path, result.sha256, result.size)
        ctx.metrics(bytes=float(result.size))
        tables = len(source.user_tables())
        return {
            "path": str(path),
            "sha256": result.sha256,
            "size": result.size,
            "tables": tables,
            "source": source.endpoint,
            "taken_at": iso(Clock().now()),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        recorded = ctx.upstream.get(self.id, {})
        path = Path(recorded.get("path") or self.path(ctx))
        if not path.is_file():
            return [Check("final backup file exists", False, "missing", str(path))]
        sha, size = files(ctx).sha256(path)
        sidecar = path.with_name(path.name + ".sha256")
        expected = recorded.get("sha256") or (sidecar.read_text().strip() if sidecar.is_file() else None)
        source = ctx.adapters.postgres("source")
        try:
            toc = source.restore_list(path)
        except AdapterError as exc:  # a damaged archive is a failing check, not a crash of verify
            toc = []
            ctx.log(f"pg_restore --list failed: {exc.why or exc.what}")
        data_entries = sum(1 for line in toc if " TABLE DATA " in line)
        want_tables = recorded.get("tables")
        return [
            Check("sha256 re-read matches the recorded one", sha == expected, sha, expected),
            Check("size matches", recorded.get("size") in (None, size), size, recorded.get("size")),
            Check(
                "pg_restore --list: one TABLE DATA entry per source table",
                data_entries > 0 and (want_tables is None or data_entries >= int(want_tables)),
                data_entries,
                want_tables if want_tables is not None else "> 0",
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Keep the backup file: a backup is never deleted as a compensation."""
        ctx.log("final-backup rollback keeps the backup file (a backup is never deleted as a compensation)")
