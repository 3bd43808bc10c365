"""PostgreSQL through psycopg 3: connections, introspection, pg_dump/pg_restore, checksums.

Every psycopg error is translated here into ``AdapterError`` / ``TransientError`` with secrets redacted. The
parallel COPY engine lives in :mod:`migrate.adapters.pgcopy` and uses :meth:`PostgresAdapter.connect`.
pg_dump/pg_restore/psql always come from ``bin_dir`` (the binaries shipped with the server), because an older
client refuses to dump a newer server.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError, ConfigError, TransientError
from migrate.redact import redact

if TYPE_CHECKING:
    import psycopg

    from migrate.config import EnvConfig, PgEndpoint

INTERNAL_SCHEMA = "_bpmigrate"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", INTERNAL_SCHEMA)
_INT_TYPES = {"smallint", "integer", "bigint"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "vector(768)", "integer[]"
    generated: bool  # GENERATED ALWAYS AS (...) STORED: never copied, recomputed by the target
    # binary send function (int4send, vector_send, array_send ...): used by checksums; "-" = compare the text form
    # (composites and arrays of user types embed type OIDs in their binary form, which differ between servers)
    send_fn: str
    nullable: bool = True


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: tuple[Column, ...]
    key: str | None  # first column of the primary key (or of a NOT NULL unique index): chunking key
    key_type: str | None
    est_rows: int
    bytes: int
    unlogged: bool = False  # logical replication cannot publish it

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def copy_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if not c.generated)


@dataclass(frozen=True)
class SequenceInfo:
    schema: str
    name: str
    last_value: int | None
    is_called: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class LargeObjectInfo:
    oid: int
    owner: str
    grants: tuple[str, ...]  # "grantee:PRIVILEGE" besides the owner's own


@dataclass(frozen=True)
class MatviewInfo:
    schema: str
    name: str
    populated: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> str:
        return qident(self.schema, self.name)


@dataclass(frozen=True)
class TocEntry:
    """One line of ``pg_restore --list``: ``dump_id; tableoid oid DESC schema name owner``."""

    dump_id: int
    oid: int
    desc: str
    rest: str  # schema, name and owner as printed (names are not quoted: compare by ``oid``)


_TOC_DESCS = sorted(
    [
        "TABLE DATA",
        "MATERIALIZED VIEW DATA",
        "MATERIALIZED VIEW",
        "SEQUENCE SET",
        "SEQUENCE OWNED BY",
        "BLOBS",
        "BLOB",
        "BLOB METADATA",
        "LARGE OBJECT",
        "TABLE",
        "INDEX",
        "CONSTRAINT",
        "FK CONSTRAINT",
        "SEQUENCE",
        "TRIGGER",
        "VIEW",
        "TYPE",
        "DOMAIN",
        "FUNCTION",
        "SCHEMA",
        "POLICY",
        "ROW SECURITY",
        "ACL",
        "COMMENT",
        "EXTENSION",
        "DEFAULT",
        "TABLE ATTACH",
        "INDEX ATTACH",
        "RULE",
    ],
    key=len,
    reverse=True,
)


def parse_toc(lines: Sequence[str]) -> list[TocEntry]:
    """Parse ``pg_restore --list`` lines (comments skipped); names with spaces or quotes are not split on."""
    out: list[TocEntry] = []
    for line in lines:
        if not line.strip() or line.startswith(";") or ";" not in line:
            continue
        head, _, body = line.partition(";")
        parts = body.split(None, 2)
        if len(parts) < 3 or not head.strip().isdigit():
            continue
        tail = parts[2]
        desc = next((d for d in _TOC_DESCS if tail == d or tail.startswith(d + " ")), tail.split(" ", 1)[0])
        out.append(TocEntry(int(head), int(parts[1]) if parts[1].isdigit() else 0, desc, tail[len(desc) :].strip()))
    return out


def _identity_on(conn: Any, dbname: str) -> dict[str, Any]:
    import psycopg

    row = conn.execute(
        "SELECT current_setting('server_version'), pg_current_wal_lsn()::text, "
        "pg_snapshot_xmax(pg_current_snapshot())::text, now()::text"
    ).fetchone()
    try:
        with conn.transaction():  # a savepoint: a refusal must not abort the caller's (snapshot) transaction
            sysid = str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])
    except psycopg.Error:  # not granted: the data directory's identity stays unknown
        sysid = None
    return {
        "system_identifier": sysid,
        "database": dbname,
        "server_version": str(row[0]),
        "lsn": str(row[1]),
        "next_xid": int(row[2]),
        "at": str(row[3]),
    }


def identity_drift(recorded: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why a backup taken at ``recorded`` is not a backup of the source as it is ``now`` (None: same source, no
    write since). Writes are told by the next transaction id: every write assigns one."""
    for key in ("system_identifier", "database"):
        if recorded.get(key) != now.get(key):
            return f"another source: {key} {recorded.get(key)!r} then, {now.get(key)!r} now"
    if str(recorded.get("server_version", "")).split(".")[0] != str(now.get("server_version", "")).split(".")[0]:
        return f"the source was upgraded: {recorded.get('server_version')} then, {now.get('server_version')} now"
    if int(recorded.get("next_xid") or 0) != int(now.get("next_xid") or 0):
        return (
            f"the source was written since (next transaction id {recorded.get('next_xid')} then, "
            f"{now.get('next_xid')} now; WAL {recorded.get('lsn')} then, {now.get('lsn')} now)"
        )
    return None


