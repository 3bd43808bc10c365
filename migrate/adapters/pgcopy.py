"""The PostgreSQL fast path: schema pre-data, parallel chunked binary COPY source → target, sequences, post-data.

Resumability lives IN THE TARGET, in the schema ``_bpmigrate``:

* ``restore_state(stage)``: stages done (``pre-data``, ``plan``, ``data``, ``sequences``, ``post-data``);
* ``copy_plan(table_name, chunk, lo, hi)``: the chunk plan, computed once, reused on resume;
* ``copy_progress(table_name, chunk, rows, bytes)``: one row per finished chunk, inserted IN THE SAME TRANSACTION
  as the chunk's rows. A killed copy leaves either the chunk's rows and its progress row, or neither; a resumed
  copy skips finished chunks. The progress row's primary key makes a chunk copied twice (two racing runs) fail
  and roll back instead of duplicating rows.

Consistency: within one run every worker (and the schema dump) reads ONE exported snapshot of the source
(``pg_export_snapshot``). A resumed run takes a new snapshot for the chunks it still copies, so a source written
to between the runs can mix two points in time: freeze writes during the copy (phase 5) or re-run data-validate,
which compares the current source with the target chunk by chunk.

Large objects (stage ``large-objects``) are copied after the rows, under the same snapshot, with their OIDs (an
``oid`` column keeps pointing at its object), in chunks through ``lo_get``/``lo_put`` (no superuser needed, as on
RDS); each object and its ``_bpmigrate.lo_progress`` row commit together, so a killed copy resumes per object.

Post-data (indexes, constraints, triggers) runs as one ``psql --single-transaction`` script that also refreshes the
materialized views populated on the source (dependency order; ``WITH NO DATA`` ones stay unpopulated) and inserts
its stage marker: a kill leaves all of it or none of it.

The schema stays until rollback (``drop_copy_state``) so that a finished restore re-applied is a no-op.
The copy streams (binary COPY TO STDOUT piped into COPY FROM STDIN, one row buffer at a time): memory is bounded
whatever the database size.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.adapters.postgres import (
    INTERNAL_SCHEMA,
    SYSTEM_SCHEMAS,
    LargeObjectInfo,
    MatviewInfo,
    PostgresAdapter,
    TableInfo,
    _identity_on,
    _translate,
    chunk_bounds,
    qident,
    qliteral,
    range_where,
)
from migrate.errors import AdapterError

STAGES = ("pre-data", "plan", "data", "large-objects", "sequences", "post-data", "analyzed")

_STATE_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA};
CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.restore_state (
    stage text PRIMARY KEY, done_at timestamptz NOT NULL DEFAULT now(), detail text);
CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.copy_plan (
    table_name text NOT NULL, chunk int NOT NULL, lo text, hi text, est_rows bigint, est_bytes bigint,
    PRIMARY KEY (table_name, chunk));
CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.copy_progress (
    table_name text NOT NULL, chunk int NOT NULL, rows bigint NOT NULL, bytes bigint NOT NULL,
    seconds float8 NOT NULL, done_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_name, chunk));
CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.lo_progress (
    lo oid PRIMARY KEY, bytes bigint NOT NULL, done_at timestamptz NOT NULL DEFAULT now());
"""


@dataclass(frozen=True)
class Chunk:
    table: str  # schema.name
    index: int
    lo: str | None
    hi: str | None
    est_rows: int
    est_bytes: int

    @property
    def label(self) -> str:
        return f"{self.table}#{self.index}"


@dataclass
class CopyStats:
    chunks_total: int = 0
    chunks_skipped: int = 0  # already done by an earlier (killed) run
    chunks_copied: int = 0
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    stages_run: list[str] = field(default_factory=list)
    large_objects: int = 0
    large_object_bytes: int = 0
    matviews_refreshed: int = 0


