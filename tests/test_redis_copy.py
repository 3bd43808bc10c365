"""Redis copy against real servers: every type, with and without TTL, DBs 0-2, MIGRATE and DUMP/RESTORE, resume,
cluster-mode prefix mapping, rollback deleting exactly what was written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from migrate.adapters.redis import RedisAdapter
from migrate.adapters.redis_copy import DbRoute, choose_method, copy_db, delete_copied, routes
from migrate.errors import ConfigError


def seed(client_factory: Callable[[int], Any], per_db: int = 40) -> None:
    for db in (0, 1, 2):
        c = client_factory(db)
        pipe = c.pipeline(transaction=False)
        for i in range(per_db):
            ttl = 600_000 + i if i % 2 == 0 else None
            base = f"k{db}:{i}"
            pipe.set(f"{base}:str".encode(), f"v\x00\n{i}".encode())
            pipe.hset(f"{base}:hash", mapping={"a": str(i), "b\tb": "\xff"})
            pipe.rpush(f"{base}:list", *[f"e{j}" for j in range(5)])
            pipe.sadd(f"{base}:set", *[f"m{j}" for j in range(4)])
            pipe.zadd(f"{base}:zset", {f"z{j}": j * 1.5 for j in range(4)})
            pipe.xadd(f"{base}:stream", {"f": str(i)}, id=f"{i + 1}-0")
            if ttl:
                for suffix in ("str", "hash", "list", "set", "zset", "stream"):
                    pipe.pexpire(f"{base}:{suffix}", ttl)
        pipe.set(b"\x00binary\xffkey", b"\x01\x02")
        pipe.execute()


def adapter(server: Any, role: str, **kw: Any) -> RedisAdapter:
    return RedisAdapter(role=role, host=server.host, port=server.port, **kw)


def assert_same(src: RedisAdapter, dst: RedisAdapter, route: DbRoute, tolerance_ms: int = 5000) -> int:
    keys = sorted(k for batch in src.scan_all(route.source_db) for k in batch)
    assert keys, "nothing to compare"
    tkeys = [route.target_key(k) for k in keys]
    assert src.read_values(route.source_db, keys) == dst.read_values(route.target_db, tkeys)
    for a, b in zip(src.pttl_many(route.source_db, keys), dst.pttl_many(route.target_db, tkeys), strict=True):
        assert (a == -1 and b == -1) or abs(a - b) <= tolerance_ms
    return len(keys)


@pytest.mark.parametrize(("method", "server_side"), [("migrate", True), ("migrate", False), ("dump", False)])
def test_copy_every_type_across_dbs(
    fresh_redis: Any, redis_source: Any, redis_target: Any, method: str, server_side: bool
) -> None:
    src, dst = adapter(redis_source, "source"), adapter(redis_target, "target")
    seed(src.client)
    before = src.keyspace()
    for route in routes([0, 1, 2], cluster_mode=False):
        res = copy_db(src, dst, route, method=method, batch=50, server_side=server_side)
        assert res.method == method and not res.fell_back
        assert res.keys == src.dbsize(route.source_db)
        assert assert_same(src, dst, route) == 241
    assert dst.keyspace() == before
    assert src.keyspace() == before  # nothing written on the source (MIGRATE ... COPY)
    assert dst.pttl_many(1, [b"k1:1:str"]) == [-1]
    assert 590_000 < dst.pttl_many(1, [b"k1:0:zset"])[0] <= 600_000


def test_copy_resumes_from_the_recorded_cursor(fresh_redis: Any, redis_source: Any, redis_target: Any) -> None:
    src, dst = adapter(redis_source, "source"), adapter(redis_target, "target")
    seed(src.client, per_db=100)
    route = DbRoute(2, 2)
    seen: list[tuple[int, int]] = []

    class Crash(Exception):
        pass

    def crash_after_three(cursor: int, n: int) -> None:
        seen.append((cursor, n))
        if len(seen) == 3:
            raise Crash

    with pytest.raises(Crash):
        copy_db(src, dst, route, method="migrate", batch=40, on_batch=crash_after_three, server_side=False)
    cursor = seen[-1][0]
    assert cursor != 0
    partial = dst.dbsize(2)
    assert 0 < partial < src.dbsize(2)
    res = copy_db(src, dst, route, method="migrate", batch=40, start_cursor=cursor)
    assert res.keys < src.dbsize(2)  # the finished batches were not scanned again
    assert dst.dbsize(2) == src.dbsize(2)
    assert_same(src, dst, route)


def test_cluster_mode_maps_dbs_to_prefixes_and_rollback_deletes_only_them(
    fresh_redis: Any, redis_source: Any, redis_target: Any
) -> None:
    src = adapter(redis_source, "source")
    dst = adapter(redis_target, "target", cluster_mode=True)
    seed(src.client, per_db=10)
    dst.client(0).set(b"unrelated", b"keep me")
    rts = routes([0, 1, 2], cluster_mode=True, db_prefix={"1": "sessions:", "2": "ratelimit:"})
    assert [r.prefix for r in rts] == [b"", b"sessions:", b"ratelimit:"]
    for r in rts:
        method, why = choose_method("auto", dst, r)
        assert method == "dump" and "cluster" in why
        copy_db(src, dst, r, method=method, batch=25)
        assert_same(src, dst, r)
    assert dst.keyspace() == {0: 3 * 61 + 1}
    assert dst.count_matching(0, b"sessions:") == 61
    for r in rts:
        delete_copied(src, dst, r)
    assert dst.keyspace() == {0: 1}
    assert dst.client(0).get(b"unrelated") == b"keep me"
    assert src.dbsize(1) == 61


def test_method_choice_and_prefix_collisions() -> None:
    tls_target = RedisAdapter(role="target", host="h", port=1, tls=True)
    assert choose_method("auto", tls_target, DbRoute(0, 0))[0] == "dump"
    with pytest.raises(ConfigError):
        choose_method("migrate", tls_target, DbRoute(0, 0))
    with pytest.raises(ConfigError):
        routes([0, 1], cluster_mode=True, db_prefix={"0": "x:", "1": "x:"})
    assert routes([0, 1], cluster_mode=False, db_map={"1": 5})[1] == DbRoute(1, 5)


def test_migrate_falls_back_to_dump_when_the_source_cannot_reach_the_target(
    fresh_redis: Any, redis_source: Any, redis_target: Any
) -> None:
    src, dst = adapter(redis_source, "source"), adapter(redis_target, "target")
    seed(src.client, per_db=5)
    # the source server is told a port where nothing listens: MIGRATE fails with IOERR, the copy goes on by DUMP
    res = copy_db(src, dst, DbRoute(0, 0), method="migrate", batch=100, migrate_port=1, timeout_ms=500)
    assert res.method == "dump" and "MIGRATE failed" in res.fell_back
    assert_same(src, dst, DbRoute(0, 0))