@dataclass
class ExtensionUse:
    """An extension installed on the source and which tables depend on it (column types or defaults)."""

    name: str
    version: str
    tables: list[str] = field(default_factory=list)


def _translate(exc: BaseException, what: str, endpoint: str) -> AdapterError:
    import psycopg

    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if isinstance(exc, psycopg.OperationalError):
        return TransientError(
            f"{what} on PostgreSQL {endpoint} failed: {message}",
            "the server is unreachable, restarting or refused the connection",
            "check the server (`bpmigrate sandbox status` in the sandbox) and re-run the same command (it resumes)",
            service="postgres",
        )
    return AdapterError(
        f"{what} on PostgreSQL {endpoint} failed: {message}",
        f"{type(exc).__name__} from the server",
        "fix the cause shown above and re-run the same bpmigrate command",
        service="postgres",
    )


def qident(*parts: str) -> str:
    """Quote an identifier (schema.table) for SQL text (psycopg's sql module is used where possible)."""
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def qliteral(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PostgresAdapter:
    def __init__(
        self,
        *,
        role: str,
        host: str,
        port: int,
        dbname: str,
        user: str,
        password: str | None,
        sslmode: str | None,
        bin_dir: str | None,
    ) -> None:
        self.role = role
        self.host = host
        self.port = port
        self.dbname = dbname
        self.user = user
        self._password = password
        self.sslmode = sslmode
        self.bin_dir = bin_dir

    # -- addressing --------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"

    @property
    def needs_address(self) -> bool:
        """The configured host is a placeholder filled from an upstream step's output (e.g. the rds endpoint)."""
        return self.host in ("", "from-terraform")

    def with_address(self, host: str, port: int | None = None, dbname: str | None = None) -> PostgresAdapter:
        return PostgresAdapter(
            role=self.role,
            host=host,
            port=int(port or self.port),
            dbname=dbname or self.dbname,
            user=self.user,
            password=self._password,
            sslmode=self.sslmode,
            bin_dir=self.bin_dir,
        )

    def _kwargs(self, dbname: str | None = None) -> dict[str, Any]:
        if self.needs_address:
            raise ConfigError(
                f"PostgreSQL {self.role} host is {self.host!r}: the address comes from Terraform",
                "the step that provisions it (rds) has not recorded its endpoint output yet",
                "bpmigrate apply --step rds",
            )
        kw: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": dbname or self.dbname,
            "user": self.user,
            "application_name": "bpmigrate",
            "connect_timeout": 10,
        }
        if self._password:
            kw["password"] = self._password
        if self.sslmode:
            kw["sslmode"] = self.sslmode
        return kw

    def conninfo(self, dbname: str | None = None) -> str:
        """A libpq conninfo WITHOUT the password (given to child processes through PGPASSWORD)."""
        kw = self._kwargs(dbname)
        kw.pop("password", None)
        kw.pop("connect_timeout", None)
        return " ".join(f"{k}={qliteral(str(v))}" for k, v in kw.items())

    def _child_env(self) -> dict[str, str]:
        return {"PGPASSWORD": self._password} if self._password else {}

    # -- connections -------------------------------------------------------------------------------------------
    def connect(self, *, autocommit: bool = True, dbname: str | None = None) -> psycopg.Connection[Any]:
        import psycopg

        try:
            return psycopg.connect(autocommit=autocommit, **self._kwargs(dbname))
        except psycopg.Error as exc:
            raise _translate(exc, "connect", self.endpoint) from None

    @contextmanager
    def session(self, *, autocommit: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """A connection whose psycopg errors come out translated."""
        import psycopg

        conn = self.connect(autocommit=autocommit)
        try:
            yield conn
        except psycopg.Error as exc:
            raise _translate(exc, "query", self.endpoint) from None
        finally:
            conn.close()

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.session() as conn:
            return list(conn.execute(sql, params).fetchall())

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self.session() as conn:
            conn.execute(sql, params)

    def ping(self) -> str:
        return self.server_version()

    def server_version(self) -> str:
        return str(self.query("SHOW server_version")[0][0])

    def unreachable_reason(self) -> str | None:
        if self.needs_address:
            return f"{self.role} address not known yet (comes from the rds step output)"
        try:
            self.ping()
        except AdapterError as exc:
            return exc.what
        return None

    # -- introspection -----------------------------------------------------------------------------------------
    def tables(self) -> list[TableInfo]:
        excluded = ",".join(qliteral(s) for s in SYSTEM_SCHEMAS)
        rows = self.query(
            f"""
            SELECT n.nspname, c.relname, c.oid::bigint, greatest(c.reltuples, 0)::bigint,
                   pg_table_size(c.oid)::bigint, c.relpersistence = 'u'
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ({excluded}) AND n.nspname NOT LIKE 'pg_temp%'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
            ORDER BY 1, 2
            """
        )
        cols = self.query(
            f"""
            SELECT a.attrelid::bigint, a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '',
                   CASE WHEN coalesce(bt.typsend, t.typsend) = 'record_send'::regproc
                          OR (coalesce(bt.typsend, t.typsend) = 'array_send'::regproc
                              AND coalesce(bt.typelem, t.typelem) >= 16384)
                        THEN '-' ELSE coalesce(bt.typsend, t.typsend)::regproc::text END,
                   NOT a.attnotnull
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
            WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
              AND n.nspname NOT IN ({excluded})
            ORDER BY a.attrelid, a.attnum
            """
        )
        keys = self.query(
            f"""
            SELECT DISTINCT ON (i.indrelid) i.indrelid::bigint, a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indkey[0] <> 0 AND a.attnotnull
              AND n.nspname NOT IN ({excluded})
            ORDER BY i.indrelid, i.indisprimary DESC, i.indnatts
            """
        )
        by_rel: dict[int, list[Column]] = {}
        for relid, name, typ, generated, send, nullable in cols:
            by_rel.setdefault(int(relid), []).append(Column(name, typ, bool(generated), str(send), bool(nullable)))
        key_by_rel = {int(r): (str(n), str(t)) for r, n, t in keys}
        out: list[TableInfo] = []
        for schema, name, relid, est, size, unlogged in rows:
            key = key_by_rel.get(int(relid))
            out.append(
                TableInfo(
                    schema=schema,
                    name=name,
                    columns=tuple(by_rel.get(int(relid), [])),
                    key=key[0] if key else None,
                    key_type=key[1] if key else None,
                    est_rows=int(est),
                    bytes=int(size),
                    unlogged=bool(unlogged),
                )
            )
        return out

    def row_count(self, schema: str, name: str) -> int:
        return int(self.query(f"SELECT count(*) FROM {qident(schema, name)}")[0][0])

    def row_counts(self, tables: Sequence[TableInfo]) -> dict[str, int]:
        with self.session() as conn:
            return {
                t.qualified: int(conn.execute(f"SELECT count(*) FROM {qident(t.schema, t.name)}").fetchone()[0])  # type: ignore[index]
                for t in tables
            }

    def table_exists(self, schema: str, name: str) -> bool:
        return bool(self.query("SELECT to_regclass(%s) IS NOT NULL", [qident(schema, name)])[0][0])

    def user_tables(self) -> list[str]:
        return [t.qualified for t in self.tables()]

    def sequences(self) -> list[SequenceInfo]:
        excluded = ",".join(qliteral(s) for s in SYSTEM_SCHEMAS)
        names = self.query(
            f"""
            SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'S' AND n.nspname NOT IN ({excluded})
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
            ORDER BY 1, 2
            """
        )
        out: list[SequenceInfo] = []
        with self.session() as conn:
            for schema, name in names:
                row = conn.execute(f"SELECT last_value, is_called FROM {qident(schema, name)}").fetchone()
                assert row is not None
                out.append(SequenceInfo(schema, name, int(row[0]) if row[0] is not None else None, bool(row[1])))
        return out

    def set_sequences(self, seqs: Sequence[SequenceInfo]) -> int:
        with self.session() as conn:
            for s in seqs:
                if s.last_value is None:
                    continue
                conn.execute(
                    "SELECT setval(%s::regclass, %s, %s)", [qident(s.schema, s.name), s.last_value, s.is_called]
                )
        return len(seqs)

    def extensions_installed(self) -> dict[str, str]:
        return {str(n): str(v) for n, v in self.query("SELECT extname, extversion FROM pg_extension ORDER BY 1")}

    def extensions_available(self) -> dict[str, str | None]:
        rows = self.query("SELECT name, default_version FROM pg_available_extensions ORDER BY 1")
        return {str(n): (str(v) if v is not None else None) for n, v in rows}

    def extension_uses(self) -> list[ExtensionUse]:
        """Installed extensions (not plpgsql) and the tables whose column types or defaults depend on them."""
        installed = self.extensions_installed()
        uses = {name: ExtensionUse(name, ver) for name, ver in installed.items() if name != "plpgsql"}
        rows = self.query(
            """
            WITH ext_obj AS (
              SELECT e.extname, d.classid, d.objid FROM pg_depend d
              JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
              WHERE d.deptype = 'e'
            )
            SELECT DISTINCT x.extname, n.nspname || '.' || c.relname
            FROM ext_obj x
            JOIN pg_type t ON x.classid = 'pg_type'::regclass AND x.objid = t.oid
            JOIN pg_attribute a ON a.atttypid IN (t.oid, t.typarray) AND a.attnum > 0 AND NOT a.attisdropped
            JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p')
            JOIN pg_namespace n ON n.oid = c.relnamespace
            UNION
            SELECT DISTINCT x.extname, n.nspname || '.' || c.relname
            FROM ext_obj x
            JOIN pg_depend d2 ON x.classid = 'pg_proc'::regclass AND d2.refclassid = 'pg_proc'::regclass
                 AND d2.refobjid = x.objid AND d2.classid = 'pg_attrdef'::regclass
            JOIN pg_attrdef ad ON ad.oid = d2.objid
            JOIN pg_class c ON c.oid = ad.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            """
        )
        for ext, table in rows:
            if ext in uses and table not in uses[ext].tables:
                uses[ext].tables.append(str(table))
        return sorted(uses.values(), key=lambda u: u.name)

    def large_object_count(self) -> int:
        return int(self.query("SELECT count(*) FROM pg_largeobject_metadata")[0][0])

    def large_objects(self) -> list[LargeObjectInfo]:
        """Every large object's OID, owner and grants (``aclexplode``: works without superuser)."""
        rows = self.query(
            """SELECT m.oid::bigint, pg_get_userbyid(m.lomowner)::text,
                      coalesce((SELECT array_agg(DISTINCT (CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_get_userbyid(a.grantee)::text END) || ':' || a.privilege_type)
                                FROM aclexplode(m.lomacl) a WHERE a.grantee <> m.lomowner), '{}')
               FROM pg_largeobject_metadata m ORDER BY 1"""
        )
        return [LargeObjectInfo(int(o), str(owner), tuple(sorted(str(g) for g in grants))) for o, owner, grants in rows]

    def large_object_digests(self, chunk: int = 1 << 20) -> dict[int, tuple[int, str]]:
        """oid -> (size, sha256) of every large object's contents, read in chunks with ``lo_get`` (no superuser:
        ``pg_largeobject`` itself is not readable on RDS)."""
        out: dict[int, tuple[int, str]] = {}
        with self.session(autocommit=False) as conn:
            oids = [int(r[0]) for r in conn.execute("SELECT oid FROM pg_largeobject_metadata ORDER BY 1").fetchall()]
            for oid in oids:
                digest, size = hashlib.sha256(), 0
                while True:
                    row = conn.execute("SELECT lo_get(%s::oid, %s, %s)", [oid, size, chunk], binary=True).fetchone()
                    data = bytes(row[0]) if row and row[0] is not None else b""
                    digest.update(data)
                    size += len(data)
                    if len(data) < chunk:
                        break
                out[oid] = (size, digest.hexdigest())
            conn.rollback()
        return out

    def matviews(self) -> list[MatviewInfo]:
        """Materialized views in dependency order (one that reads another comes after it), with populated state."""
        excluded = ",".join(qliteral(s) for s in SYSTEM_SCHEMAS)
        rows = self.query(
            f"""SELECT c.oid::bigint, n.nspname, c.relname, c.relispopulated
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'm' AND n.nspname NOT IN ({excluded})
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
                ORDER BY 2, 3"""
        )
        deps = self.query(
            """SELECT DISTINCT r.ev_class::bigint, d.refobjid::bigint FROM pg_rewrite r
               JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
               JOIN pg_class c ON c.oid = d.refobjid
               WHERE c.relkind IN ('m', 'v') AND d.refobjid <> r.ev_class"""
        )
        info = {int(o): MatviewInfo(str(s), str(n), bool(p)) for o, s, n, p in rows}
        edges: dict[int, set[int]] = {}
        for view, ref in deps:
            edges.setdefault(int(view), set()).add(int(ref))

        def reaches(oid: int, seen: set[int]) -> set[int]:  # matviews reached through views and matviews
            out: set[int] = set()
            for ref in edges.get(oid, set()):
                if ref in seen:
                    continue
                seen.add(ref)
                if ref in info:
                    out.add(ref)
                out |= reaches(ref, seen)
            return out

        ordered: list[int] = []
        pending = {oid: reaches(oid, set()) for oid in info}
        while pending:
            ready = sorted(
                (o for o, needs in pending.items() if not (needs - set(ordered))), key=lambda o: info[o].qualified
            )
            if not ready:  # a cycle cannot exist between matviews; keep the rest in name order
                ready = sorted(pending, key=lambda o: info[o].qualified)
            for o in ready:
                ordered.append(o)
                pending.pop(o)
        return [info[o] for o in ordered]

    def matview_digest(self, view: MatviewInfo) -> tuple[int, str] | None:
        """(rows, order-independent checksum of the rows' text form) of a populated materialized view; None when
        it is not populated."""
        if not self.query("SELECT relispopulated FROM pg_class WHERE oid = %s::regclass", [view.ident])[0][0]:
            return None
        row = self.query(
            "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text "
            f"FROM {view.ident} t"
        )[0]
        return int(row[0]), str(row[1])

    def data_relations(self) -> dict[int, str]:
        """OID -> schema.name of every relation whose rows a dump holds: ordinary tables and leaf partitions (a
        partitioned parent has no rows of its own)."""
        excluded = ",".join(qliteral(s) for s in SYSTEM_SCHEMAS)
        rows = self.query(
            f"""SELECT c.oid::bigint, n.nspname || '.' || c.relname FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'r' AND n.nspname NOT IN ({excluded}) AND n.nspname NOT LIKE 'pg_temp%'
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
                ORDER BY 2"""
        )
        return {int(o): str(q) for o, q in rows}

    def identity(self) -> dict[str, Any]:
        """Who this server is and where it stands now: system identifier, database, version, WAL position, next
        transaction id (advances with every write) and the server's clock."""
        with self.session() as conn:
            return _identity_on(conn, self.dbname)

    def database_size(self) -> int:
        return int(self.query("SELECT pg_database_size(current_database())")[0][0])

    def schema_exists(self, schema: str) -> bool:
        return bool(self.query("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", [schema])[0][0])

    # -- extensions --------------------------------------------------------------------------------------------
    def create_extension(self, name: str) -> None:
        self.execute(f"CREATE EXTENSION IF NOT EXISTS {qident(name)}")

    # -- client binaries ---------------------------------------------------------------------------------------
    def binary(self, name: str) -> str:
        if self.bin_dir:
            path = Path(self.bin_dir) / name
            if path.is_file():
                return str(path)
            raise ConfigError(
                f"{name} not found in bin_dir {self.bin_dir} ({self.role})",
                "bin_dir must name the directory with pg_dump/pg_restore/psql of the server's version",
                "fix postgres.<role>.bin_dir in migrate.toml (sandbox: `bpmigrate sandbox up` writes it)",
            )
        found = shutil.which(name)
        if not found:
            raise ConfigError(
                f"{name} is not on PATH and postgres.{self.role}.bin_dir is not set",
                "bpmigrate runs the PostgreSQL client tools of the server's major version",
                f"install the PostgreSQL client tools or set postgres.{self.role}.bin_dir in migrate.toml",
            )
        return found

    def _run(self, args: Sequence[str | Path], *, timeout: float | None = None, pgoptions: str | None = None) -> str:
        from migrate.adapters.proc import ProcRunner

        env = dict(self._child_env())
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        if pgoptions:
            env["PGOPTIONS"] = pgoptions
        return ProcRunner().run(args, env=env, timeout=timeout, service="postgres").stdout

    def dump(
        self,
        out: Path,
        *,
        fmt: str = "c",
        section: str | None = None,
        snapshot: str | None = None,
        jobs: int = 1,
        extra: Sequence[str] = (),
    ) -> Path:
        """pg_dump of this database into ``out`` (written to a .part file, renamed when complete)."""
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".part")
        if part.exists():
            shutil.rmtree(part) if part.is_dir() else part.unlink()
        args: list[str | Path] = [self.binary("pg_dump"), f"-F{fmt}", "-f", part, "--dbname", self.conninfo()]
        if section:
            args += ["--section", section]
        if snapshot:
            args += ["--snapshot", snapshot]
        if jobs > 1:
            args += ["-j", str(jobs)]
        args += list(extra)
        self._run(args)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(part, out)
        return out

    def restore(
        self,
        archive: Path,
        *,
        section: str | None = None,
        single_transaction: bool = True,
        jobs: int = 1,
        client: PostgresAdapter | None = None,
        no_owner: bool = True,
        pgoptions: str | None = None,
    ) -> None:
        """pg_restore ``archive`` INTO this database (client binaries from ``client`` when given: the source's)."""
        tool = (client or self).binary("pg_restore")
        args: list[str | Path] = [tool, "--dbname", self.conninfo(), "--exit-on-error"]
        if section:
            args += ["--section", section]
        if single_transaction and jobs <= 1:
            args.append("--single-transaction")
        if jobs > 1:
            args += ["-j", str(jobs)]
        if no_owner:
            args += ["--no-owner", "--no-acl"]
        args.append(archive)
        self._run(args, pgoptions=pgoptions)

    def restore_script(
        self,
        archive: Path,
        *,
        section: str,
        out: Path,
        trailer: str = "",
        client: PostgresAdapter | None = None,
        pgoptions: str | None = None,
    ) -> None:
        """Run one section of ``archive`` INTO this database as ONE transaction, with ``trailer`` SQL (e.g. the
        stage marker) inside that same transaction: ``pg_restore -f`` renders the SQL, ``psql -1`` runs it."""
        tools = client or self
        args: list[str | Path] = [tools.binary("pg_restore"), "--section", section, "--no-owner", "--no-acl", "-f", out]
        self._run([*args, archive])
        if trailer:
            with out.open("a", encoding="utf-8") as fh:
                fh.write("\n" + trailer.rstrip() + "\n")
        self._run(
            [
                tools.binary("psql"),
                "--dbname",
                self.conninfo(),
                "--no-psqlrc",
                "--quiet",
                "--single-transaction",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                out,
            ],
            pgoptions=pgoptions,
        )

    def restore_list(self, archive: Path) -> list[str]:
        """``pg_restore --list``: the table of contents of a custom-format archive (reads the whole TOC)."""
        out = self._run([self.binary("pg_restore"), "--list", archive])
        return [line for line in out.splitlines() if line and not line.startswith(";")]

    # -- checksums (data-validate) -----------------------------------------------------------------------------
    def chunk_checksum(self, table: TableInfo, lo: str | None, hi: str | None) -> tuple[int, str]:
        """(row count, order-independent sum of per-row hashes) of the rows with lo <= key < hi."""
        with self.session() as conn:
            return checksum_on(conn, table, lo, hi)


