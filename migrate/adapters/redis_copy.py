"""Copy Redis logical DBs source → target: SCAN batches moved by MIGRATE COPY REPLACE or pipelined DUMP/RESTORE.

* ``MIGRATE ... COPY REPLACE KEYS k1 .. kn`` runs on the source server, which streams the keys (with their TTLs)
  straight to the target: nothing goes through bpmigrate and nothing is written on the source.
* DUMP+PTTL pipelined on the source, RESTORE ... REPLACE pipelined on the target: used when the source server
  cannot talk to the target itself (TLS, AUTH beyond a password, a cluster, a key prefix mapping).

Both are idempotent (REPLACE), so a batch copied twice after a crash is harmless; resumption restarts at the last
recorded SCAN cursor (SCAN guarantees every key present for the whole scan is returned at least once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from migrate.adapters.redis import RedisAdapter
from migrate.errors import AdapterError, ConfigError


@dataclass(frozen=True)
class DbRoute:
    """Where the keys of one source DB land: target DB and key prefix (cluster mode has only DB 0).

    ``source_prefix`` (the way back from a cluster, see :func:`reverse_routes`): the route covers only the source
    keys starting with it, and strips it."""

    source_db: int
    target_db: int
    prefix: bytes = b""
    source_prefix: bytes = b""

    def target_key(self, key: bytes) -> bytes:
        return self.prefix + key[len(self.source_prefix) :]

    def source_key(self, target_key: bytes) -> bytes:
        return self.source_prefix + target_key[len(self.prefix) :]

    def describe(self) -> str:
        pre = f" with key prefix {self.prefix.decode(errors='replace')!r}" if self.prefix else ""
        if self.source_prefix:
            return (
                f"db {self.source_db} keys {self.source_prefix.decode(errors='replace')!r}* -> target db "
                f"{self.target_db}{pre} (prefix removed)"
            )
        return f"db {self.source_db} -> target db {self.target_db}{pre}"


def reverse_routes(routes_: Sequence[DbRoute]) -> list[DbRoute]:
    """The way back (target -> source) of a mapping: a prefixed key in the cluster's DB 0 returns to its source DB
    without the prefix (keys are matched to the longest prefix)."""
    return [DbRoute(r.target_db, r.source_db, r.source_prefix, r.prefix) for r in routes_]


def route_for(routes_: Sequence[DbRoute], db: int, key: bytes) -> DbRoute | None:
    """The route a source key follows: of the routes of its DB, the one with the longest matching source prefix."""
    mine = [r for r in routes_ if r.source_db == db and key.startswith(r.source_prefix)]
    return max(mine, key=lambda r: len(r.source_prefix), default=None)


def target_owner(routes_: Sequence[DbRoute], target_db: int, key: bytes) -> DbRoute | None:
    """The route whose keys ``key`` (a key in target DB ``target_db``) belongs to: longest matching prefix."""
    mine = [r for r in routes_ if r.target_db == target_db and key.startswith(r.prefix)]
    return max(mine, key=lambda r: len(r.prefix), default=None)


def routes(
    source_dbs: Sequence[int],
    *,
    cluster_mode: bool,
    db_map: Mapping[str, int] | None = None,
    db_prefix: Mapping[str, str] | None = None,
) -> list[DbRoute]:
    """The mapping of source DBs to the target. Cluster mode: DB n → DB 0 with prefix ``db_prefix[n]``
    (default ``db<n>:`` for n > 0, none for DB 0)."""
    out: list[DbRoute] = []
    prefixes: set[bytes] = set()
    for db in source_dbs:
        if cluster_mode:
            default = "" if db == 0 else f"db{db}:"
            prefix = str((db_prefix or {}).get(str(db), default)).encode()
            if prefix in prefixes:
                raise ConfigError(
                    f"redis-migrate: two source DBs map to the same key prefix {prefix.decode()!r} in cluster mode",
                    "their keys would overwrite each other in the target's only DB",
                    "give every source DB a distinct prefix in [steps.redis-migrate] db_prefix",
                )
            prefixes.add(prefix)
            out.append(DbRoute(db, 0, prefix))
        else:
            out.append(DbRoute(db, int((db_map or {}).get(str(db), db)), b""))
    return out


@dataclass
class DbCopyResult:
    keys: int = 0
    batches: int = 0
    seconds: float = 0.0
    method: str = ""
    fell_back: str = ""


def choose_method(requested: str, target: RedisAdapter, route: DbRoute) -> tuple[str, str]:
    """(method, why): "migrate" when the source server can push to the target itself, else "dump"."""
    if requested == "dump":
        return "dump", "configured"
    blockers = []
    if target.tls:
        blockers.append("the target needs TLS (MIGRATE cannot speak TLS)")
    if target.cluster_mode:
        blockers.append("the target is in cluster mode (keys are routed by slot)")
    if route.prefix:
        blockers.append("keys are renamed with a prefix")
    if blockers:
        if requested == "migrate":
            raise ConfigError(
                "redis-migrate: method = 'migrate' is impossible here",
                "; ".join(blockers),
                "set method = 'auto' (or 'dump') in [steps.redis-migrate]",
            )
        return "dump", "; ".join(blockers)
    return "migrate", "source pushes keys to the target with MIGRATE COPY REPLACE"


def copy_db(
    source: RedisAdapter,
    target: RedisAdapter,
    route: DbRoute,
    *,
    method: str,
    batch: int = 1000,
    start_cursor: int = 0,
    migrate_host: str | None = None,
    migrate_port: int | None = None,
    migrate_password: str | None = None,
    timeout_ms: int = 10_000,
    on_batch: Callable[[int, int], None] | None = None,
    server_side: bool = True,
) -> DbCopyResult:
    """Copy every key of ``route.source_db``. ``on_batch(cursor_after, keys_in_batch)`` after each batch landed.

    ``method="migrate"`` first runs SCAN+MIGRATE as a script on the source (fastest: no per-key traffic through
    bpmigrate); if scripting is unavailable it drives SCAN and MIGRATE from here (pipelined); if the source cannot
    reach the target (IOERR) it falls back to DUMP/RESTORE. Each fallback continues from the last landed cursor.
    """
    result = DbCopyResult(method=method)
    if migrate_password is None:
        migrate_password = target.auth_for_migrate()
    started = time.monotonic()
    cursor = start_cursor
    if method == "migrate" and server_side:
        try:
            while True:
                cursor_after, n = source.migrate_scan_server_side(
                    route.source_db,
                    cursor,
                    batch,
                    host=migrate_host or target.host,
                    port=migrate_port or target.port,
                    dest_db=route.target_db,
                    timeout_ms=timeout_ms,
                    password=migrate_password,
                )
                cursor = cursor_after
                if n:
                    result.keys += n
                    result.batches += 1
                if on_batch:
                    on_batch(cursor, n)
                if cursor == 0:
                    result.seconds = time.monotonic() - started
                    return result
        except AdapterError as exc:
            if "IOERR" in exc.what or "Connection" in exc.what:
                result.method = "dump"
                result.fell_back = f"MIGRATE failed ({exc.what}); switched to DUMP/RESTORE"
            else:
                result.fell_back = f"server-side MIGRATE script unavailable ({exc.what}); MIGRATE driven from bpmigrate"
    cursor, keys = source.scan(route.source_db, cursor, batch)
    while True:
        # ``cursor`` is where the scan continues after ``keys``: recorded only once ``keys`` landed
        next_scan: tuple[int, list[bytes]] | None = None
        if keys and result.method == "migrate":
            try:
                if cursor != 0:
                    next_scan = source.migrate_then_scan(
                        route.source_db,
                        keys,
                        host=migrate_host or target.host,
                        port=migrate_port or target.port,
                        dest_db=route.target_db,
                        timeout_ms=timeout_ms,
                        password=migrate_password,
                        cursor=cursor,
                        count=batch,
                    )
                else:
                    source.migrate_keys(
                        route.source_db,
                        keys,
                        host=migrate_host or target.host,
                        port=migrate_port or target.port,
                        dest_db=route.target_db,
                        timeout_ms=timeout_ms,
                        password=migrate_password,
                    )
            except AdapterError as exc:
                if "IOERR" not in exc.what and "Connection" not in exc.what:
                    raise
                result.method = "dump"
                result.fell_back = f"MIGRATE failed ({exc.what}); switched to DUMP/RESTORE"
                next_scan = None
        if keys and result.method == "dump":
            dump_restore(source, target, route, keys)
        if keys:
            result.keys += len(keys)
            result.batches += 1
        if on_batch:
            on_batch(cursor, len(keys))
        if cursor == 0:
            break
        cursor, keys = next_scan if next_scan is not None else source.scan(route.source_db, cursor, batch)
    result.seconds = time.monotonic() - started
    return result


def dump_restore(source: RedisAdapter, target: RedisAdapter, route: DbRoute, keys: Sequence[bytes]) -> int:
    items: list[tuple[bytes, bytes, int]] = []
    for key, payload, pttl in source.dump_many(route.source_db, keys):
        if payload is None or pttl == -2:
            continue  # expired or deleted since SCAN returned it
        items.append((route.target_key(key), payload, max(0, pttl) if pttl != -1 else 0))
    return target.restore_many(route.target_db, items)


def delete_copied(source: RedisAdapter, target: RedisAdapter, route: DbRoute, batch: int = 1000) -> int:
    """Rollback: delete on the target exactly the keys the copy of this source DB writes (mapping applied)."""
    deleted = 0
    for keys in source.scan_all(route.source_db, batch):
        deleted += target.delete_many(route.target_db, [route.target_key(k) for k in keys])
    return deleted