class Progress:
    """Thread-safe counters the workers bump; the caller polls them (rich progress lives in the step's thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows = 0
        self.bytes = 0
        self.chunks = 0

    def add(self, *, rows: int = 0, nbytes: int = 0, chunks: int = 0) -> None:
        with self._lock:
            self.rows += rows
            self.bytes += nbytes
            self.chunks += chunks

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.rows, self.bytes, self.chunks


# -- state in the target ---------------------------------------------------------------------------------------
def ensure_state(target: PostgresAdapter) -> None:
    with target.session() as conn:
        conn.execute(_STATE_DDL)


def stages_done(target: PostgresAdapter) -> set[str]:
    if not target.schema_exists(INTERNAL_SCHEMA) or not target.table_exists(INTERNAL_SCHEMA, "restore_state"):
        return set()
    return {str(r[0]) for r in target.query(f"SELECT stage FROM {INTERNAL_SCHEMA}.restore_state")}


def mark_stage(target: PostgresAdapter, stage: str, detail: str = "") -> None:
    target.execute(
        f"INSERT INTO {INTERNAL_SCHEMA}.restore_state (stage, detail) VALUES (%s, %s) ON CONFLICT (stage) DO NOTHING",
        [stage, detail],
    )


def done_chunks(target: PostgresAdapter) -> dict[tuple[str, int], tuple[int, int]]:
    if not target.table_exists(INTERNAL_SCHEMA, "copy_progress"):
        return {}
    rows = target.query(f"SELECT table_name, chunk, rows, bytes FROM {INTERNAL_SCHEMA}.copy_progress")
    return {(str(t), int(c)): (int(r), int(b)) for t, c, r, b in rows}


def load_plan(target: PostgresAdapter) -> list[Chunk]:
    if not target.table_exists(INTERNAL_SCHEMA, "copy_plan"):
        return []
    rows = target.query(
        f"SELECT table_name, chunk, lo, hi, est_rows, est_bytes FROM {INTERNAL_SCHEMA}.copy_plan ORDER BY 1, 2"
    )
    return [Chunk(str(t), int(c), lo, hi, int(r or 0), int(b or 0)) for t, c, lo, hi, r, b in rows]


def save_plan(target: PostgresAdapter, chunks: Sequence[Chunk]) -> None:
    with target.session(autocommit=False) as conn:
        conn.execute(f"DELETE FROM {INTERNAL_SCHEMA}.copy_plan")
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {INTERNAL_SCHEMA}.copy_plan VALUES (%s, %s, %s, %s, %s, %s)",
                [(c.table, c.index, c.lo, c.hi, c.est_rows, c.est_bytes) for c in chunks],
            )
        conn.execute(f"INSERT INTO {INTERNAL_SCHEMA}.restore_state (stage) VALUES ('plan') ON CONFLICT DO NOTHING")
        conn.commit()


def drop_copy_state(target: PostgresAdapter) -> None:
    target.execute(f"DROP SCHEMA IF EXISTS {INTERNAL_SCHEMA} CASCADE")


# -- the chunk plan ----------------------------------------------------------------------------------------------
def n_chunks_for(table: TableInfo, chunk_rows: int, chunk_bytes: int) -> int:
    if table.key is None:
        return 1
    by_rows = table.est_rows / max(1, chunk_rows)
    by_bytes = table.bytes / max(1, chunk_bytes)
    return max(1, min(10_000, math.ceil(max(by_rows, by_bytes))))


def plan_chunks(
    source: PostgresAdapter, tables: Sequence[TableInfo], *, chunk_rows: int, chunk_bytes: int
) -> list[Chunk]:
    """Split each table by ranges of its key (sampled percentiles: skew-proof, any ordered type)."""
    out: list[Chunk] = []
    with source.session() as conn:
        for t in tables:
            n = n_chunks_for(t, chunk_rows, chunk_bytes)
            bounds = chunk_bounds(conn, t, n)
            edges: list[str | None] = [None, *bounds, None]
            pieces = len(edges) - 1
            for i in range(pieces):
                out.append(Chunk(t.qualified, i, edges[i], edges[i + 1], t.est_rows // pieces, t.bytes // pieces))
    return out


# -- copying -------------------------------------------------------------------------------------------------------
def _copy_sql(table: TableInfo, chunk: Chunk) -> tuple[str, str]:
    cols = ", ".join(qident(c.name) for c in table.copy_columns)
    where = range_where(table, chunk.lo, chunk.hi)
    src = f"COPY (SELECT {cols} FROM {qident(table.schema, table.name)} {where}) TO STDOUT (FORMAT binary)"
    dst = f"COPY {qident(table.schema, table.name)} ({cols}) FROM STDIN (FORMAT binary)"
    return src, dst


class _Worker:
    def __init__(
        self, source: PostgresAdapter, target: PostgresAdapter, snapshot: str | None, progress: Progress
    ) -> None:
        from psycopg import IsolationLevel

        self.src = source.connect(autocommit=False)
        self.src.isolation_level = IsolationLevel.REPEATABLE_READ
        self.src.read_only = True
        if snapshot:
            self.src.execute(f"SET TRANSACTION SNAPSHOT {qliteral(snapshot)}")
        self.dst = target.connect(autocommit=False)
        # safe: a chunk's rows and its progress row commit (or vanish) together, even on a server crash
        self.dst.execute("SET synchronous_commit = off")
        self.dst.commit()
        self.progress = progress
        self.source = source
        self.target = target

    def copy(self, table: TableInfo, chunk: Chunk) -> tuple[int, int, float]:
        import psycopg

        out_sql, in_sql = _copy_sql(table, chunk)
        started = time.monotonic()
        nbytes = 0
        pending = 0
        try:
            with self.src.cursor() as sc, self.dst.cursor() as dc:
                with sc.copy(out_sql) as cout, dc.copy(in_sql) as cin:
                    for data in cout:
                        cin.write(data)
                        pending += len(data)
                        if pending >= 4 << 20:
                            self.progress.add(nbytes=pending)
                            nbytes += pending
                            pending = 0
                rows = dc.rowcount
                seconds = time.monotonic() - started
                nbytes += pending
                dc.execute(
                    f"INSERT INTO {INTERNAL_SCHEMA}.copy_progress (table_name, chunk, rows, bytes, seconds) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [chunk.table, chunk.index, rows, nbytes, seconds],
                )
            self.dst.commit()
        except psycopg.Error as exc:
            try:
                self.dst.rollback()
            except psycopg.Error:
                pass
            raise _translate(exc, f"copy of chunk {chunk.label}", self.target.endpoint) from None
        self.progress.add(rows=rows, nbytes=pending, chunks=1)
        return rows, nbytes, seconds

    def close(self) -> None:
        for conn in (self.src, self.dst):
            try:
                conn.close()
            except Exception:
                pass


def copy_chunks(
    source: PostgresAdapter,
    target: PostgresAdapter,
    tables: Sequence[TableInfo],
    chunks: Sequence[Chunk],
    *,
    workers: int = 2,
    snapshot: str | None = None,
    progress: Progress | None = None,
    pause_s: float = 0.0,
    on_chunk: Callable[[Chunk, int, int, float], None] | None = None,
    poll: Callable[[], None] | None = None,
) -> CopyStats:
    """Copy the chunks not yet recorded in the target's copy_progress, largest first, ``workers`` in parallel."""
    by_name = {t.qualified: t for t in tables}
    done = done_chunks(target)
    todo = [c for c in chunks if (c.table, c.index) not in done]
    todo.sort(key=lambda c: -c.est_bytes)
    stats = CopyStats(chunks_total=len(chunks), chunks_skipped=len(chunks) - len(todo))
    progress = progress or Progress()
    work: queue.SimpleQueue[Chunk] = queue.SimpleQueue()
    for c in todo:
        work.put(c)
    errors: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()
    started = time.monotonic()

    def run() -> None:
        try:
            worker = _Worker(source, target, snapshot, progress)
        except BaseException as exc:
            errors.append(exc)
            stop.set()
            return
        try:
            while not stop.is_set():
                try:
                    chunk = work.get_nowait()
                except queue.Empty:
                    return
                rows, nbytes, secs = worker.copy(by_name[chunk.table], chunk)
                with lock:
                    stats.chunks_copied += 1
                    stats.rows += rows
                    stats.bytes += nbytes
                if on_chunk:
                    on_chunk(chunk, rows, nbytes, secs)
                if pause_s:
                    time.sleep(pause_s)
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        finally:
            worker.close()

    threads = [
        threading.Thread(target=run, name=f"pgcopy-{i}", daemon=True) for i in range(max(1, min(workers, len(todo))))
    ]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            if poll:
                poll()
            for t in threads:
                t.join(timeout=0.25)
    except BaseException:
        stop.set()
        raise
    if poll:
        poll()
    stats.seconds = time.monotonic() - started
    if errors:
        first = errors[0]
        if isinstance(first, AdapterError):
            raise first
        raise AdapterError(
            f"parallel copy failed: {type(first).__name__}: {first}",
            "a copy worker stopped; finished chunks are recorded in the target and will not be copied again",
            "fix the cause and re-run the same command: the copy resumes at the first unfinished chunk",
            service="postgres",
        ) from first
    return stats


