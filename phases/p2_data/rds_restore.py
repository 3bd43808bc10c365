"""Step ``rds-restore``: Copy the source database into the target: pre-data, parallel binary COPY by key-range chunks, sequences,"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.errors import StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from ._common import (
    MB,
    _refuse_same_database,
    _restore_options,
    _target_address_known,
    extension_findings,
    pg,
    summary_line,
)


class RdsRestore(Step):
    """Copy the source database into the target: pre-data, parallel binary COPY by key-range chunks, large objects,
    sequences, post-data (with the refresh of the materialized views populated on the source).

    Resumable per chunk: each chunk's rows and its completion record (_bpmigrate.copy_progress on the TARGET)
    commit in one transaction, so a killed copy resumes without recopying finished chunks and without duplicates.
    Overwrites the target database's objects; never writes to the source. Rollback drops the target's user objects.
    """

    id = "rds-restore"
    phase = 2
    depends_on = ("pg-backup", "rds", "pgvector")
    reversibility = Reversibility.COMPENSABLE
    destructive = True

    class Settings(StepSettings):
        workers: int = Field(2, ge=1, description="parallel COPY streams (2 cores here: measure before raising)")
        chunk_mb: float = Field(64, gt=0, description="tables are split into key ranges of about this size...")
        chunk_rows: int = Field(500_000, ge=1, description="...or this many rows, whichever gives more chunks")
        analyze: bool = Field(True, description="ANALYZE the target after post-data")
        maintenance_work_mem: str = Field("256MB", description="for the index builds of post-data")
        consistent_snapshot: bool = Field(True, description="all workers read one exported source snapshot")
        pause_between_chunks_s: float = Field(0.0, ge=0, description="throttle (spare the source in business hours)")

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
        views = source.matviews()
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
        if blobs:
            result.changes.append(
                Change("create", "large objects", f"{blobs} copied with their OIDs, owners and grants (resumable)")
            )
        result.changes.append(Change("update", "sequences", f"{len(source.sequences())} set to the source values"))
        populated = [v.qualified for v in views if v.populated]
        result.changes.append(
            Change(
                "create",
                "post-data",
                "indexes, constraints, triggers"
                + (f"; refresh {len(populated)} materialized view(s) in dependency order" if populated else ""),
            )
        )
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
            "large_objects": stats.large_objects,
            "large_object_bytes": stats.large_object_bytes,
            "matviews_refreshed": stats.matviews_refreshed,
        }

    def summary(self, outputs: Mapping[str, Any]) -> str:
        if "rows_copied" not in outputs:
            return ""
        head = [f"{int(outputs['rows_copied']):,} rows", f"{int(outputs.get('bytes_copied') or 0) / MB:,.0f} MB"]
        return summary_line(
            outputs, head, mb_per_s="MB/s", large_objects="large objects", chunks_resumed="chunks resumed"
        )

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
        n_lo, t_lo = source.large_object_count(), target.large_object_count()
        checks.append(Check("large objects (count)", n_lo == t_lo, observed=t_lo, expected=n_lo))
        want = {v.qualified: v.populated for v in source.matviews()}
        have = {v.qualified: v.populated for v in target.matviews()}
        checks.append(
            Check("materialized views populated as on the source", want == have, observed=have, expected=want)
        )
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