def checksum_sql(table: TableInfo, lo: str | None, hi: str | None) -> str:
    """(count, sum of per-row 64-bit hashes) of a key range.

    Each row is hashed from the binary send form of every column (exact for floats, cheap for vectors: no text
    formatting), through ``hash_record_extended`` over a row of bytea values (PostgreSQL's hash_any, ~2x faster
    than md5 here; NULLs are hashed by position). Rows combine by a numeric sum: no sort, no big aggregate.
    """
    parts = []
    for c in table.columns:
        col = qident(c.name)
        parts.append(f"{c.send_fn}({col})" if c.send_fn and c.send_fn != "-" else f"convert_to({col}::text, 'UTF8')")
    row = f"ROW({', '.join(parts)})" if len(parts) > 1 else f"ROW({parts[0] if parts else 'NULL::bytea'}, NULL::bytea)"
    where = range_where(table, lo, hi, collate_c=True)
    return (
        f"SELECT count(*), coalesce(sum(hash_record_extended({row}, 0)::numeric), 0)::text "
        f"FROM {qident(table.schema, table.name)} {where}"
    )


_COLLATABLE = ("text", "character varying", "character", "citext", "name")


def _key_expr(table: TableInfo, collate_c: bool) -> str:
    """The chunking key; with ``collate_c`` text keys compare bytewise so source and target (whose default
    collations may differ, e.g. C vs en_US.UTF-8 on RDS) split ranges identically."""
    key = qident(table.key or "")
    typ = (table.key_type or "").split("(")[0]
    return f'{key} COLLATE "C"' if collate_c and typ in _COLLATABLE else key