# -- large objects -------------------------------------------------------------------------------------------------
def done_large_objects(target: PostgresAdapter) -> dict[int, int]:
    if not target.table_exists(INTERNAL_SCHEMA, "lo_progress"):
        return {}
    return {int(o): int(b) for o, b in target.query(f"SELECT lo, bytes FROM {INTERNAL_SCHEMA}.lo_progress")}


def _grant_sql(lo: LargeObjectInfo, roles: set[str]) -> list[str]:
    """Owner and grants of ``lo`` as SQL, for the roles that exist on the target (others are reported missing)."""
    out = []
    if lo.owner in roles:
        out.append(f"ALTER LARGE OBJECT {lo.oid} OWNER TO {qident(lo.owner)}")
    for grant in lo.grants:
        grantee, _, priv = grant.rpartition(":")
        if grantee == "PUBLIC" or grantee in roles:
            out.append(
                f"GRANT {priv} ON LARGE OBJECT {lo.oid} TO {'PUBLIC' if grantee == 'PUBLIC' else qident(grantee)}"
            )
    return out


def copy_large_objects(
    source: PostgresAdapter,
    target: PostgresAdapter,
    *,
    snapshot: str | None = None,
    chunk: int = 1 << 20,
    batch: int = 256,
    progress: Progress | None = None,
) -> tuple[int, int, list[str]]:
    """Copy every large object (same OID, contents in ``chunk``-byte pieces through ``lo_get``/``lo_put``, owner and
    grants where the role exists on the target). Objects and their ``_bpmigrate.lo_progress`` rows commit together,
    ``batch`` objects (or 8 chunks of bytes) at a time: a killed copy resumes after the last committed batch, never
    duplicating or losing one. Returns (objects copied, bytes, roles missing)."""
    from psycopg import IsolationLevel

    objects = source.large_objects()
    done = done_large_objects(target)
    todo = [lo for lo in objects if lo.oid not in done]
    if not todo:
        return 0, 0, []
    roles = {str(r[0]) for r in target.query("SELECT rolname FROM pg_roles")}
    missing = sorted({lo.owner for lo in todo if lo.owner not in roles})
    src = source.connect(autocommit=False)
    dst = target.connect(autocommit=False)
    copied = nbytes = batch_objects = batch_bytes = 0
    try:
        src.isolation_level = IsolationLevel.REPEATABLE_READ
        src.read_only = True
        if snapshot:
            src.execute(f"SET TRANSACTION SNAPSHOT {qliteral(snapshot)}")
        for lo in todo:
            dst.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = %s::oid", [lo.oid])
            dst.execute("SELECT lo_create(%s::oid)", [lo.oid])
            offset = 0
            while True:
                # binary transfer both ways: no hex encoding of the contents
                row = src.execute("SELECT lo_get(%s::oid, %s, %s)", [lo.oid, offset, chunk], binary=True).fetchone()
                data = bytes(row[0]) if row and row[0] is not None else b""
                if data:
                    dst.execute("SELECT lo_put(%s::oid, %s, %b)", [lo.oid, offset, data])
                offset += len(data)
                if progress:
                    progress.add(nbytes=len(data))
                if len(data) < chunk:
                    break
            for sql in _grant_sql(lo, roles):
                dst.execute(sql)
            dst.execute(f"INSERT INTO {INTERNAL_SCHEMA}.lo_progress (lo, bytes) VALUES (%s, %s)", [lo.oid, offset])
            batch_objects, batch_bytes = batch_objects + 1, batch_bytes + offset
            if batch_objects >= batch or batch_bytes >= chunk * 8:
                dst.commit()
                copied, nbytes, batch_objects, batch_bytes = copied + batch_objects, nbytes + batch_bytes, 0, 0
        dst.commit()
        copied, nbytes = copied + batch_objects, nbytes + batch_bytes
    except Exception as exc:
        import psycopg

        try:
            dst.rollback()
        except psycopg.Error:
            pass
        if isinstance(exc, psycopg.Error):
            raise _translate(exc, "copy of large objects", target.endpoint) from None
        raise
    finally:
        for conn in (src, dst):
            try:
                conn.close()
            except Exception:
                pass
    return copied, nbytes, missing


