"""Step ``data-validate``: Validate the target against the source, independently of the copy: exact row counts, per-chunk content"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

if TYPE_CHECKING:
    from migrate.adapters.postgres import PostgresAdapter, TableInfo
from ._common import MB, _target_address_known, extension_findings, fail_on, pg, summary_line


class DataValidate(Step):
    """Validate the target against the source, independently of the copy: exact row counts, per-chunk content
    checksums (binary send form of every column, md5 per row, summed per key range) on both sides in parallel,
    sequence values, extensions, a pgvector nearest-neighbour query, every large object (count, size, sha256) and
    every materialized view (populated as on the source, rows, content). Any mismatch fails naming what differs.
    Resumable: chunks already found equal are recorded as checkpoints and skipped.
    """

    id = "data-validate"
    phase = 2
    depends_on = ("rds-restore",)
    reversibility = Reversibility.REVERSIBLE  # read-only

    class Settings(StepSettings):
        workers: int = Field(2, ge=1, description="chunks checksummed at once (each on both sides)")
        chunk_mb: float = Field(128, gt=0, description="validation chunk size (key ranges)")
        chunk_rows: int = Field(1_000_000, ge=1, description="...or this many rows per chunk")
        nn_k: int = Field(10, ge=1, description="pgvector nearest-neighbour ids compared on both sides")
        nn_scan_rows: int = Field(20_000, ge=0, description="rows the nearest-neighbour query scans (0: all)")
        vector_table: str | None = Field(None, description="schema.table of the vector column (default: first found)")
        vector_column: str | None = Field(None, description="the vector column (default: first of vector_table)")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        rows = outputs.get("rows")
        if not isinstance(rows, dict):
            return ""
        head = [f"{sum(int(v) for v in rows.values()):,} rows equal", f"{outputs.get('chunks', 0)} chunks"]
        return summary_line(outputs, head, large_objects="large objects", matviews="matviews")

    def _extras(self, source: PostgresAdapter, target: PostgresAdapter) -> tuple[list[str], dict[str, Any]]:
        """Large objects (count and every object's size + sha256) and materialized views (populated as on the
        source; rows and content checksum): (problems, outputs)."""
        problems: list[str] = []
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="lodigest") as pool:  # both sides at once
            fs, ft = pool.submit(source.large_object_digests), pool.submit(target.large_object_digests)
            src_lo, dst_lo = fs.result(), ft.result()
        if len(src_lo) != len(dst_lo):
            problems.append(f"large objects: source {len(src_lo)} vs target {len(dst_lo)}")
        differ = [oid for oid, d in src_lo.items() if dst_lo.get(oid) != d]
        if differ:
            problems.append(f"large objects missing or different on the target: {differ[:10]}")
        views: dict[str, Any] = {}
        target_views = {v.qualified: v for v in target.matviews()}
        for v in source.matviews():
            theirs = target_views.get(v.qualified)
            if theirs is None:
                problems.append(f"materialized view {v.qualified} missing on the target")
                continue
            want, have = source.matview_digest(v), target.matview_digest(theirs)
            views[v.qualified] = want[0] if want else "not populated"
            if want != have:
                problems.append(
                    f"materialized view {v.qualified}: source {want or 'not populated'} vs target "
                    f"{have or 'not populated'}"
                )
        return problems, {"large_objects": len(src_lo), "matviews": views}

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
                    "row counts, content checksums, sequences, extensions, pgvector query, large objects, "
                    "materialized views",
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
        extra_problems, extras = self._extras(source, target)
        problems += extra_problems
        seconds = time.monotonic() - started
        ctx.metrics(rows=float(sum(rows.values())), seconds=seconds)
        fix = (
            f"inspect the named table/chunk, then `bpmigrate rollback --step rds-restore --env {ctx.env_name}` and "
            "re-apply it (or fix the rows) and re-run data-validate"
        )
        fail_on(problems, self.id, "mismatch(es)", fix)
        return {
            "tables": len(present),
            "chunks": len(chunks),
            "chunks_resumed": len(chunks) - len(todo),
            "rows": rows,
            "sequences": len(src_seq),
            "extensions": sorted(src_ext),
            "nearest_neighbours": nn,
            **extras,
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
        n_lo, t_lo = source.large_object_count(), target.large_object_count()
        checks.append(Check("large objects (count)", n_lo == t_lo, observed=t_lo, expected=n_lo))
        target_views = {v.qualified: v for v in target.matviews()}
        for v in source.matviews():
            want = source.matview_digest(v)
            have = target.matview_digest(target_views[v.qualified]) if v.qualified in target_views else "missing"
            checks.append(
                Check(
                    f"materialized view {v.qualified} (populated, rows)",
                    (want[0] if want else None) == (have[0] if isinstance(have, tuple) else have),
                    observed=have[0] if isinstance(have, tuple) else have or "not populated",
                    expected=want[0] if want else "not populated",
                )
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        ctx.checkpoints.clear()  # read-only step: only its progress markers to forget
