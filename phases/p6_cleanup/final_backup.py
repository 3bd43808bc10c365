"""Step ``final-backup``: Final source backup before anything is stopped: pg_dump of the old PostgreSQL and an RDB of the old Redis."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from migrate.errors import AdapterError
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from .._backup import backup_checks, backup_staleness, human_size, reusable, take_backup, take_or_retake
from ._common import PHASE, files


class FinalBackup(Step):
    """Final source backup before anything is stopped: pg_dump of the old PostgreSQL and an RDB of the old Redis.

    The dump is bound to its source like pg-backup's (``<dump>.json``: system identifier, database, version, WAL
    position, next transaction id, time, ledger run): reused only when this ledger recorded it and the source has had
    no write since (or it is younger than ``max_age_h``), else re-taken beside the old one. The source Redis (when
    configured) is saved through the replication protocol (``SYNC``: a point-in-time RDB, no access to the server's
    disk needed) with its sha256 and key counts per DB. Verify re-reads both checksums, lists the dump (a TABLE DATA
    entry per table, by OID; the recorded identity against the source) and loads the RDB into a scratch redis-server
    whose key counts per DB must equal the source's at the snapshot.

    Rollback keeps the files: deleting a backup is never a compensation.
    """

    id = "final-backup"
    title = "Final checksummed backup of the source database and Redis"
    phase = PHASE
    depends_on = ("post-cutover-watch",)
    reversibility = Reversibility.REVERSIBLE
    timeout = 6 * 3600.0

    class Settings(StepSettings):
        max_age_h: float = Field(
            0.0, ge=0, description="reuse a dump younger than this even if the source was written since (0: never)"
        )
        redis: bool = Field(True, description="also save the source Redis (RDB through SYNC) when one is configured")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        if not outputs.get("sha256"):
            return ""
        text = f"dump {human_size(int(outputs.get('size') or 0))}"
        rdb = outputs.get("redis") or {}
        if rdb:
            text += f" · RDB {human_size(int(rdb.get('size') or 0))}, {sum(rdb.get('keys', {}).values()):,} keys"
        return text + (" · reused" if outputs.get("reused") else "")

    def path(self, ctx: StepContext) -> Path:
        dbname = ctx.env.postgres["source"].dbname if "source" in ctx.env.postgres else "source"
        return ctx.state_dir / ctx.env_name / "artifacts" / self.id / f"{dbname}-final.dump"

    def _redis(self, ctx: StepContext) -> Any:
        return ctx.adapters.redis("source") if ctx.typed(self.Settings).redis and "source" in ctx.env.redis else None

    def plan(self, ctx: StepContext) -> PlanResult:
        source = ctx.adapters.postgres("source")
        result = PlanResult(data={"path": str(self.path(ctx))})
        reason = source.unreachable_reason()
        if reason:
            result.findings.append(
                Finding("block", f"source PostgreSQL unreachable: {reason}", "start the Compose stack's database")
            )
            return result
        s = ctx.typed(self.Settings)
        why = backup_staleness(ctx, self.id, self.path(ctx), source, max_age_h=s.max_age_h)
        if why is None:
            result.in_place.append(f"final backup {self.path(ctx)} of this source, no write since")
        else:
            result.changes.append(
                Change(
                    "create",
                    str(self.path(ctx)),
                    f"{take_or_retake(why)}: pg_dump -Fc of {source.endpoint} ({source.database_size() / 2**20:.0f} MB)",
                )
            )
        redis = self._redis(ctx)
        if redis is not None:
            result.changes.append(Change("create", "source Redis RDB", f"SYNC snapshot of {redis.endpoint}"))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        source = ctx.adapters.postgres("source")
        path = self.path(ctx)
        s = ctx.typed(self.Settings)
        why, meta = reusable(ctx, source, path, max_age_h=s.max_age_h, reuse=True)
        if why is not None:
            meta = take_backup(ctx, source, path, why, kind="final-backup")
        out: dict[str, Any] = {
            "path": str(path),
            "sha256": meta["sha256"],
            "size": meta["size"],
            "tables": len(source.data_relations()),
            "source": source.endpoint,
            "identity": meta["identity"],
            "taken_in_run": meta.get("run_id"),
            "taken_at": meta["identity"].get("at"),
            "reused": why is None,
        }
        redis = self._redis(ctx)
        if redis is not None:
            rdb = path.with_name(f"redis-{ctx.env_name}-final.rdb")
            ctx.intent("redis-rdb", source=redis.endpoint, path=str(rdb))
            before = redis.keyspace()
            sha, size = redis.save_rdb(rdb)
            after = redis.keyspace()
            if before != after:
                ctx.log(f"the source Redis was written during the snapshot ({before} → {after}): verify will say so")
            files(ctx).write_text(rdb.with_name(rdb.name + ".sha256"), sha + "\n")
            ctx.artifact("final-backup-redis", rdb, sha, size)
            keys = {str(db): n for db, n in sorted(after.items())}
            out["redis"] = {"path": str(rdb), "sha256": sha, "size": size, "keys": keys, "source": redis.endpoint}
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        recorded = ctx.upstream.get(self.id, {})
        path = Path(recorded.get("path") or self.path(ctx))
        if not path.is_file():
            return [Check("final backup file exists", False, "missing", str(path))]
        sha, size = files(ctx).sha256(path)
        expected = recorded.get("sha256")
        source = ctx.adapters.postgres("source")
        checks = [
            Check("sha256 re-read matches the recorded one", sha == expected, sha, expected),
            Check("size matches", recorded.get("size") in (None, size), size, recorded.get("size")),
            *backup_checks(source, path, sha, size, dict(recorded.get("identity") or {})),
        ]
        rdb = recorded.get("redis") or {}
        if rdb:
            checks += self._verify_rdb(ctx, rdb)
        return checks

    def _verify_rdb(self, ctx: StepContext, rdb: Mapping[str, Any]) -> list[Check]:
        path = Path(rdb["path"])
        if not path.is_file():
            return [Check("Redis RDB exists", False, "missing", str(path))]
        sha, _size = files(ctx).sha256(path)
        try:
            loaded = {str(db): n for db, n in sorted(files(ctx).rdb_keyspace(path).items())}
        except AdapterError as exc:
            loaded = {"error": exc.what}  # type: ignore[dict-item]
        now = {str(db): n for db, n in sorted(ctx.adapters.redis("source").keyspace().items())}
        return [
            Check("Redis RDB sha256 re-read matches", sha == rdb.get("sha256"), sha, rdb.get("sha256")),
            Check(
                "RDB loaded into a scratch redis-server: keys per DB as the source had them when saved",
                loaded == rdb.get("keys"),
                loaded,
                rdb.get("keys"),
                detail=f"the source has {now} now"
                + ("" if now == loaded else " (written since: the reverse follower?)"),
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Keep the backup files: a backup is never deleted as a compensation."""
        ctx.log("final-backup rollback keeps the backup files (a backup is never deleted as a compensation)")