def range_where(table: TableInfo, lo: str | None, hi: str | None, *, collate_c: bool = False) -> str:
    if table.key is None or (lo is None and hi is None):
        return ""
    key = _key_expr(table, collate_c)
    typ = table.key_type or "text"
    conds = []
    if lo is not None:
        conds.append(f"{key} >= {qliteral(lo)}::{typ}")
    if hi is not None:
        conds.append(f"{key} < {qliteral(hi)}::{typ}")
    return "WHERE " + " AND ".join(conds)


def checksum_on(conn: psycopg.Connection[Any], table: TableInfo, lo: str | None, hi: str | None) -> tuple[int, str]:
    """(rows, checksum) of one key range."""
    row = conn.execute(checksum_sql(table, lo, hi)).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def chunk_bounds(
    conn: psycopg.Connection[Any], table: TableInfo, n_chunks: int, *, collate_c: bool = False
) -> list[str]:
    """n_chunks-1 sorted, distinct boundary values of the table's key (sampled for big tables)."""
    if table.key is None or n_chunks <= 1:
        return []
    key = _key_expr(table, collate_c)
    fractions = ",".join(f"{i / n_chunks:.6f}" for i in range(1, n_chunks))
    sample = ""
    if table.est_rows > 200_000:
        pct = min(100.0, 100.0 * 200_000 / table.est_rows)
        sample = f" TABLESAMPLE SYSTEM ({pct:.4f}) REPEATABLE (42)"
    sql = (
        f"SELECT percentile_disc(ARRAY[{fractions}]::float8[]) WITHIN GROUP (ORDER BY {key})::text[] "
        f"FROM {qident(table.schema, table.name)}{sample}"
    )
    row = conn.execute(sql).fetchone()
    values = [v for v in (row[0] if row and row[0] else []) if v is not None]
    out: list[str] = []
    for v in values:
        if not out or v != out[-1]:
            out.append(str(v))
    return out


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def from_config(env: EnvConfig, *, project_root: Path, state_dir: Path, role: str = "source") -> PostgresAdapter:
    from migrate.adapters.secrets import resolve

    endpoint: PgEndpoint | None = env.postgres.get(role)  # type: ignore[call-overload]
    if endpoint is None:
        raise ConfigError(
            f"environment {env.name} has no postgres.{role} endpoint",
            "the data phase needs both postgres.source and postgres.target",
            f"add [environments.{env.name}.postgres.{role}] to migrate.toml (sandbox: `bpmigrate sandbox up`)",
        )
    aws = None
    if endpoint.password_secret:
        from migrate.adapters.aws import from_config as aws_from_config

        aws = aws_from_config(env, project_root=project_root, state_dir=state_dir)
    password = resolve(env_var=endpoint.password_env, secret_ref=endpoint.password_secret, aws=aws)
    return PostgresAdapter(
        role=role,
        host=endpoint.host,
        port=endpoint.port,
        dbname=endpoint.dbname,
        user=endpoint.user,
        password=password,
        sslmode=endpoint.sslmode,
        bin_dir=endpoint.bin_dir,
    )


