"""PostgreSQL native logical replication source → target: publication, exported-snapshot slot, subscription.

How the initial copy and the stream join without gap or duplicate:

1. ``CREATE PUBLICATION`` on the source for every migrated table.
2. On a replication-protocol connection (``replication=database``):
   ``CREATE_REPLICATION_SLOT <slot> LOGICAL pgoutput (SNAPSHOT 'export')``. The slot's consistent point and the
   exported snapshot are the same instant; the snapshot stays importable while that connection stays open.
3. Copy workers ``SET TRANSACTION SNAPSHOT '<id>'`` in REPEATABLE READ on the source and stream binary COPY into the
   (truncated) target tables, with ``session_replication_role = replica`` (like the apply worker: FK checks and
   user triggers off). Each chunk's rows and its completion row (``_bpmigrate.sync_copy``) commit together.
4. ``CREATE SUBSCRIPTION ... WITH (copy_data = false, create_slot = false, slot_name = <slot>, enabled = true)``:
   the stream starts at the slot's consistent point, i.e. exactly after the snapshot.

Resumability: the snapshot dies with the replication connection. A process killed after the copy completed
resumes from its slot (the slot keeps every change since the snapshot); one killed during the copy cannot reuse
the snapshot: the slot is dropped and the copy starts over (recorded in the target's ``_bpmigrate.sync_state``).
Teardown drops subscription, slot and publication and waits (bounded) until the slot is really gone: a
forgotten slot retains WAL and fills the source's disk.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from migrate.adapters.postgres import (
    INTERNAL_SCHEMA,
    PostgresAdapter,
    TableInfo,
    _translate,
    qident,
    qliteral,
    range_where,
)
from migrate.errors import AdapterError, StepFailed

SLOT_PREFIX = "bpm_"

_STATE_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA};
CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.sync_state (
    key text PRIMARY KEY, value text, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.sync_copy (
    table_name text NOT NULL, chunk int NOT NULL, rows bigint NOT NULL, bytes bigint NOT NULL,
    PRIMARY KEY (table_name, chunk));
"""


def lsn_int(lsn: str | None) -> int:
    """'16/B374D848' -> integer position (None/'' -> 0)."""
    if not lsn:
        return 0
    hi, lo = str(lsn).split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def sync_name(env_name: str, dbname: str, override: str | None = None) -> str:
    """A valid slot/publication/subscription name (lowercase, digits, '_', <= 63 chars), unique per source DB."""
    raw = override or f"{SLOT_PREFIX}{env_name}_{dbname}"
    name = re.sub(r"[^a-z0-9_]", "_", raw.lower())
    if not name.startswith(SLOT_PREFIX):
        name = SLOT_PREFIX + name
    return name[:63]


def reverse_name(name: str) -> str:
    """The reverse stream's name (target -> source) for a forward stream ``name``."""
    return name[:59] + "_rev"


@dataclass(frozen=True)
class Problem:
    """A missing prerequisite: level block|warn, what, and how to fix it."""

    level: str
    message: str
    fix: str


@dataclass
class Lag:
    bytes: int | None  # None when the slot does not exist
    seconds: float | None
    current_lsn: str
    confirmed_flush_lsn: str | None
    slot_active: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "seconds": self.seconds,
            "current_lsn": self.current_lsn,
            "confirmed_flush_lsn": self.confirmed_flush_lsn,
            "slot_active": self.slot_active,
        }


@dataclass
class CopyResult:
    chunks: int = 0
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    tables: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CopyChunk:
    table: str
    index: int
    lo: str | None
    hi: str | None


class ExportedSlot:
    """A logical slot created with an exported snapshot; the replication connection stays open until close()."""

    def __init__(self, source: PostgresAdapter, slot: str) -> None:
        import psycopg

        kw = source._kwargs()  # same adapter package
        try:
            self.conn = psycopg.connect(autocommit=True, replication="database", **kw)
            row = self.conn.execute(
                f"CREATE_REPLICATION_SLOT {qident(slot)} LOGICAL pgoutput (SNAPSHOT 'export')"
            ).fetchone()
        except psycopg.Error as exc:
            raise _translate(exc, f"create replication slot {slot}", source.endpoint) from None
        assert row is not None
        self.slot = str(row[0])
        self.consistent_lsn = str(row[1])
        self.snapshot = str(row[2])

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing must never mask the outcome
            pass


