"""Phase 2 — data: PostgreSQL → RDS and Redis → ElastiCache, fast, resumable and verified independently.

Order: rds → pgvector → (pg-backup) → rds-restore → data-validate;  elasticache → redis-migrate → redis-verify.
``pgvector`` runs BEFORE ``rds-restore`` (rds-restore depends on it): the vector type must exist on the target
before the schema that uses it is restored. The source is only ever read.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from migrate.errors import ConfigError, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext
from phases._terraform_step import TerraformModuleStep

if TYPE_CHECKING:
    from migrate.adapters.postgres import PostgresAdapter, TableInfo
    from migrate.adapters.redis import RedisAdapter
    from migrate.adapters.redis_copy import DbRoute

MB = 1 << 20


# -- endpoints ---------------------------------------------------------------------------------------------------
def _host_port(value: Any, default_port: int) -> tuple[str, int]:
    text = str(value or "")
    if ":" in text and text.rsplit(":", 1)[1].isdigit():
        host, port = text.rsplit(":", 1)
        return host, int(port)
    return text, default_port


def pg(ctx: StepContext, role: str) -> PostgresAdapter:
    """The source, or the target — whose address comes from the rds step when migrate.toml says from-terraform."""
    adapter = ctx.adapters.postgres(role)
    if role == "target" and adapter.needs_address:
        host, port = _host_port(ctx.output("rds", "endpoint"), int(ctx.output("rds", "port", adapter.port) or 5432))
        adapter = adapter.with_address(host, port)
    return adapter


def rds(ctx: StepContext, role: str) -> RedisAdapter:
    adapter = ctx.adapters.redis(role)
    if role == "target" and adapter.needs_address:
        host, port = _host_port(
            ctx.output("elasticache", "endpoint"), int(ctx.output("elasticache", "port", adapter.port) or 6379)
        )
        adapter = adapter.with_address(host, port)
    return adapter


def _target_address_known(ctx: StepContext, kind: str) -> str | None:
    """None when the target address is known; else what is missing (for plan's ``unknown``)."""
    adapter = ctx.adapters.postgres("target") if kind == "postgres" else ctx.adapters.redis("target")
    step = "rds" if kind == "postgres" else "elasticache"
    if adapter.needs_address and ctx.upstream.get(step, {}).get("endpoint") in (None, ""):
        return f"{kind} target address (output 'endpoint' of step {step}, recorded when it is applied)"
    return None


def _refuse_same_database(source: PostgresAdapter, target: PostgresAdapter) -> None:
    if (source.host, source.port, source.dbname) == (target.host, target.port, target.dbname):
        raise ConfigError(
            f"postgres.source and postgres.target are the same database ({source.endpoint})",
            "the restore overwrites the target: it would destroy the source",
            "fix postgres.target in migrate.toml",
        )


def extension_findings(source: PostgresAdapter, target: PostgresAdapter) -> list[Finding]:
    """Extensions used on the source but not available on the target (like RDS's allow-list)."""
    available = target.extensions_available()
    findings: list[Finding] = []
    for use in source.extension_uses():
        if use.name in available:
            continue
        if use.tables:
            findings.append(
                Finding(
                    "block",
                    f"extension {use.name} {use.version} is used by {', '.join(use.tables[:5])} on the source but is "
                    "not available on the target",
                    f"install/allow {use.name} on the target (RDS: check the engine version's extension list), or "
                    "rewrite those columns/defaults without it before migrating",
                )
            )
        else:
            findings.append(
                Finding(
                    "warn",
                    f"extension {use.name} {use.version} is installed on the source but not available on the target",
                    f"no table depends on it: drop it from the source dump (DROP EXTENSION {use.name}) or accept that "
                    "the schema restore will fail on its CREATE EXTENSION",
                )
            )
    return findings


# -- Terraform-provisioned targets ------------------------------------------------------------------------------
SANDBOX_ENDPOINT_NOTE = (
    "sandbox: the {what} in moto has no server behind it; the data steps connect to the local target {engine} "
    "from the sandbox's config (state/{env}/endpoints.json), and verify reads the moto resource back"
)


def _sandbox_note(kind: str, env_name: str) -> str:
    what, engine = ("RDS instance", "PostgreSQL") if kind == "postgres" else ("ElastiCache group", "Redis")
    return SANDBOX_ENDPOINT_NOTE.format(what=what, engine=engine, env=env_name)


def _local_target(ctx: StepContext, kind: str) -> Any:
    """The sandbox's local target server (None outside a sandbox, or when its address comes from Terraform)."""
    target = (ctx.env.postgres if kind == "postgres" else ctx.env.redis).get("target")
    if not ctx.is_sandbox or target is None or target.host == "from-terraform":
        return None
    return target


def sandbox_connection(
    ctx: StepContext, kind: str, tf_outputs: dict[str, Any], endpoint_output: str, port_output: str
) -> dict[str, Any]:
    """Sandbox with the real modules: the connection endpoint is the local server, not moto's fake address.

    Returns the outputs that replace ``endpoint``/``port`` (with the moto address kept as ``aws_endpoint``), or {}
    outside that case (real AWS: Terraform's outputs are the connection endpoints; stand-in: they already point at
    the local servers)."""
    target = _local_target(ctx, kind)
    if target is None:
        return {}
    note = _sandbox_note(kind, ctx.env_name)
    ctx.log(f"{note}: {target.host}:{target.port}")
    return {
        "endpoint": target.host,
        "port": target.port,
        "aws_endpoint": tf_outputs.get(endpoint_output),
        "aws_port": tf_outputs.get(port_output),
        "endpoint_source": note,
    }


class _SandboxTargetStep(TerraformModuleStep):
    """A data-store module whose sandbox connection endpoint is the local server (see :func:`sandbox_connection`)."""

    kind: ClassVar[str] = "postgres"

    def plan(self, ctx: StepContext) -> PlanResult:
        result = super().plan(ctx)
        if _local_target(ctx, self.kind) is not None and not self.stand_in(ctx):
            result.findings.append(Finding("info", _sandbox_note(self.kind, ctx.env_name), ""))
        return result

    def extra_outputs(self, ctx: StepContext, tf_outputs: dict[str, Any]) -> dict[str, Any]:
        if self.stand_in(ctx):
            return {}
        return sandbox_connection(
            ctx, self.kind, tf_outputs, self.output_map["endpoint"], self.output_map["port"]
        )


class Rds(_SandboxTargetStep):
    """RDS PostgreSQL 16 (pgvector-capable) through Terraform module.rds.

    Outputs the endpoint used by every later data step when postgres.target.host = "from-terraform". In the sandbox
    the stand-in root's outputs point at the local target PostgreSQL; with the project's modules applied to moto,
    verify reads moto's instance back and the endpoint output is the local target PostgreSQL (``aws_endpoint`` keeps
    moto's address, ``endpoint_source`` says why).
    """

    kind = "postgres"

    id = "rds"
    phase = 2
    depends_on = ("vpc",)
    module = "module.rds"
    output_map: ClassVar[dict[str, str]] = {
        "endpoint": "rds_endpoint",
        "port": "rds_port",
        "instance_id": "rds_instance_id",
    }
    reversibility = Reversibility.ONE_WAY  # destroying the database loses the migrated data

    def verify(self, ctx: StepContext) -> list[Check]:
        checks: list[Check] = []
        if self.stand_in(ctx):
            checks += self.verify_terraform_state(ctx)
        else:
            checks += self.verify_state_object(ctx)
            instance_id = ctx.output(self.id, "instance_id")
            found = ctx.adapters.aws().call("rds", "describe_db_instances", DBInstanceIdentifier=instance_id)
            inst = (found.get("DBInstances") or [{}])[0]
            checks.append(
                Check(
                    "RDS instance available",
                    inst.get("DBInstanceStatus") == "available",
                    observed=inst.get("DBInstanceStatus"),
                    expected="available",
                )
            )
            checks.append(
                Check(
                    "engine postgres",
                    inst.get("Engine") == "postgres",
                    observed=inst.get("Engine"),
                    expected="postgres",
                )
            )
        reason = pg(ctx, "target").unreachable_reason()
        checks.append(Check("target PostgreSQL answers", reason is None, observed=reason or "ok", expected="ok"))
        return checks


class ElastiCache(_SandboxTargetStep):
    """ElastiCache Redis 7 through Terraform module.elasticache (outputs the endpoint; in a sandbox applying the
    project's modules to moto, the endpoint output is the local target Redis, as for :class:`Rds`)."""

    kind = "redis"

    id = "elasticache"
    phase = 2
    depends_on = ("vpc",)
    module = "module.elasticache"
    output_map: ClassVar[dict[str, str]] = {
        "endpoint": "elasticache_endpoint",
        "port": "elasticache_port",
        "replication_group_id": "elasticache_replication_group_id",
    }

    def verify(self, ctx: StepContext) -> list[Check]:
        checks: list[Check] = []
        if self.stand_in(ctx):
            checks += self.verify_terraform_state(ctx)
        else:
            checks += self.verify_state_object(ctx)
            group = ctx.output(self.id, "replication_group_id")
            found = ctx.adapters.aws().call("elasticache", "describe_replication_groups", ReplicationGroupId=group)
            rg = (found.get("ReplicationGroups") or [{}])[0]
            checks.append(
                Check(
                    "replication group available",
                    rg.get("Status") == "available",
                    observed=rg.get("Status"),
                    expected="available",
                )
            )
        reason = rds(ctx, "target").unreachable_reason()
        checks.append(Check("target Redis answers PING", reason is None, observed=reason or "ok", expected="ok"))
        return checks


# -- PostgreSQL ----------------------------------------------------------------------------------------------------
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


class PgVector(Step):
    """Enable pgvector on the target (CREATE EXTENSION IF NOT EXISTS vector) before the data that needs it.

    Runs before rds-restore (which depends on it). Verify compares a nearest-neighbour query on source and target
    once the data is there.
    """

    id = "pgvector"
    phase = 2
    depends_on = ("rds",)
    reversibility = Reversibility.COMPENSABLE

    def plan(self, ctx: StepContext) -> PlanResult:
        missing = _target_address_known(ctx, "postgres")
        if missing:
            return PlanResult(changes=[Change("create", "extension vector on target")], unknown=[missing])
        target = pg(ctx, "target")
        installed = target.extensions_installed()
        if "vector" in installed:
            return PlanResult(in_place=[f"extension vector {installed['vector']} on the target"])
        result = PlanResult(changes=[Change("create", "extension vector", f"on {target.endpoint}")])
        if "vector" not in target.extensions_available():
            result.findings.append(
                Finding(
                    "block",
                    "pgvector is not available on the target server",
                    "use an RDS PostgreSQL version that ships pgvector (≥ 15.2) or install it",
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        target = pg(ctx, "target")
        existed = "vector" in target.extensions_installed()
        if not existed:
            ctx.intent("create-extension", name="vector", target=target.endpoint)
            target.create_extension("vector")
        return {"version": target.extensions_installed()["vector"], "created": not existed}

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.postgres import nearest_ids, vector_columns

        target = pg(ctx, "target")
        installed = target.extensions_installed()
        checks = [
            Check(
                "extension vector installed on the target",
                "vector" in installed,
                observed=installed.get("vector"),
                expected="installed",
            )
        ]
        source = pg(ctx, "source")
        cols = vector_columns(source.tables())
        for table, column in cols[:1]:
            if not target.table_exists(table.schema, table.name) or target.row_count(table.schema, table.name) == 0:
                checks.append(
                    Check(
                        f"nearest-neighbour ids {table.qualified}.{column}",
                        True,
                        observed="no data yet",
                        detail="compared again by data-validate after rds-restore",
                    )
                )
                continue
            s, t = nearest_ids(source, table, column), nearest_ids(target, table, column)
            checks.append(Check(f"nearest-neighbour ids {table.qualified}.{column}", s == t, observed=t, expected=s))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        if ctx.upstream.get(self.id, {}).get("created") is False:
            ctx.log("extension vector existed before pgvector ran: left in place")
            return
        target = pg(ctx, "target")
        if "vector" in target.extensions_installed():
            ctx.intent("drop-extension", name="vector", target=target.endpoint)
            target.execute("DROP EXTENSION IF EXISTS vector RESTRICT")


def _restore_options(ctx: StepContext) -> Any:
    from migrate.adapters.pgcopy import RestoreOptions

    return RestoreOptions(
        workers=int(ctx.setting("workers", 2)),
        chunk_rows=int(ctx.setting("chunk_rows", 500_000)),
        chunk_bytes=int(float(ctx.setting("chunk_mb", 64)) * MB),
        pause_s=float(ctx.setting("pause_between_chunks_s", 0.0)),
        analyze=bool(ctx.setting("analyze", True)),
        maintenance_work_mem=str(ctx.setting("maintenance_work_mem", "256MB")),
        consistent_snapshot=bool(ctx.setting("consistent_snapshot", True)),
    )


class RdsRestore(Step):
    """Copy the source database into the target: pre-data, parallel binary COPY by key-range chunks, sequences,
    post-data.

    Resumable per chunk: each chunk's rows and its completion record (_bpmigrate.copy_progress on the TARGET)
    commit in one transaction, so a killed copy resumes without recopying finished chunks and without duplicates.
    Overwrites the target database's objects; never writes to the source. Rollback drops the target's user objects.
    """

    id = "rds-restore"
    phase = 2
    depends_on = ("pg-backup", "rds", "pgvector")
    reversibility = Reversibility.COMPENSABLE
    destructive = True

    def plan(self, ctx: StepContext) -> PlanResult:
        from migrate.adapters.pgcopy import restore_status

        source = pg(ctx, "source")
        tables = source.tables()
        opts = _restore_options(ctx)
        total_rows = sum(t.est_rows for t in tables)
        total_bytes = sum(t.bytes for t in tables)
        result = PlanResult(data={"tables": [t.qualified for t in tables], "workers": opts.workers})
        missing = _target_address_known(ctx, "postgres")
        if missing:
            result.unknown.append(missing)
            result.changes.append(Change("replace", "target database objects", "restore of the whole source schema"))
            return result
        target = pg(ctx, "target")
        _refuse_same_database(source, target)
        status = restore_status(target)
        result.findings += extension_findings(source, target)
        blobs = source.large_object_count()
        if blobs:
            result.findings.append(
                Finding(
                    "block",
                    f"the source has {blobs} large object(s) (pg_largeobject): the COPY fast path does not move them",
                    "move them into bytea columns first, or restore them from the pg-backup archive with "
                    "pg_restore --data-only --section=data -t pg_largeobject",
                )
            )
        if status["complete"]:
            result.in_place.append(f"restore complete on {target.endpoint} ({status['rows_copied']} rows copied)")
            return result
        if status["stages"]:
            result.findings.append(
                Finding(
                    "info",
                    f"resuming: stages done {status['stages']}, "
                    f"{status['chunks_done']}/{status['chunks_planned']} chunks copied",
                )
            )
        else:
            existing = target.user_tables()
            if existing:
                result.findings.append(
                    Finding(
                        "warn",
                        f"the target already has {len(existing)} table(s) "
                        f"({', '.join(existing[:5])}): they will be DROPPED and replaced",
                        "point postgres.target at the right database if this is unexpected",
                    )
                )
            result.changes.append(
                Change("create", "schema (pre-data)", f"pg_restore --section=pre-data into {target.endpoint}")
            )
        for t in tables:
            result.changes.append(
                Change(
                    "create",
                    f"rows of {t.qualified}",
                    f"~{t.est_rows} rows, {t.bytes / MB:.1f} MB, key {t.key or '(none: one chunk)'}",
                )
            )
        result.changes.append(Change("update", "sequences", f"{len(source.sequences())} set to the source values"))
        result.changes.append(Change("create", "post-data", "indexes, constraints, triggers"))
        result.findings.append(
            Finding(
                "info",
                f"~{total_rows} rows, {total_bytes / MB:.0f} MB with "
                f"{opts.workers} parallel workers, chunks of ≤{opts.chunk_bytes // MB} MB",
            )
        )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        from migrate.adapters.pgcopy import Chunk, Progress, run_restore

        source = pg(ctx, "source")
        target = pg(ctx, "target")
        _refuse_same_database(source, target)
        blocking = [f for f in extension_findings(source, target) if f.level == "block"]
        if source.large_object_count():
            raise StepFailed(
                "the source has large objects, which the COPY fast path does not move",
                "pg_largeobject is not a user table",
                f"bpmigrate plan --step {self.id} --env {ctx.env_name} (see the finding's fix)",
            )
        if blocking:
            raise StepFailed(blocking[0].message, "the target lacks an extension the data needs", blocking[0].fix)
        opts = _restore_options(ctx)
        workdir = ctx.artifacts_dir()
        ctx.intent("restore", source=source.endpoint, target=target.endpoint, workers=opts.workers)
        progress = Progress()
        finished: list[tuple[Chunk, int, int, float]] = []
        total_rows = sum(t.est_rows for t in source.tables())
        started = time.monotonic()
        with ctx.progress(
            f"copy {source.dbname} → {target.endpoint}", total=float(max(total_rows, 1)), unit="rows"
        ) as bar:
            seen = [0, 0]

            def poll() -> None:
                rows, nbytes, _ = progress.snapshot()
                if rows > seen[0] or nbytes > seen[1]:
                    bar.advance(rows - seen[0], bytes=float(nbytes - seen[1]))
                    seen[0], seen[1] = rows, nbytes
                while finished:
                    chunk, r, b, s = finished.pop(0)
                    ctx.checkpoints.put(f"chunk:{chunk.label}", {"rows": r, "bytes": b, "seconds": round(s, 3)})

            def on_plan(chunks: list[Chunk], done: dict[tuple[str, int], tuple[int, int]]) -> None:
                already = sum(r for r, _ in done.values())
                if already:
                    ctx.log(f"resuming: {len(done)}/{len(chunks)} chunks ({already} rows) already in the target")
                    bar.advance(already)
                    seen[0] = 0
                bar.update(description=f"copy {len(chunks)} chunks ({opts.workers} workers)")

            stats = run_restore(
                source,
                target,
                workdir,
                opts,
                progress=progress,
                poll=poll,
                on_stage=lambda stage: ctx.log(f"rds-restore: {stage}"),
                on_chunk=lambda c, r, b, s: finished.append((c, r, b, s)),
                on_plan=on_plan,
            )
            poll()
        seconds = time.monotonic() - started
        ctx.metrics(rows=float(stats.rows), bytes=float(stats.bytes), seconds=seconds)
        return {
            "target": target.endpoint,
            "stages_run": stats.stages_run,
            "chunks_total": stats.chunks_total,
            "chunks_copied": stats.chunks_copied,
            "chunks_resumed": stats.chunks_skipped,
            "rows_copied": stats.rows,
            "bytes_copied": stats.bytes,
            "copy_seconds": round(stats.seconds, 2),
            "seconds": round(seconds, 2),
            "mb_per_s": round(stats.bytes / MB / stats.seconds, 1) if stats.seconds else None,
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.pgcopy import restore_status

        source, target = pg(ctx, "source"), pg(ctx, "target")
        status = restore_status(target)
        tables = source.tables()
        checks = [
            Check(
                "restore complete (target _bpmigrate.restore_state)",
                status["complete"],
                observed=status["stages"],
                expected="post-data done",
            )
        ]
        present = {t.qualified for t in target.tables()}
        src_counts = source.row_counts(tables)
        dst_counts = target.row_counts([t for t in tables if t.qualified in present])
        for name, n in src_counts.items():
            checks.append(Check(f"rows {name}", dst_counts.get(name) == n, observed=dst_counts.get(name), expected=n))
        src_seq = {s.qualified: s.last_value for s in source.sequences()}
        dst_seq = {s.qualified: s.last_value for s in target.sequences()}
        checks.append(Check("sequences", src_seq == dst_seq, observed=dst_seq, expected=src_seq))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        from migrate.adapters.pgcopy import drop_copy_state, drop_user_objects

        source, target = pg(ctx, "source"), pg(ctx, "target")
        _refuse_same_database(source, target)
        ctx.intent("drop-target-objects", target=target.endpoint)
        dropped = drop_user_objects(target)
        drop_copy_state(target)
        ctx.checkpoints.clear()
        ctx.log(f"dropped {len(dropped)} object(s) on the target {target.endpoint}: {', '.join(dropped[:10])}")


class DataValidate(Step):
    """Validate the target against the source, independently of the copy: exact row counts, per-chunk content
    checksums (binary send form of every column, md5 per row, summed per key range) on both sides in parallel,
    sequence values, extensions, and a pgvector nearest-neighbour query. Any mismatch fails naming table and chunk.
    Resumable: chunks already found equal are recorded as checkpoints and skipped.
    """

    id = "data-validate"
    phase = 2
    depends_on = ("rds-restore",)
    reversibility = Reversibility.REVERSIBLE  # read-only

    def _chunks(self, ctx: StepContext, source: PostgresAdapter, tables: list[TableInfo]) -> Any:
        from migrate.adapters.postgres import validation_chunks

        return validation_chunks(
            source,
            tables,
            chunk_rows=int(ctx.setting("chunk_rows", 1_000_000)),
            chunk_bytes=int(float(ctx.setting("chunk_mb", 128)) * MB),
        )

    def plan(self, ctx: StepContext) -> PlanResult:
        source = pg(ctx, "source")
        tables = source.tables()
        result = PlanResult(
            changes=[
                Change(
                    "run",
                    f"checksum {len(tables)} tables on both sides",
                    "row counts, content checksums, sequences, extensions, pgvector query",
                )
            ]
        )
        missing = _target_address_known(ctx, "postgres")
        if missing:
            result.unknown.append(missing)
            return result
        result.findings += extension_findings(source, pg(ctx, "target"))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        from migrate.adapters.pgcopy import stages_done
        from migrate.adapters.postgres import (
            INTERNAL_SCHEMA,
            ChunkVerdict,
            nearest_ids_background,
            validate_chunks,
            vector_columns,
        )

        source, target = pg(ctx, "source"), pg(ctx, "target")
        started = time.monotonic()
        tables = source.tables()
        problems: list[str] = []
        target_tables = {t.qualified for t in target.tables()}
        missing = [t.qualified for t in tables if t.qualified not in target_tables]
        extra = sorted(target_tables - {t.qualified for t in tables})
        if missing:
            problems.append(f"tables missing on the target: {', '.join(missing)}")
        if extra:
            problems.append(f"tables on the target but not on the source: {', '.join(extra)}")
        present = [t for t in tables if t.qualified in target_tables]
        chunks = self._chunks(ctx, source, present)
        # checkpoints are namespaced by the restore they validate: a new restore is validated afresh
        marker = ""
        if "post-data" in stages_done(target):
            marker = str(
                target.query(f"SELECT done_at::text FROM {INTERNAL_SCHEMA}.restore_state WHERE stage = 'post-data'")[0][
                    0
                ]
            )
        tag = hashlib.sha256(marker.encode()).hexdigest()[:8]
        done = ctx.checkpoints.all()
        todo = [c for c in chunks if f"ok:{tag}:{c.key}" not in done]
        # the pgvector nearest-neighbour query (exact scan, both sides) runs alongside the chunk checksums
        vec_table, vec_col = ctx.setting("vector_table"), ctx.setting("vector_column")
        candidates = vector_columns(present)
        if vec_table:
            candidates = [(t, c) for t, c in candidates if t.qualified == vec_table and (not vec_col or c == vec_col)]
        nn_join = None
        if candidates:
            nn_table, nn_column = candidates[0]
            nn_join = nearest_ids_background(
                source,
                target,
                nn_table,
                nn_column,
                int(ctx.setting("nn_k", 10)),
                int(ctx.setting("nn_scan_rows", 20_000)),
            )
        verdicts: list[ChunkVerdict] = []
        with ctx.progress("validate chunks (source + target)", total=float(len(chunks)), unit="chunks") as bar:
            bar.advance(len(chunks) - len(todo))

            def on_verdict(v: ChunkVerdict) -> None:
                verdicts.append(v)
                bar.advance(1, rows=float(v.source_rows))
                if v.ok:
                    ctx.checkpoints.put(f"ok:{tag}:{v.chunk.key}", {"rows": v.source_rows})

            validate_chunks(
                source, target, present, todo, workers=int(ctx.setting("workers", 2)), on_verdict=on_verdict
            )
        bad = [v for v in verdicts if not v.ok]
        for v in bad[:20]:
            why = v.error or (
                f"rows source {v.source_rows} vs target {v.target_rows}"
                if v.source_rows != v.target_rows
                else "same row count, different content checksum"
            )
            problems.append(f"{v.chunk.describe()}: {why}")
        rows: dict[str, int] = {}
        for c in chunks:
            cp = done.get(f"ok:{tag}:{c.key}")
            rows[c.table] = rows.get(c.table, 0) + int(cp["rows"] if cp else 0)
        for v in verdicts:
            rows[v.chunk.table] = rows.get(v.chunk.table, 0) + v.source_rows
        src_seq = {s.qualified: (s.last_value, s.is_called) for s in source.sequences()}
        dst_seq = {s.qualified: (s.last_value, s.is_called) for s in target.sequences()}
        for name, value in src_seq.items():
            if dst_seq.get(name) != value:
                problems.append(f"sequence {name}: source {value} vs target {dst_seq.get(name)}")
        src_ext, dst_ext = source.extensions_installed(), target.extensions_installed()
        for name, version in src_ext.items():
            if dst_ext.get(name) != version:
                problems.append(f"extension {name}: source {version} vs target {dst_ext.get(name, 'missing')}")
        nn: dict[str, Any] = {}
        if nn_join is not None:
            s_ids, t_ids = nn_join()
            nn = {"table": nn_table.qualified, "column": nn_column, "ids": s_ids, "match": s_ids == t_ids}
            if s_ids != t_ids:
                problems.append(
                    f"pgvector nearest-neighbour query on {nn_table.qualified}.{nn_column}: source {s_ids} vs target {t_ids}"
                )
        seconds = time.monotonic() - started
        ctx.metrics(rows=float(sum(rows.values())), seconds=seconds)
        if problems:
            raise StepFailed(
                f"data-validate found {len(problems)} mismatch(es); first: {problems[0]}",
                "; ".join(problems[:10]),
                f"inspect the named table/chunk, then `bpmigrate rollback --step rds-restore --env {ctx.env_name}` and "
                "re-apply it (or fix the rows) and re-run data-validate",
            )
        return {
            "tables": len(present),
            "chunks": len(chunks),
            "chunks_resumed": len(chunks) - len(todo),
            "rows": rows,
            "sequences": len(src_seq),
            "extensions": sorted(src_ext),
            "nearest_neighbours": nn,
            "seconds": round(seconds, 2),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        source, target = pg(ctx, "source"), pg(ctx, "target")
        tables = source.tables()
        present = {t.qualified for t in target.tables()}
        src, dst = source.row_counts(tables), target.row_counts([t for t in tables if t.qualified in present])
        checks = [
            Check(f"exact rows {name}", dst.get(name) == n, observed=dst.get(name), expected=n)
            for name, n in src.items()
        ]
        src_ext = source.extensions_installed()
        dst_ext = target.extensions_installed()
        checks.append(
            Check(
                "extensions", all(dst_ext.get(k) == v for k, v in src_ext.items()), observed=dst_ext, expected=src_ext
            )
        )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        ctx.checkpoints.clear()  # read-only step: only its progress markers to forget


# -- Redis -----------------------------------------------------------------------------------------------------------
def redis_routes(ctx: StepContext, source: RedisAdapter, target: RedisAdapter) -> list[DbRoute]:
    from migrate.adapters.redis_copy import routes

    return routes(
        source.dbs,
        cluster_mode=target.cluster_mode,
        db_map={str(k): int(v) for k, v in dict(ctx.setting("db_map", {}) or {}).items()},
        db_prefix={str(k): str(v) for k, v in dict(ctx.setting("db_prefix", {}) or {}).items()},
    )


class RedisMigrate(Step):
    """Copy every key of the source Redis DBs to the target, keeping TTLs and types.

    Batched MIGRATE COPY REPLACE (the source pushes straight to the target) where possible, pipelined
    DUMP/PTTL/RESTORE REPLACE otherwise (TLS, cluster mode, prefix mapping). Cluster mode has only DB 0: DB n is
    mapped to a key prefix (setting db_prefix). Resumable from the last SCAN cursor of each DB.
    """

    id = "redis-migrate"
    phase = 2
    depends_on = ("elasticache",)
    reversibility = Reversibility.COMPENSABLE
    destructive = True  # REPLACE overwrites target keys of the same name

    def plan(self, ctx: StepContext) -> PlanResult:
        from migrate.adapters.redis_copy import choose_method

        source = rds(ctx, "source")
        space = source.keyspace()
        result = PlanResult(data={"dbs": source.dbs})
        missing = _target_address_known(ctx, "redis")
        target_cfg = ctx.adapters.redis("target")
        routes_ = redis_routes(ctx, source, target_cfg)
        if target_cfg.cluster_mode:
            extra = [r for r in routes_ if r.source_db != 0 and space.get(r.source_db, 0)]
            result.findings.append(
                Finding(
                    "warn",
                    "the target is in cluster mode (only DB 0): " + "; ".join(r.describe() for r in routes_),
                    "applications must read DB n's keys with the prefix shown; set [steps.redis-migrate] db_prefix "
                    "to choose the prefixes"
                    if extra
                    else "",
                )
            )
        done = ctx.checkpoints.all()
        for r in routes_:
            n = space.get(r.source_db, 0)
            method, why = choose_method(str(ctx.setting("method", "auto")), target_cfg, r)
            cp = done.get(f"db{r.source_db}")
            if cp and cp.get("done"):
                result.in_place.append(f"{r.describe()}: copied ({cp.get('keys')} keys)")
                continue
            detail = f"{n} keys by {method} ({why})"
            if cp:
                detail += f"; resumes at SCAN cursor {cp.get('cursor')}"
            result.changes.append(Change("create", f"keys of {r.describe()}", detail))
        if missing:
            result.unknown.append(missing)
        else:
            target = rds(ctx, "target")
            tspace = target.keyspace()
            if any(tspace.values()):
                result.findings.append(
                    Finding(
                        "warn",
                        f"the target already holds keys {tspace}: same-named keys will be overwritten (REPLACE)",
                        "",
                    )
                )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        from migrate.adapters.redis_copy import choose_method, copy_db

        source, target = rds(ctx, "source"), rds(ctx, "target")
        if (source.host, source.port) == (target.host, target.port):
            raise ConfigError(
                f"redis.source and redis.target are the same server ({source.endpoint})",
                "the copy would overwrite the source",
                "fix redis.target in migrate.toml",
            )
        target.ping()
        routes_ = redis_routes(ctx, source, target)
        space = source.keyspace()
        done = ctx.checkpoints.all()
        batch = int(ctx.setting("batch", 1000))
        out: dict[str, Any] = {"dbs": {}, "method": {}}
        total = sum(space.get(r.source_db, 0) for r in routes_)
        started = time.monotonic()
        keys_total = 0
        with ctx.progress("redis keys", total=float(max(total, 1)), unit="keys") as bar:
            for r in routes_:
                cp = done.get(f"db{r.source_db}") or {}
                if cp.get("done"):
                    bar.advance(int(cp.get("keys", 0)))
                    out["dbs"][str(r.source_db)] = cp.get("keys", 0)
                    continue
                method, why = choose_method(str(ctx.setting("method", "auto")), target, r)
                ctx.intent("redis-copy", route=r.describe(), method=method, cursor=cp.get("cursor", 0))
                ctx.log(f"redis-migrate {r.describe()}: {method} ({why})")
                state = {"keys": int(cp.get("keys", 0)), "last": 0.0}
                if state["keys"]:
                    bar.advance(state["keys"])

                def on_batch(cursor: int, n: int, r: DbRoute = r, state: dict[str, Any] = state) -> None:
                    state["keys"] += n
                    bar.advance(n)
                    now = time.monotonic()
                    if cursor != 0 and now - state["last"] >= 0.5:
                        ctx.checkpoints.put(f"db{r.source_db}", {"cursor": cursor, "keys": state["keys"]})
                        state["last"] = now

                res = copy_db(
                    source,
                    target,
                    r,
                    method=method,
                    batch=batch,
                    start_cursor=int(cp.get("cursor", 0)),
                    migrate_host=ctx.setting("migrate_host") or None,
                    migrate_port=ctx.setting("migrate_port") or None,
                    timeout_ms=int(ctx.setting("timeout_ms", 10_000)),
                    on_batch=on_batch,
                    server_side=bool(ctx.setting("server_side", True)),
                )
                if res.fell_back:
                    ctx.log(res.fell_back)
                ctx.checkpoints.put(f"db{r.source_db}", {"done": True, "keys": state["keys"]})
                out["dbs"][str(r.source_db)] = state["keys"]
                out["method"][str(r.source_db)] = res.method
                keys_total += res.keys
        seconds = time.monotonic() - started
        out["keys_copied_this_run"] = keys_total
        out["seconds"] = round(seconds, 2)
        out["keys_per_s"] = round(keys_total / seconds) if seconds > 0 else None
        out["routes"] = [r.describe() for r in routes_]
        ctx.metrics(keys=float(keys_total), seconds=seconds)
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        return _redis_count_checks(ctx)

    def rollback(self, ctx: StepContext) -> None:
        from migrate.adapters.redis_copy import delete_copied

        source, target = rds(ctx, "source"), rds(ctx, "target")
        if (source.host, source.port) == (target.host, target.port):
            raise ConfigError(
                f"redis.source and redis.target are the same server ({source.endpoint})",
                "rollback deletes keys on the target",
                "fix redis.target in migrate.toml",
            )
        for r in redis_routes(ctx, source, target):
            ctx.intent("redis-delete-copied", route=r.describe())
            n = delete_copied(source, target, r)
            ctx.log(f"deleted {n} key(s) of {r.describe()} on the target")
        ctx.checkpoints.clear()


def _redis_counts(source: RedisAdapter, target: RedisAdapter, routes_: list[DbRoute]) -> dict[int, tuple[int, int]]:
    """source DB -> (source keys, target keys under that DB's mapping)."""
    out: dict[int, tuple[int, int]] = {}
    prefixed = [r for r in routes_ if r.prefix]
    for r in routes_:
        src_n = source.dbsize(r.source_db)
        if not target.cluster_mode:
            dst_n = target.dbsize(r.target_db)
        elif r.prefix:
            dst_n = target.count_matching(r.target_db, r.prefix)
        else:
            dst_n = target.dbsize(r.target_db) - sum(target.count_matching(0, p.prefix) for p in prefixed)
        out[r.source_db] = (src_n, dst_n)
    return out


def _redis_count_checks(ctx: StepContext) -> list[Check]:
    source, target = rds(ctx, "source"), rds(ctx, "target")
    routes_ = redis_routes(ctx, source, target)
    counts = _redis_counts(source, target, routes_)
    return [
        Check(
            f"keys {r.describe()}",
            counts[r.source_db][0] == counts[r.source_db][1],
            observed=counts[r.source_db][1],
            expected=counts[r.source_db][0],
        )
        for r in routes_
    ]


class RedisVerify(Step):
    """Verify the Redis copy: PING, key counts per source DB vs the target, a two-way key diff on a sample (or all
    keys: sample = 0), value and TTL comparison within a tolerance."""

    id = "redis-verify"
    phase = 2
    depends_on = ("redis-migrate",)
    reversibility = Reversibility.REVERSIBLE  # read-only

    def plan(self, ctx: StepContext) -> PlanResult:
        n = int(ctx.setting("sample", 1000))
        return PlanResult(
            changes=[
                Change(
                    "run",
                    "compare Redis source and target",
                    f"counts, two-way key diff on {'all keys' if n == 0 else f'{n} keys per DB'}, "
                    f"values and TTLs (±{int(ctx.setting('ttl_tolerance_ms', 5000))} ms)",
                )
            ]
        )

    def apply(self, ctx: StepContext) -> Outputs:
        source, target = rds(ctx, "source"), rds(ctx, "target")
        problems: list[str] = []
        if not (source.ping() and target.ping()):
            problems.append("PING failed")
        routes_ = redis_routes(ctx, source, target)
        counts = _redis_counts(source, target, routes_)
        for r in routes_:
            s, t = counts[r.source_db]
            if s != t:
                problems.append(f"{r.describe()}: {s} keys on the source, {t} on the target")
        sample = int(ctx.setting("sample", 1000))
        tolerance = int(ctx.setting("ttl_tolerance_ms", 5000))
        compared = 0
        for r in routes_:
            keys = self._sample(source, r.source_db, sample)
            compared += len(keys)
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                tkeys = [r.target_key(k) for k in part]
                sv, tv = source.read_values(r.source_db, part), target.read_values(r.target_db, tkeys)
                st, tt = source.pttl_many(r.source_db, part), target.pttl_many(r.target_db, tkeys)
                for k, a, b, ta, tb in zip(part, sv, tv, st, tt, strict=True):
                    if a[0] == "none":
                        continue  # expired/deleted on the source meanwhile
                    if b[0] == "none":
                        problems.append(f"db {r.source_db}: key {k!r} missing on the target")
                    elif a != b:
                        problems.append(f"db {r.source_db}: key {k!r} differs ({a[0]} vs {b[0]})")
                    elif (ta < 0) != (tb < 0) or (ta >= 0 and abs(ta - tb) > tolerance):
                        problems.append(
                            f"db {r.source_db}: key {k!r} TTL {ta} ms on the source vs {tb} ms on the target"
                        )
            # the other direction: keys on the target (under this DB's mapping) must exist on the source
            tkeys = [k for k in self._sample(target, r.target_db, sample) if self._owner(k, routes_, r) is r]
            orig = [k[len(r.prefix) :] for k in tkeys]
            for k, present in zip(orig, source.exists_many(r.source_db, orig), strict=True):
                if not present:
                    problems.append(f"db {r.source_db}: key {k!r} on the target does not exist on the source")
        if problems:
            raise StepFailed(
                f"redis-verify found {len(problems)} problem(s); first: {problems[0]}",
                "; ".join(problems[:10]),
                f"re-run `bpmigrate apply --step redis-migrate --env {ctx.env_name}` after rollback, "
                "or investigate the keys named",
            )
        return {"counts": {str(k): v[1] for k, v in counts.items()}, "keys_compared": compared}

    @staticmethod
    def _owner(key: bytes, routes_: list[DbRoute], current: DbRoute) -> DbRoute | None:
        same_db = [r for r in routes_ if r.target_db == current.target_db]
        best = max(
            (r for r in same_db if r.prefix and key.startswith(r.prefix)), key=lambda r: len(r.prefix), default=None
        )
        return best or next((r for r in same_db if not r.prefix), None)

    @staticmethod
    def _sample(adapter: RedisAdapter, db: int, n: int) -> list[bytes]:
        if n <= 0:
            return [k for b in adapter.scan_all(db) for k in b]
        return adapter.random_keys(db, n)

    def verify(self, ctx: StepContext) -> list[Check]:
        source, target = rds(ctx, "source"), rds(ctx, "target")
        return [
            Check("PING source", source.ping(), observed=True, expected=True),
            Check("PING target", target.ping(), observed=True, expected=True),
            *_redis_count_checks(ctx),
        ]

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("redis-verify is read-only: nothing to roll back")


# continuous sync (near-zero-downtime path; PostgreSQL logical replication and Redis catch-up) lives with the
# rest of the sync machinery in phases/_sync.py
def _sync_steps() -> list[type[Step]]:
    from phases._sync import PgSyncStep, RedisSyncStep

    return [PgSyncStep, RedisSyncStep]


__steps__ = _sync_steps()