# -- data validation: independent of the copy (SQL checksums on both sides, chunked by key range) ----------------
@dataclass(frozen=True)
class ValidationChunk:
    table: str
    index: int
    lo: str | None
    hi: str | None

    @property
    def key(self) -> str:
        return f"{self.table}#{self.index}:{self.lo}:{self.hi}"

    def describe(self) -> str:
        lo = "-inf" if self.lo is None else self.lo
        hi = "+inf" if self.hi is None else self.hi
        return f"table {self.table} chunk {self.index} (key in [{lo}, {hi}))"


@dataclass
class ChunkVerdict:
    chunk: ValidationChunk
    source_rows: int
    target_rows: int
    source_sum: str
    target_sum: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.source_rows == self.target_rows and self.source_sum == self.target_sum

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.chunk.table,
            "chunk": self.chunk.index,
            "lo": self.chunk.lo,
            "hi": self.chunk.hi,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "source_sum": self.source_sum,
            "target_sum": self.target_sum,
            "error": self.error,
            "ok": self.ok,
        }


def validation_chunks(
    source: PostgresAdapter, tables: Sequence[TableInfo], *, chunk_rows: int, chunk_bytes: int
) -> list[ValidationChunk]:
    out: list[ValidationChunk] = []
    with source.session() as conn:
        for t in tables:
            n = 1
            if t.key is not None:
                n = max(1, min(10_000, math.ceil(max(t.est_rows / max(1, chunk_rows), t.bytes / max(1, chunk_bytes)))))
            bounds = chunk_bounds(conn, t, n, collate_c=True) if n > 1 else []
            edges: list[str | None] = [None, *bounds, None]
            out.extend(ValidationChunk(t.qualified, i, edges[i], edges[i + 1]) for i in range(len(edges) - 1))
    return out