class PgSync:
    """Logical replication between one source database and one target database under one name."""

    def __init__(self, source: PostgresAdapter, target: PostgresAdapter, name: str) -> None:
        self.source = source
        self.target = target
        self.name = name  # slot = publication = subscription name

    @property
    def slot(self) -> str:
        return self.name

    @property
    def publication(self) -> str:
        return self.name

    @property
    def subscription(self) -> str:
        return self.name

    # -- prerequisites -----------------------------------------------------------------------------------------
    def prerequisites(self, tables: Sequence[TableInfo]) -> list[Problem]:
        out: list[Problem] = []
        wal = str(self.source.query("SHOW wal_level")[0][0])
        if wal != "logical":
            out.append(
                Problem(
                    "block",
                    f"the source runs with wal_level={wal}; logical replication needs wal_level=logical",
                    "set wal_level = logical on the source (compose: `command: postgres -c wal_level=logical`) and "
                    "restart it",
                )
            )
        rep = self.source.query("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user")
        if not (rep and rep[0][0]):
            out.append(
                Problem(
                    "block",
                    f"source user {self.source.user} lacks the REPLICATION privilege",
                    f"ALTER ROLE {self.source.user} REPLICATION; (on the source, as a superuser)",
                )
            )
        free = self.source.query(
            "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots), "
            "current_setting('max_wal_senders')::int"
        )[0]
        if int(free[0]) < 1 and not self.slot_info():
            out.append(
                Problem(
                    "block",
                    "the source has no free replication slot (max_replication_slots reached)",
                    "drop orphaned slots (see `bpmigrate verify --step pg-sync`) or raise max_replication_slots",
                )
            )
        if int(free[1]) < 1:
            out.append(Problem("block", "the source has max_wal_senders = 0", "set max_wal_senders >= 2 and restart"))
        sub = self.target.query(
            "SELECT rolsuper OR pg_has_role(current_user, 'pg_create_subscription', 'MEMBER') "
            "FROM pg_roles WHERE rolname = current_user"
        )
        if not (sub and sub[0][0]):
            out.append(
                Problem(
                    "block",
                    f"target user {self.target.user} may not create subscriptions",
                    f"GRANT pg_create_subscription TO {self.target.user}; (RDS: GRANT rds_superuser)",
                )
            )
        for name in self.tables_without_identity(tables):
            out.append(
                Problem(
                    "block",
                    f"table {name} has neither a primary key nor a REPLICA IDENTITY: once published, UPDATE and "
                    "DELETE on it fail on the source",
                    f"add a primary key, or ALTER TABLE {name} REPLICA IDENTITY FULL (or set "
                    "[steps.pg-sync] replica_identity_full = true to let the step do it and undo it on rollback)",
                )
            )
        return out

    def tables_without_identity(self, tables: Sequence[TableInfo]) -> list[str]:
        names = [t.qualified for t in tables]
        if not names:
            return []
        rows = self.source.query(
            """
            SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname || '.' || c.relname = ANY(%s)
              AND NOT (c.relreplident = 'f'
                   OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i
                                                        WHERE i.indrelid = c.oid AND i.indisprimary))
                   OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i
                                                        WHERE i.indrelid = c.oid AND i.indisreplident)))
            ORDER BY 1
            """,
            [names],
        )
        return [str(r[0]) for r in rows]

    def set_replica_identity(self, tables: Sequence[str], full: bool) -> None:
        with self.source.session() as conn:
            for name in tables:
                schema, rel = name.split(".", 1)
                mode = "FULL" if full else "DEFAULT"
                conn.execute(f"ALTER TABLE {qident(schema, rel)} REPLICA IDENTITY {mode}")

    # -- source objects ----------------------------------------------------------------------------------------
    def publication_tables(self) -> list[str] | None:
        """Tables of the publication, or None when it does not exist."""
        if not self.source.query("SELECT 1 FROM pg_publication WHERE pubname = %s", [self.publication]):
            return None
        # the tables as added (a partitioned parent, not its leaves as pg_publication_tables lists them)
        rows = self.source.query(
            "SELECT n.nspname || '.' || c.relname FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
            "JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE p.pubname = %s ORDER BY 1",
            [self.publication],
        )
        return [str(r[0]) for r in rows]

    def ensure_publication(self, tables: Sequence[str]) -> str:
        """Create the publication for exactly these tables (or re-point an existing one); returns what it did."""
        rels = ", ".join(qident(*t.split(".", 1)) for t in sorted(tables))
        current = self.publication_tables()
        if current is None:
            self.source.execute(f"CREATE PUBLICATION {qident(self.publication)} FOR TABLE {rels}")
            return "created"
        if sorted(current) != sorted(tables):
            self.source.execute(f"ALTER PUBLICATION {qident(self.publication)} SET TABLE {rels}")
            return "updated"
        return "in place"

    def drop_publication(self) -> bool:
        if self.publication_tables() is None:
            return False
        self.source.execute(f"DROP PUBLICATION IF EXISTS {qident(self.publication)}")
        return True

    def slot_info(self, name: str | None = None) -> dict[str, Any] | None:
        rows = self.source.query(
            """
            SELECT slot_name, plugin, database, active, active_pid, confirmed_flush_lsn::text, restart_lsn::text,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
            FROM pg_replication_slots WHERE slot_name = %s
            """,
            [name or self.slot],
        )
        if not rows:
            return None
        r = rows[0]
        return {
            "slot_name": r[0],
            "plugin": r[1],
            "database": r[2],
            "active": bool(r[3]),
            "active_pid": r[4],
            "confirmed_flush_lsn": r[5],
            "restart_lsn": r[6],
            "retained_bytes": int(r[7] or 0),
        }

    def create_slot_exported(self) -> ExportedSlot:
        return ExportedSlot(self.source, self.slot)

    def drop_slot(self, *, name: str | None = None, timeout: float = 30.0) -> bool:
        """Drop the slot once no walsender holds it (terminating a stale holder after half the timeout)."""
        import psycopg

        slot = name or self.slot
        deadline = time.monotonic() + timeout
        terminated = False
        with self.source.session() as conn:
            while True:
                row = conn.execute(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [slot]
                ).fetchone()
                if row is None:
                    return False
                try:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
                    return True
                except psycopg.errors.ObjectInUse:
                    pass
                now = time.monotonic()
                if now >= deadline:
                    raise StepFailed(
                        f"replication slot {slot} on {self.source.endpoint} is still in use after {timeout:g}s",
                        f"a walsender (pid {row[0]}) keeps it active; the subscription may still be connected",
                        f"drop the subscription on the target, then: SELECT pg_drop_replication_slot('{slot}'); "
                        "and re-run the rollback",
                    )
                if not terminated and row[0] and now >= deadline - timeout / 2:
                    conn.execute("SELECT pg_terminate_backend(%s)", [row[0]])
                    terminated = True
                time.sleep(0.1)

    def orphaned_slots(self) -> list[dict[str, Any]]:
        """bpmigrate slots on the source that no live subscription on the target uses (they retain WAL)."""
        subs = {
            str(r[0])
            for r in self.target.query("SELECT subslotname FROM pg_subscription WHERE subslotname IS NOT NULL")
        }
        rows = self.source.query(
            """
            SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, database
            FROM pg_replication_slots WHERE slot_name LIKE %s ORDER BY 1
            """,
            [SLOT_PREFIX + "%"],
        )
        out = []
        for slot, active, retained, db in rows:
            if str(slot) in subs or active:
                continue
            out.append({"slot": str(slot), "active": bool(active), "retained_bytes": int(retained or 0), "db": db})
        return out

    def current_lsn(self) -> str:
        # the INSERT position: with synchronous_commit = off a committed transaction may lie beyond the write position
        return str(self.source.query("SELECT pg_current_wal_insert_lsn()::text")[0][0])

    def fence_lsn(self) -> str:
        """The source's WAL insert position, then made durable: an empty transaction that only takes a transaction
        id commits with synchronous_commit = on, flushing the WAL up to past the fence (no data is written). Without
        it, the tail of the WAL may sit unflushed on an idle source and the walsender never reaches the fence."""
        with self.source.session(autocommit=False) as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            conn.execute("SET LOCAL synchronous_commit = on")
            conn.execute("SELECT pg_current_xact_id()")
            conn.commit()
        assert row is not None
        return str(row[0])

    # -- target objects ----------------------------------------------------------------------------------------
    def subscription_info(self) -> dict[str, Any] | None:
        rows = self.target.query(
            """
            SELECT s.subname, s.subenabled, s.subslotname, st.pid, st.received_lsn::text,
                   st.latest_end_lsn::text, st.latest_end_time, st.last_msg_receipt_time
            FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL
            WHERE s.subname = %s AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            """,
            [self.subscription],
        )
        if not rows:
            return None
        r = rows[0]
        return {
            "name": r[0],
            "enabled": bool(r[1]),
            "slot": r[2],
            "worker_pid": r[3],
            "received_lsn": r[4],
            "latest_end_lsn": r[5],
            "latest_end_time": r[6].isoformat() if r[6] else None,
            "last_msg_receipt_time": r[7].isoformat() if r[7] else None,
        }

    def publisher_conninfo(self, host: str | None = None, port: int | None = None) -> str:
        """How the TARGET server reaches the source (host/port as seen from the target's process)."""
        kw: dict[str, Any] = {
            "host": host or self.source.host,
            "port": port or self.source.port,
            "dbname": self.source.dbname,
            "user": self.source.user,
            "application_name": self.subscription,
        }
        if self.source.sslmode:
            kw["sslmode"] = self.source.sslmode
        password = self.source._password  # same adapter package; never logged (redacted)
        if password:
            kw["password"] = password
        return " ".join(f"{k}={qliteral(str(v))}" for k, v in kw.items())

    def create_subscription(self, conninfo: str) -> None:
        sql = (
            f"CREATE SUBSCRIPTION {qident(self.subscription)} CONNECTION {qliteral(conninfo)} "
            f"PUBLICATION {qident(self.publication)} WITH (copy_data = false, create_slot = false, "
            f"slot_name = {qliteral(self.slot)}, enabled = true)"
        )
        self.target.execute(sql)

    def enable_subscription(self) -> None:
        self.target.execute(f"ALTER SUBSCRIPTION {qident(self.subscription)} ENABLE")

    def drop_subscription(self) -> bool:
        """Disable, detach from the slot (dropped separately on the source, where we can wait for it), drop."""
        if self.subscription_info() is None:
            return False
        sub = qident(self.subscription)
        self.target.execute(f"ALTER SUBSCRIPTION {sub} DISABLE")
        self.target.execute(f"ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)")
        self.target.execute(f"DROP SUBSCRIPTION IF EXISTS {sub}")
        return True

    def wait_worker(self, timeout: float) -> bool:
        """Wait (bounded) until the subscription's apply worker runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.subscription_info()
            if info and info["worker_pid"]:
                return True
            time.sleep(0.1)
        return False

    # -- state on the target (in _bpmigrate, which validation ignores) ------------------------------------------
    def ensure_state(self) -> None:
        with self.target.session() as conn:
            conn.execute(_STATE_DDL)

    def state(self) -> dict[str, str]:
        if not self.target.table_exists(INTERNAL_SCHEMA, "sync_state"):
            return {}
        return {str(k): str(v) for k, v in self.target.query(f"SELECT key, value FROM {INTERNAL_SCHEMA}.sync_state")}

    def put_state(self, **values: str) -> None:
        self.ensure_state()
        with self.target.session() as conn:
            for key, value in values.items():
                conn.execute(
                    f"INSERT INTO {INTERNAL_SCHEMA}.sync_state (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, at = now()",
                    [key, value],
                )

    def clear_state(self) -> None:
        with self.target.session() as conn:
            for table in ("sync_state", "sync_copy"):
                conn.execute(f"DROP TABLE IF EXISTS {INTERNAL_SCHEMA}.{table}")

    def copied_chunks(self) -> set[tuple[str, int]]:
        if not self.target.table_exists(INTERNAL_SCHEMA, "sync_copy"):
            return set()
        return {
            (str(t), int(c)) for t, c in self.target.query(f"SELECT table_name, chunk FROM {INTERNAL_SCHEMA}.sync_copy")
        }

    # -- the initial copy under the slot's snapshot ------------------------------------------------------------
    def truncate_target(self, tables: Sequence[TableInfo]) -> None:
        if not tables:
            return
        rels = ", ".join(qident(t.schema, t.name) for t in tables)
        with self.target.session(autocommit=False) as conn:
            conn.execute(f"TRUNCATE {rels}")
            conn.execute(f"DELETE FROM {INTERNAL_SCHEMA}.sync_copy")
            conn.commit()

    def plan_copy(self, tables: Sequence[TableInfo], *, chunk_rows: int, chunk_bytes: int) -> list[CopyChunk]:
        from migrate.adapters.pgcopy import plan_chunks

        return [
            CopyChunk(c.table, c.index, c.lo, c.hi)
            for c in plan_chunks(self.source, tables, chunk_rows=chunk_rows, chunk_bytes=chunk_bytes)
        ]

    def copy_snapshot(
        self,
        tables: Sequence[TableInfo],
        chunks: Sequence[CopyChunk],
        snapshot: str,
        *,
        workers: int = 2,
        on_chunk: Callable[[CopyChunk, int, int], None] | None = None,
        pause_s: float = 0.0,
    ) -> CopyResult:
        """Copy every chunk as of ``snapshot`` (source REPEATABLE READ), ``workers`` in parallel."""
        by_name = {t.qualified: t for t in tables}
        work: queue.SimpleQueue[CopyChunk] = queue.SimpleQueue()
        for c in chunks:
            work.put(c)
        result = CopyResult(chunks=len(chunks), tables=sorted(by_name))
        errors: list[BaseException] = []
        lock = threading.Lock()
        stop = threading.Event()
        started = time.monotonic()

        def run() -> None:
            try:
                with self._copy_worker(snapshot) as one:
                    while not stop.is_set():
                        try:
                            chunk = work.get_nowait()
                        except queue.Empty:
                            return
                        rows, nbytes = one(by_name[chunk.table], chunk)
                        with lock:
                            result.rows += rows
                            result.bytes += nbytes
                        if on_chunk:
                            on_chunk(chunk, rows, nbytes)
                        if pause_s:
                            time.sleep(pause_s)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
                stop.set()

        threads = [threading.Thread(target=run, name=f"pgsync-{i}", daemon=True) for i in range(max(1, workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result.seconds = time.monotonic() - started
        if errors:
            first = errors[0]
            if isinstance(first, AdapterError):
                raise first
            raise AdapterError(
                f"snapshot copy failed: {type(first).__name__}: {first}",
                "a copy worker stopped; the snapshot cannot be reused once the slot's connection closes",
                "re-run the same command: pg-sync drops the half-used slot and copies again",
                service="postgres",
            ) from first
        return result

    @contextmanager
    def _copy_worker(self, snapshot: str) -> Iterator[Callable[[TableInfo, CopyChunk], tuple[int, int]]]:
        import psycopg
        from psycopg import IsolationLevel

        src = self.source.connect(autocommit=False)
        dst = self.target.connect(autocommit=False)
        try:
            try:
                src.isolation_level = IsolationLevel.REPEATABLE_READ
                src.read_only = True
                src.execute(f"SET TRANSACTION SNAPSHOT {qliteral(snapshot)}")
                dst.execute("SET session_replication_role = replica")
                dst.execute("SET synchronous_commit = off")
                dst.commit()
            except psycopg.Error as exc:
                raise _translate(exc, "start a snapshot copy worker", self.source.endpoint) from None

            def copy_one(table: TableInfo, chunk: CopyChunk) -> tuple[int, int]:
                cols = ", ".join(qident(c.name) for c in table.copy_columns)
                where = range_where(table, chunk.lo, chunk.hi)
                out_sql = (
                    f"COPY (SELECT {cols} FROM {qident(table.schema, table.name)} {where}) TO STDOUT (FORMAT binary)"
                )
                in_sql = f"COPY {qident(table.schema, table.name)} ({cols}) FROM STDIN (FORMAT binary)"
                nbytes = 0
                try:
                    with src.cursor() as sc, dst.cursor() as dc:
                        with sc.copy(out_sql) as cout, dc.copy(in_sql) as cin:
                            for data in cout:
                                cin.write(data)
                                nbytes += len(data)
                        rows = dc.rowcount
                        dc.execute(
                            f"INSERT INTO {INTERNAL_SCHEMA}.sync_copy (table_name, chunk, rows, bytes) "
                            "VALUES (%s, %s, %s, %s)",
                            [chunk.table, chunk.index, rows, nbytes],
                        )
                    dst.commit()
                except psycopg.Error as exc:
                    try:
                        dst.rollback()
                    except psycopg.Error:
                        pass
                    raise _translate(
                        exc, f"snapshot copy of {chunk.table}#{chunk.index}", self.target.endpoint
                    ) from None
                return rows, nbytes

            yield copy_one
        finally:
            for conn in (src, dst):
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass

    # -- monitoring --------------------------------------------------------------------------------------------
    def lag(self) -> Lag:
        row = self.source.query(
            """
            SELECT pg_current_wal_insert_lsn()::text, s.confirmed_flush_lsn::text,
                   pg_wal_lsn_diff(pg_current_wal_insert_lsn(), s.confirmed_flush_lsn)::bigint, s.active,
                   (SELECT extract(epoch FROM coalesce(r.replay_lag, r.flush_lag, r.write_lag))::float8
                      FROM pg_stat_replication r WHERE r.pid = s.active_pid)
            FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = %s
            """,
            [self.slot],
        )[0]
        current, confirmed, diff, active, lag_s = row
        if confirmed is None:
            return Lag(None, None, str(current), None, False)
        nbytes = max(0, int(diff or 0))
        seconds = 0.0 if nbytes == 0 else float(lag_s) if lag_s is not None else None
        return Lag(nbytes, seconds, str(current), str(confirmed), bool(active))

    def wait_confirmed(self, fence_lsn: str, timeout: float, poll: float = 0.05) -> float:
        """Wait until the subscriber confirmed every change up to ``fence_lsn``; returns seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        target = lsn_int(fence_lsn)
        while True:
            info = self.slot_info()
            if info is None:
                raise StepFailed(
                    f"replication slot {self.slot} does not exist on {self.source.endpoint}",
                    "the stream is gone: changes after the initial copy cannot reach the target",
                    "bpmigrate apply --step pg-sync (copies again and restarts the stream)",
                )
            if lsn_int(info["confirmed_flush_lsn"]) >= target:
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                lag = self.lag()
                raise StepFailed(
                    f"replication did not catch up to {fence_lsn} within {timeout:g}s "
                    f"(confirmed {info['confirmed_flush_lsn']}, lag {lag.bytes} bytes, slot active {info['active']})",
                    "the subscription's apply worker is behind or stopped (see the target's log)",
                    "check `bpmigrate verify --step pg-sync`; raise [steps.data-switch] catchup_timeout_s if it is only slow",
                )
            time.sleep(poll)

    def row_count_drift(self, tables: Sequence[TableInfo]) -> dict[str, tuple[int, int]]:
        """table -> (source rows, target rows), counted concurrently on both sides."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=2) as pool:
            fs = pool.submit(self.source.row_counts, tables)
            ft = pool.submit(self.target.row_counts, tables)
            src, dst = fs.result(), ft.result()
        return {name: (n, dst.get(name, -1)) for name, n in src.items()}

    def confirmed_range_drift(
        self, tables: Sequence[TableInfo], *, timeout: float = 60.0, attempts: int = 3
    ) -> dict[str, dict[str, Any]]:
        """Drift on what replication has confirmed, while the source keeps taking writes.

        Per table with an integer key: in one source snapshot, the max key M and the rows with key <= M, plus the
        WAL position L of that snapshot; once the subscription confirmed L, the target's rows with key <= M; then
        the source's rows with key <= M again. New rows get keys above M, so below M only deletes (or updates)
        move the count, and the target — somewhere between L and now — must lie between the two source counts:
        ``ok`` when it does. A miss is measured again (up to ``attempts``); one that persists is drift."""
        keyed = {t.qualified: t for t in tables if t.key and t.key_type in ("smallint", "integer", "bigint")}
        result: dict[str, dict[str, Any]] = {}
        pending = dict(keyed)

        def count(conn: Any, t: TableInfo, upto: int | None) -> int:
            key, rel = qident(str(t.key)), qident(t.schema, t.name)
            if upto is None:
                return int(conn.execute(f"SELECT count(*) FROM {rel}").fetchone()[0])
            return int(conn.execute(f"SELECT count(*) FROM {rel} WHERE {key} <= %s", [upto]).fetchone()[0])

        for attempt in range(1, attempts + 1):
            bounds: dict[str, tuple[int | None, int]] = {}
            with self.source.session(autocommit=False) as conn:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
                assert row is not None
                lsn = str(row[0])
                for name, t in pending.items():
                    got = conn.execute(f"SELECT max({qident(str(t.key))}) FROM {qident(t.schema, t.name)}").fetchone()
                    upto = None if got is None or got[0] is None else int(got[0])
                    bounds[name] = (upto, count(conn, t, upto))
                conn.rollback()
            self.wait_confirmed(lsn, timeout)
            with self.target.session() as conn:
                target_rows = {name: count(conn, t, bounds[name][0]) for name, t in pending.items()}
            with self.source.session() as conn:
                after_rows = {name: count(conn, t, bounds[name][0]) for name, t in pending.items()}
            still: dict[str, TableInfo] = {}
            for name, t in pending.items():
                upto, before = bounds[name]
                dst, after = target_rows[name], after_rows[name]
                ok = min(before, after) <= dst <= max(before, after)
                result[name] = {
                    "upto": upto,
                    "source_before": before,
                    "target": dst,
                    "source_after": after,
                    "lsn": lsn,
                    "attempts": attempt,
                    "ok": ok,
                }
                if not ok:
                    still[name] = t
            if not still:
                break
            pending = still
        return result

    def carry_sequences(self) -> int:
        """setval() every target sequence to the source's value (logical replication does not carry them)."""
        return self.target.set_sequences(self.source.sequences())

    # -- the reverse stream (target -> source, started at the switch) -----------------------------------------
    def reverse(self) -> PgSync:
        """The same pair streaming the other way (publication and slot on the target, subscription on the source)."""
        return PgSync(self.target, self.source, reverse_name(self.name))

    def create_slot(self) -> bool:
        """A logical slot at the publisher's current position (no snapshot): only valid while the writers are
        fenced and both sides hold the same rows. False when it exists already."""
        if self.slot_info() is not None:
            return False
        self.source.query("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", [self.slot])
        return True

    def start_stream(self, tables: Sequence[str], conninfo: str | None = None) -> list[str]:
        """Publication + slot on the publisher, subscription on the subscriber (each only if absent): the stream
        starts at the slot's position, i.e. now. Idempotent (a killed run re-runs it)."""
        done: list[str] = []
        what = self.ensure_publication(tables)
        if what != "in place":
            done.append(f"publication {self.publication} on {self.source.endpoint} ({what})")
        if self.create_slot():
            done.append(f"replication slot {self.slot} on {self.source.endpoint}")
        if self.subscription_info() is None:
            self.create_subscription(conninfo or self.publisher_conninfo())
            done.append(f"subscription {self.subscription} on {self.target.endpoint}")
        return done

    # -- teardown ----------------------------------------------------------------------------------------------
    def teardown(self, *, timeout: float = 30.0) -> list[str]:
        """Drop subscription, slot and publication (each only if present). Never leaves the slot behind."""
        done: list[str] = []
        if self.drop_subscription():
            done.append(f"subscription {self.subscription} on {self.target.endpoint}")
        if self.drop_slot(timeout=timeout):
            done.append(f"replication slot {self.slot} on {self.source.endpoint}")
        if self.drop_publication():
            done.append(f"publication {self.publication} on {self.source.endpoint}")
        return done