# -- materialized views --------------------------------------------------------------------------------------------
def refresh_statements(source: PostgresAdapter) -> list[str]:
    """``REFRESH MATERIALIZED VIEW`` for every view populated on the source, in dependency order (a view created
    WITH NO DATA stays unpopulated, as on the source)."""
    return [f"REFRESH MATERIALIZED VIEW {v.ident};" for v in source.matviews() if v.populated]


def refresh_matviews(source: PostgresAdapter, target: PostgresAdapter) -> list[str]:
    """Refresh on the TARGET, in dependency order, the materialized views populated on the source (logical
    replication does not carry them: call this after the data switch). Returns the views refreshed."""
    views: list[MatviewInfo] = [v for v in source.matviews() if v.populated]
    with target.session() as conn:
        for v in views:
            conn.execute(f"REFRESH MATERIALIZED VIEW {v.ident}")
    return [v.qualified for v in views]


# -- the whole restore -------------------------------------------------------------------------------------------
def drop_user_objects(target: PostgresAdapter) -> list[str]:
    """Drop every user object of the TARGET database (not extension members, not system schemas), large objects
    included."""
    excluded = ",".join(qliteral(s) for s in SYSTEM_SCHEMAS)
    dropped: list[str] = []
    with target.session() as conn:
        n_lo = conn.execute(
            "SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata WHERE pg_has_role(lomowner, 'USAGE')"
        ).fetchone()
        if n_lo and n_lo[0]:
            dropped.append(f"{n_lo[0]} large object(s)")
        schemas = conn.execute(
            f"""SELECT n.nspname FROM pg_namespace n WHERE n.nspname NOT IN ({excluded})
                AND n.nspname NOT LIKE 'pg_%' AND n.nspname <> 'public'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = n.oid AND d.deptype = 'e')
                AND NOT EXISTS (SELECT 1 FROM pg_extension e WHERE e.extnamespace = n.oid)"""
        ).fetchall()
        for (schema,) in schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {qident(schema)} CASCADE")
            dropped.append(f"schema {schema}")
        rels = conn.execute(
            f"""SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                       WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, n.nspname, c.relname
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ({excluded})
                  AND n.nspname NOT LIKE 'pg_%' AND NOT (c.relkind = 'S' AND EXISTS (
                      SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
                ORDER BY c.relkind = 'S', c.relname"""
        ).fetchall()
        for kind, schema, name in rels:
            conn.execute(f"DROP {kind} IF EXISTS {qident(schema, name)} CASCADE")
            dropped.append(f"{kind.lower()} {schema}.{name}")
        routines = conn.execute(
            f"""SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname NOT IN ({excluded}) AND n.nspname NOT LIKE 'pg_%'
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"""
        ).fetchall()
        for (sig,) in routines:
            conn.execute(f"DROP ROUTINE IF EXISTS {sig} CASCADE")
            dropped.append(f"routine {sig}")
        types = conn.execute(
            f"""SELECT n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE n.nspname NOT IN ({excluded}) AND n.nspname NOT LIKE 'pg_%'
                  AND t.typtype IN ('e', 'd', 'r', 'm', 'c') AND (t.typrelid = 0 OR
                      (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')"""
        ).fetchall()
        for schema, name in types:
            conn.execute(f"DROP TYPE IF EXISTS {qident(schema, name)} CASCADE")
            dropped.append(f"type {schema}.{name}")
    return dropped