def validate_chunks(
    source: PostgresAdapter,
    target: PostgresAdapter,
    tables: Sequence[TableInfo],
    chunks: Sequence[ValidationChunk],
    *,
    workers: int = 2,
    on_verdict: Any = None,
) -> list[ChunkVerdict]:
    """Checksum every chunk on both sides (source and target queries run concurrently, ``workers`` chunks at once)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    by_name = {t.qualified: t for t in tables}
    local = threading.local()
    opened: list[Any] = []
    lock = threading.Lock()

    def conn_for(side: PostgresAdapter) -> Any:
        conns: dict[str, Any] = getattr(local, "conns", {})
        local.conns = conns
        if side.role not in conns:
            conn = side.connect()
            with lock:
                opened.append(conn)
            conns[side.role] = conn
        return conns[side.role]

    def one(side: PostgresAdapter, chunk: ValidationChunk) -> tuple[int, str] | str:
        try:
            return checksum_on(conn_for(side), by_name[chunk.table], chunk.lo, chunk.hi)
        except psycopg.Error as exc:
            return (
                f"{side.role}: {redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)}"
            )
        except AdapterError as exc:
            return f"{side.role}: {exc.what}"

    verdicts: list[ChunkVerdict] = []
    try:
        with ThreadPoolExecutor(max_workers=max(2, 2 * workers), thread_name_prefix="pgcheck") as pool:
            pending = [(c, pool.submit(one, source, c), pool.submit(one, target, c)) for c in chunks]
            for chunk, fs, ft in pending:
                rs, rt = fs.result(), ft.result()
                err = "; ".join(x for x in (rs, rt) if isinstance(x, str))
                s = rs if not isinstance(rs, str) else (-1, "")
                t = rt if not isinstance(rt, str) else (-1, "")
                verdict = ChunkVerdict(chunk, s[0], t[0], s[1], t[1], err)
                verdicts.append(verdict)
                if on_verdict:
                    on_verdict(verdict)
    finally:
        for conn in opened:
            try:
                conn.close()
            except Exception:
                pass
    return verdicts


def nearest_ids(
    adapter: PostgresAdapter, table: TableInfo, column: str, k: int = 10, scan_rows: int = 20_000
) -> list[str]:
    """The pgvector k-nearest-neighbour query (``ORDER BY col <-> probe LIMIT k``, exact: index scans off) around
    the vector of the row with the smallest key, over the first ``scan_rows`` rows by key (0 = the whole table).

    Bounded on purpose: every vector's bytes are already compared by the chunk checksums; this query checks that
    pgvector answers the same on both sides without a second full detoasting pass over the table.
    """
    if table.key is None:
        return []
    key, col, rel = qident(table.key), qident(column), qident(table.schema, table.name)
    scope = f"(SELECT {key}, {col} FROM {rel} ORDER BY {key} LIMIT {int(scan_rows)})" if scan_rows > 0 else rel
    with adapter.session(autocommit=False) as conn:
        conn.execute("SET LOCAL enable_indexscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        sql = (
            f"WITH probe AS (SELECT {col} AS v FROM {rel} WHERE {col} IS NOT NULL ORDER BY {key} LIMIT 1) "
            f"SELECT t.{key}::text FROM {scope} t, probe WHERE t.{col} IS NOT NULL "
            f"ORDER BY t.{col} <-> probe.v, t.{key} LIMIT {int(k)}"
        )
        rows = conn.execute(sql).fetchall()
        conn.rollback()
    return [str(r[0]) for r in rows]


def vector_columns(tables: Sequence[TableInfo]) -> list[tuple[TableInfo, str]]:
    return [(t, c.name) for t in tables for c in t.columns if c.type.startswith("vector")]


def nearest_ids_background(
    source: PostgresAdapter,
    target: PostgresAdapter,
    table: TableInfo,
    column: str,
    k: int = 10,
    scan_rows: int = 20_000,
) -> Any:
    """Start the nearest-neighbour query on both sides in background threads; call the result to join:
    ``(source_ids, target_ids)`` (errors are re-raised, translated, by the call)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pgnn")
    fs = pool.submit(nearest_ids, source, table, column, k, scan_rows)
    ft = pool.submit(nearest_ids, target, table, column, k, scan_rows)
    pool.shutdown(wait=False)

    def join() -> tuple[list[str], list[str]]:
        return fs.result(), ft.result()

    return join
