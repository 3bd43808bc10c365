"""Load the BetterPrompts-shaped sandbox dataset (:mod:`migrate.sandbox.dataset`) into PostgreSQL and Redis.

Public API (also used by the data benchmarks):

* ``seed_postgres(dsn, scale=1, seed=42, *, force=False) -> PgSeedReport`` — one transaction: schemas, binary
  ``COPY`` of every table, then foreign keys, indexes (incl. pgvector ivfflat), sequences, ``ANALYZE`` and a seed
  marker (a JSON comment on schema ``analytics``). A crash leaves nothing half-seeded. Already seeded with the same
  (scale, seed) = no-op; different → refused unless ``force``.
* ``seed_redis(host, port, keys=5000, seed=42, *, force=False) -> RedisSeedReport`` — flushes DBs 0–2 and writes
  the keys with pipelines; a marker lives in DB 15 (outside the migrated DBs).
* ``pg_checksums(dsn)`` / ``redis_checksums(host, port)`` — content digests used to prove determinism.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError
from migrate.redact import redact
from migrate.sandbox import dataset as ds

if TYPE_CHECKING:
    import psycopg
    import redis

ProgressFn = Callable[[str, int], None]  # (table or db, rows/keys written so far)
MARKER_SCHEMA = "analytics"
REDIS_MARKER_DB = 15
REDIS_MARKER_KEY = b"bpmigrate:sandbox-seed"
OPTIONAL_EXTENSIONS = ("uuid-ossp", "pgcrypto")  # used by the Compose source when available (not in pgserver)
ORDER_BY = {"analytics.daily_stats": "day, technique"}


@dataclass
class PgSeedReport:
    scale: float
    seed: int
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    bytes: int = 0
    extensions_used: list[str] = field(default_factory=list)
    extensions_missing: list[str] = field(default_factory=list)
    skipped: bool = False  # already seeded with the same (scale, seed)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_rows"] = self.total_rows
        return out


@dataclass
class RedisSeedReport:
    keys: int
    seed: int
    per_db: dict[int, int] = field(default_factory=dict)
    per_type: dict[str, int] = field(default_factory=dict)
    with_ttl: int = 0
    seconds: float = 0.0
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pg_error(exc: BaseException, what: str, dsn: str) -> AdapterError:
    return AdapterError(
        f"{what} failed on {redact(_safe_endpoint(dsn))}: {redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)}",
        f"{type(exc).__name__} from PostgreSQL",
        "check `bpmigrate sandbox status`; then re-run `bpmigrate sandbox seed` (a failed seed leaves nothing behind)",
        service="postgres",
    )


def _safe_endpoint(dsn: str) -> str:
    return dsn.split("@", 1)[-1] if "@" in dsn else dsn


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------------------------
def pg_seed_info(dsn: str) -> dict[str, Any] | None:
    """The seed marker of the database at ``dsn`` ({"scale", "seed", "rows", ...}) or None when not seeded."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            return _marker(conn)
    except psycopg.Error as exc:
        raise _pg_error(exc, "reading the seed marker", dsn) from None


def _marker(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s", (MARKER_SCHEMA,)
    ).fetchone()
    if row is None:
        return None
    try:
        info = json.loads(row[0] or "")
    except ValueError:
        return {}  # the schema exists but carries no marker: not ours
    seed_info = info.get("bpmigrate_seed") if isinstance(info, dict) else None
    return seed_info if isinstance(seed_info, dict) else {}