@dataclass
class RestoreOptions:
    workers: int = 2
    chunk_rows: int = 500_000
    chunk_bytes: int = 64 << 20
    pause_s: float = 0.0
    analyze: bool = True
    maintenance_work_mem: str = "256MB"
    consistent_snapshot: bool = True


class ExportedSnapshot:
    """A REPEATABLE READ transaction on the source whose snapshot the copy workers (and pg_dump) share."""

    def __init__(self, source: PostgresAdapter) -> None:
        from psycopg import IsolationLevel

        self.conn = source.connect(autocommit=False)
        self.conn.isolation_level = IsolationLevel.REPEATABLE_READ
        self.conn.read_only = True
        row = self.conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        self.id = str(row[0])
        #: the source's identity and position as of this snapshot (what a backup taken with it records)
        self.identity = _identity_on(self.conn, source.dbname)

    def close(self) -> None:
        try:
            self.conn.rollback()
            self.conn.close()
        except Exception:
            pass


def run_restore(
    source: PostgresAdapter,
    target: PostgresAdapter,
    workdir: Path,
    options: RestoreOptions,
    *,
    progress: Progress | None = None,
    poll: Callable[[], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_chunk: Callable[[Chunk, int, int, float], None] | None = None,
    on_plan: Callable[[list[Chunk], dict[tuple[str, int], tuple[int, int]]], None] | None = None,
) -> CopyStats:
    """Idempotent, resumable restore of source into target (see the module docstring)."""
    stats = CopyStats()
    done = stages_done(target)
    snap = ExportedSnapshot(source) if options.consistent_snapshot else None
    try:
        schema_file = workdir / "schema.dump"
        if not schema_file.exists() or "pre-data" not in done:
            if on_stage:
                on_stage("dump-schema")
            source.dump(schema_file, fmt="c", extra=["--schema-only"], snapshot=snap.id if snap else None)
        tables = source.tables()
        if "pre-data" not in done:
            if on_stage:
                on_stage("pre-data")
            drop_user_objects(target)
            drop_copy_state(target)
            target.restore(schema_file, section="pre-data", client=source)
            ensure_state(target)
            mark_stage(target, "pre-data")
            stats.stages_run.append("pre-data")
        ensure_state(target)
        chunks = load_plan(target) if "plan" in done else []
        if not chunks and tables:
            if on_stage:
                on_stage("plan")
            chunks = plan_chunks(source, tables, chunk_rows=options.chunk_rows, chunk_bytes=options.chunk_bytes)
            save_plan(target, chunks)
            stats.stages_run.append("plan")
        if on_plan:
            on_plan(chunks, done_chunks(target))
        if "data" not in done:
            if on_stage:
                on_stage("data")
            copied = copy_chunks(
                source,
                target,
                tables,
                chunks,
                workers=options.workers,
                snapshot=snap.id if snap else None,
                progress=progress,
                pause_s=options.pause_s,
                on_chunk=on_chunk,
                poll=poll,
            )
            stats.chunks_total, stats.chunks_skipped = copied.chunks_total, copied.chunks_skipped
            stats.chunks_copied, stats.rows, stats.bytes, stats.seconds = (
                copied.chunks_copied,
                copied.rows,
                copied.bytes,
                copied.seconds,
            )
            mark_stage(target, "data", f"{copied.rows} rows")
            stats.stages_run.append("data")
        if "large-objects" not in done:
            if on_stage:
                on_stage("large-objects")
            n_lo, lo_bytes, missing_roles = copy_large_objects(
                source, target, snapshot=snap.id if snap else None, progress=progress
            )
            stats.large_objects, stats.large_object_bytes = n_lo, lo_bytes
            detail = f"{n_lo} objects" + (
                f"; owners missing on the target: {', '.join(missing_roles)}" if missing_roles else ""
            )
            mark_stage(target, "large-objects", detail)
            stats.stages_run.append("large-objects")
        if "sequences" not in done:
            if on_stage:
                on_stage("sequences")
            target.set_sequences(source.sequences())
            mark_stage(target, "sequences")
            stats.stages_run.append("sequences")
    finally:
        if snap:
            snap.close()
    if "post-data" not in done:
        if on_stage:
            on_stage("post-data")
        # indexes/constraints/triggers, the refresh of the materialized views populated on the source (dependency
        # order) and the stage marker commit together: a kill leaves all or nothing
        refresh = refresh_statements(source)
        stats.matviews_refreshed = len(refresh)
        target.restore_script(
            schema_file,
            section="post-data",
            out=workdir / "post-data.sql",
            trailer="\n".join(
                [
                    *refresh,
                    f"INSERT INTO {INTERNAL_SCHEMA}.restore_state (stage) VALUES ('post-data') ON CONFLICT DO NOTHING;",
                ]
            ),
            client=source,
            pgoptions=f"-c maintenance_work_mem={options.maintenance_work_mem}",
        )
        stats.stages_run.append("post-data")
    if options.analyze and "analyzed" not in done:
        target.execute("ANALYZE")
        mark_stage(target, "analyzed")
    return stats


def restore_status(target: PostgresAdapter) -> dict[str, Any]:
    """What the target says about a restore: stages done, chunks done / planned."""
    done = stages_done(target)
    plan = load_plan(target) if done else []
    finished = done_chunks(target) if done else {}
    return {
        "stages": sorted(done, key=lambda s: STAGES.index(s) if s in STAGES else 99),
        "chunks_planned": len(plan),
        "chunks_done": len(finished),
        "rows_copied": sum(r for r, _ in finished.values()),
        "complete": "post-data" in done,
    }