def _register_dumpers(conn: psycopg.Connection[Any], oids: dict[str, int]) -> None:
    """Binary dumpers for the types psycopg does not know: pgvector ``vector`` and the ``auth.user_tier`` enum."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class _VectorDumper(Dumper):
        format = Format.BINARY
        oid = oids["vector"]

        def dump(self, obj: Any) -> bytes:
            return bytes(obj)

    class _EnumDumper(Dumper):
        format = Format.BINARY
        oid = oids["auth.user_tier"]

        def dump(self, obj: Any) -> bytes:
            return str(obj).encode()

    conn.adapters.register_dumper(None, _VectorDumper)
    conn.adapters.register_dumper(None, _EnumDumper)


def _copy_table(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    columns: tuple[str, ...],
    oids: list[int],
    rows: Iterable[tuple[Any, ...]],
    progress: ProgressFn | None,
) -> int:
    cols = ", ".join(f'"{c}"' for c in columns)
    count = 0
    with (
        conn.cursor() as cur,
        cur.copy(f'COPY "{schema}"."{table}" ({cols}) FROM STDIN (FORMAT BINARY)'.encode()) as copy,
    ):
        copy.set_types(oids)
        for row in rows:
            copy.write_row(row)
            count += 1
            if progress is not None and count % 20_000 == 0:
                progress(f"{schema}.{table}", count)
    if progress is not None and count % 20_000:
        progress(f"{schema}.{table}", count)
    return count


def seed_postgres(
    dsn: str,
    scale: float = ds.DEFAULT_SCALE,
    seed: int = ds.DEFAULT_SEED,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> PgSeedReport:
    """Fill the database at ``dsn`` with the dataset for (scale, seed) in one transaction (see module docstring)."""
    import psycopg

    report = PgSeedReport(scale=scale, seed=seed)
    started = time.perf_counter()
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            existing = _marker(conn)
            if existing is None:
                present = conn.execute(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = ANY(%s)", (list(ds.SCHEMAS),)
                ).fetchone()
                if present and present[0]:
                    existing = {}  # some of our schemas exist, created by someone else: never drop them silently
            if existing is not None:
                same = existing.get("scale") == scale and existing.get("seed") == seed
                if same and not force:
                    report.skipped = True
                    report.rows = dict(existing.get("rows", {}))
                    report.extensions_missing = list(existing.get("extensions_missing", []))
                    report.extensions_used = list(existing.get("extensions_used", []))
                    return report
                if not force:
                    what = (
                        f"already seeded with scale={existing.get('scale')} seed={existing.get('seed')}"
                        if existing
                        else "schemas auth/prompts/analytics exist and were not created by `sandbox seed`"
                    )
                    raise AdapterError(
                        f"the source database is {what}",
                        "re-seeding replaces every table of those schemas",
                        "bpmigrate sandbox seed --force (or `bpmigrate sandbox reset` for a clean sandbox)",
                        service="postgres",
                    )
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            conn.execute("SET LOCAL client_min_messages = warning")
            conn.execute("DROP SCHEMA IF EXISTS auth, prompts, analytics CASCADE")
            for ext in OPTIONAL_EXTENSIONS:
                try:
                    with conn.transaction():
                        conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}"'.encode())
                    report.extensions_used.append(ext)
                except psycopg.Error:
                    report.extensions_missing.append(ext)  # the data phase reports extension parity
            conn.execute(ds.SCHEMA_SQL.encode())
            if "uuid-ossp" in report.extensions_used:  # as the Compose schema does when it can
                conn.execute("ALTER TABLE auth.users ALTER COLUMN id SET DEFAULT uuid_generate_v4()")
            if "pgcrypto" in report.extensions_used:
                conn.execute(
                    "CREATE FUNCTION auth.hash_token(t text) RETURNS bytea LANGUAGE sql IMMUTABLE "
                    "AS $$ SELECT digest(t, 'sha256') $$"
                )
            type_names = sorted({t for _, _, _, types in ds.TABLES for t in types})
            oids: dict[str, int] = {}
            for name in type_names:
                row = conn.execute("SELECT %s::regtype::oid", (name,)).fetchone()
                assert row is not None
                oids[name] = int(row[0])
            _register_dumpers(conn, oids)
            data = ds.Dataset(scale=scale, seed=seed)
            for schema, table, columns, types in ds.TABLES:
                report.rows[f"{schema}.{table}"] = _copy_table(
                    conn, schema, table, columns, [oids[t] for t in types], data.rows(schema, table), progress
                )
            conn.execute(ds.POST_LOAD_SQL.encode())
            for seq, table, column in ds.SEQUENCES:
                conn.execute(
                    f"SELECT setval('{seq}', coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)".encode()
                )
            conn.execute("SELECT setval('prompts.template_version_seq', 2000)")
            marker = {
                "bpmigrate_seed": {
                    "scale": scale,
                    "seed": seed,
                    "rows": report.rows,
                    "extensions_used": report.extensions_used,
                    "extensions_missing": report.extensions_missing,
                    "generator": "migrate.sandbox.dataset",
                }
            }
            conn.execute(f"COMMENT ON SCHEMA {MARKER_SCHEMA} IS {_literal(json.dumps(marker))}".encode())
        with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
            conn.execute("ANALYZE")
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            report.bytes = int(row[0]) if row else 0
    except psycopg.Error as exc:
        raise _pg_error(exc, "seeding PostgreSQL", dsn) from None
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def pg_checksums(dsn: str) -> dict[str, tuple[int, str]]:
    """{"schema.table": (row count, md5 over the rows' text in primary-key order)} for every dataset table."""
    import psycopg

    out: dict[str, tuple[int, str]] = {}
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            for schema, table, _, _ in ds.TABLES:
                name = f"{schema}.{table}"
                order = ORDER_BY.get(name, "id")
                row = conn.execute(
                    f"SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY {order}), '')) "
                    f"FROM {schema}.{table} t".encode()
                ).fetchone()
                assert row is not None
                out[name] = (int(row[0]), str(row[1]))
    except psycopg.Error as exc:
        raise _pg_error(exc, "computing checksums", dsn) from None
    return out


# ---------------------------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------------------------
def _redis_error(exc: BaseException, what: str, host: str, port: int) -> AdapterError:
    return AdapterError(
        f"{what} failed on Redis {host}:{port}: {redact(str(exc))}",
        f"{type(exc).__name__} from redis-py",
        "check `bpmigrate sandbox status`; then re-run `bpmigrate sandbox seed`",
        service="redis",
    )


def _client(host: str, port: int, db: int, password: str | None = None) -> redis.Redis:
    import redis as redis_lib

    return redis_lib.Redis(host=host, port=port, db=db, password=password, socket_timeout=30)


def redis_seed_info(host: str, port: int, password: str | None = None) -> dict[str, Any] | None:
    import redis as redis_lib

    try:
        client = _client(host, port, REDIS_MARKER_DB, password)
        raw = client.get(REDIS_MARKER_KEY)
        client.close()
    except redis_lib.RedisError as exc:
        raise _redis_error(exc, "reading the seed marker", host, port) from None
    if raw is None:
        return None
    try:
        value = json.loads(bytes(raw))  # type: ignore[arg-type]
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def seed_redis(
    host: str,
    port: int,
    keys: int = ds.DEFAULT_REDIS_KEYS,
    seed: int = ds.DEFAULT_SEED,
    *,
    force: bool = False,
    password: str | None = None,
    progress: ProgressFn | None = None,
) -> RedisSeedReport:
    """Flush DBs 0–2 and write ``keys`` deterministic keys of every type (pipelined, 1000 commands per round trip)."""
    import redis as redis_lib

    report = RedisSeedReport(keys=keys, seed=seed)
    started = time.perf_counter()
    existing = redis_seed_info(host, port, password)
    if existing is not None and existing.get("keys") == keys and existing.get("seed") == seed and not force:
        report.skipped = True
        report.per_db = {int(k): int(v) for k, v in existing.get("per_db", {}).items()}
        report.per_type = dict(existing.get("per_type", {}))
        report.with_ttl = int(existing.get("with_ttl", 0))
        return report
    clients = {db: _client(host, port, db, password) for db in ds.REDIS_DBS}
    try:
        marker_client = _client(host, port, REDIS_MARKER_DB, password)
        marker_client.delete(REDIS_MARKER_KEY)
        pipes = {}
        for db, client in clients.items():
            client.flushdb()
            pipes[db] = client.pipeline(transaction=False)
        pending = dict.fromkeys(clients, 0)
        for written, item in enumerate(ds.redis_keys(keys, seed), start=1):
            pipe = pipes[item.db]
            _write_key(pipe, item)
            pending[item.db] += 1
            report.per_db[item.db] = report.per_db.get(item.db, 0) + 1
            report.per_type[item.kind] = report.per_type.get(item.kind, 0) + 1
            report.with_ttl += item.ttl_ms is not None
            if pending[item.db] >= 500:
                pipe.execute()
                pending[item.db] = 0
            if progress is not None and written % 10_000 == 0:
                progress("redis", written)
        for pipe in pipes.values():
            pipe.execute()
        marker = {
            "keys": keys,
            "seed": seed,
            "per_db": report.per_db,
            "per_type": report.per_type,
            "with_ttl": report.with_ttl,
        }
        marker_client.set(REDIS_MARKER_KEY, json.dumps(marker))
        marker_client.close()
    except redis_lib.RedisError as exc:
        raise _redis_error(exc, "seeding Redis", host, port) from None
    finally:
        for client in clients.values():
            client.close()
    if progress is not None:
        progress("redis", keys)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _write_key(pipe: Any, item: ds.RedisKey) -> None:
    key = item.key
    if item.kind == "string":
        pipe.set(key, item.value)
    elif item.kind == "hash":
        pipe.hset(key, mapping=item.value)
    elif item.kind == "list":
        pipe.rpush(key, *item.value)
    elif item.kind == "set":
        pipe.sadd(key, *sorted(item.value))
    elif item.kind == "zset":
        pipe.zadd(key, item.value)
    elif item.kind == "stream":
        for entry_id, fields in item.value:
            pipe.xadd(key, fields, id=entry_id)
    else:  # pragma: no cover - the dataset only yields the kinds above
        raise ValueError(item.kind)
    if item.ttl_ms is not None:
        pipe.pexpire(key, item.ttl_ms)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_checksums(
    host: str, port: int, dbs: Iterable[int] = (0, 1, 2), password: str | None = None
) -> dict[int, tuple[int, str]]:
    """{db: (key count, sha256 over sorted (key, type, canonical value, has-TTL))}."""
    import redis as redis_lib

    out: dict[int, tuple[int, str]] = {}
    try:
        for db in dbs:
            client = _client(host, port, db, password)
            digest = hashlib.sha256()
            keys = sorted(client.scan_iter(count=1000))
            for key in keys:
                kind = _text(client.type(key))
                if kind == "string":
                    value: Any = client.get(key)
                elif kind == "hash":
                    value = sorted(client.hgetall(key).items())
                elif kind == "list":
                    value = client.lrange(key, 0, -1)
                elif kind == "set":
                    value = sorted(client.smembers(key))
                elif kind == "zset":
                    value = client.zrange(key, 0, -1, withscores=True)
                elif kind == "stream":
                    value = [(i, sorted((f or {}).items())) for i, f in (client.xrange(key) or [])]
                else:
                    value = None
                has_ttl = client.pttl(key) > 0
                digest.update(repr((key, kind, value, has_ttl)).encode())
            out[db] = (len(keys), digest.hexdigest())
            client.close()
    except redis_lib.RedisError as exc:
        raise _redis_error(exc, "computing checksums", host, port) from None
    return out
