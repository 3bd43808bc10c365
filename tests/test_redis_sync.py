"""redis-sync against two real Redis servers: a follower process driven by keyspace notifications keeps the target
current — writes, deletes and expirations made during sync (and between redis-migrate and the follower's start)
are reflected; the fence makes the switch exact; rollback stops the follower and restores the source setting."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.redis import RedisAdapter
from migrate.adapters.redis_sync import fence_follower, follower_pid, follower_status, stop_follower
from migrate.config import EnvConfig, RedisEndpoint
from migrate.testing import make_context
from phases.p2_data.redis_migrate import RedisMigrate
from phases.p2_data.redis_sync import RedisSyncStep
from phases.p5_cutover.data_switch import DataSwitch
from tests.test_redis_copy import seed


def env_for(src: Any, dst: Any, *, cluster_mode: bool = False) -> EnvConfig:
    return EnvConfig(
        name="sandbox",
        kind="sandbox",
        redis={
            "source": RedisEndpoint(host=src.host, port=src.port),
            "target": RedisEndpoint(host=dst.host, port=dst.port, cluster_mode=cluster_mode),
        },
    )


def adapter(server: Any, role: str) -> RedisAdapter:
    return RedisAdapter(role=role, host=server.host, port=server.port)


def everything(a: RedisAdapter, db: int) -> dict[bytes, Any]:
    keys = sorted(k for batch in a.scan_all(db) for k in batch)
    return dict(zip(keys, a.read_values(db, keys), strict=True))


@pytest.fixture()
def synced(
    tmp_path: Path, fresh_redis: Any, redis_source: Any, redis_target: Any
) -> Iterator[tuple[RedisAdapter, RedisAdapter, EnvConfig, Callable[..., Any]]]:
    src, dst = adapter(redis_source, "source"), adapter(redis_target, "target")
    src.client(0).config_set("notify-keyspace-events", "")
    seed(src.client, per_db=15)
    env = env_for(redis_source, redis_target)
    RedisMigrate().apply(make_context(tmp_path, env, "redis-migrate"))

    def ctx(upstream: dict[str, Any] | None = None, **settings: Any) -> Any:
        return make_context(tmp_path, env, "redis-sync", settings=settings, upstream=upstream)

    yield src, dst, env, ctx
    stop_follower(tmp_path / "state" / "sandbox" / "redis-sync")
    stop_follower(tmp_path / "state" / "sandbox" / "redis-sync-reverse")  # data-switch's follower target -> source
    src.client(0).config_set("notify-keyspace-events", "")
    dst.client(0).config_set("notify-keyspace-events", "")


def test_writes_deletes_and_expirations_during_sync_are_reflected(
    tmp_path: Path, synced: tuple[RedisAdapter, RedisAdapter, EnvConfig, Callable[..., Any]]
) -> None:
    src, dst, _env, ctx = synced
    s0, s1 = src.client(0), src.client(1)
    # changes between redis-migrate and the follower's start: caught by its reconcile pass
    s0.set(b"before:new", b"1")
    s0.delete(b"k0:1:str")
    step = RedisSyncStep()
    plan = step.plan(ctx())
    assert any(c.target == "redis follower process" for c in plan.changes)
    out = step.apply(ctx())
    workdir = Path(out["workdir"])
    assert follower_pid(workdir) == out["pid"]
    assert out["notify_previous"] == ""
    assert "E" in str(s0.config_get("notify-keyspace-events")["notify-keyspace-events"])
    # changes during sync: writes of every kind, deletes, expirations (active expiry on the source)
    for i in range(200):
        s0.set(f"live:{i}".encode(), f"v{i}".encode())
        s1.hset(b"live:hash", f"f{i}", i)
    s1.rpush(b"k1:2:list", b"appended")
    s0.delete(b"k0:3:hash", b"k0:4:zset")
    s1.rename(b"k1:5:set", b"k1:5:renamed")
    s0.set(b"short:ttl", b"x", px=150)
    s0.pexpire(b"k0:6:str", 150)  # an existing key, copied before without a TTL, now expires on the source
    s1.incr(b"counter")
    s1.expire(b"counter", 3600)
    time.sleep(0.6)  # let the 150 ms keys expire (the source's active expiry emits 'expired' events)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (s0.exists(b"short:ttl") or s0.exists(b"k0:6:str")):
        time.sleep(0.05)
    fence = fence_follower(src, workdir, timeout=20)
    assert fence["token"]
    for db in (0, 1, 2):
        assert everything(src, db) == everything(dst, db), f"db {db} differs"
    d0, d1 = dst.client(0), dst.client(1)
    assert d0.get(b"before:new") == b"1" and not d0.exists(b"k0:1:str")
    assert not d0.exists(b"short:ttl") and not d0.exists(b"k0:6:str")
    assert d1.exists(b"k1:5:renamed") and not d1.exists(b"k1:5:set")
    assert 3500 < d1.ttl(b"counter") <= 3600
    checks = {c.name: c for c in step.verify(ctx({"redis-sync": out}))}
    assert checks["follower process alive"].ok and checks["follower lag (ms)"].ok
    # re-apply with a live follower is a no-op
    assert step.apply(ctx({"redis-sync": out}))["pid"] == out["pid"]
    step.rollback(ctx({"redis-sync": out}))
    assert follower_pid(workdir) is None
    assert s0.config_get("notify-keyspace-events")["notify-keyspace-events"] == ""


def test_data_switch_fences_and_stops_the_follower(
    tmp_path: Path, synced: tuple[RedisAdapter, RedisAdapter, EnvConfig, Callable[..., Any]]
) -> None:
    src, dst, env, ctx = synced
    out = RedisSyncStep().apply(ctx())
    s2 = src.client(2)
    pipe = s2.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"burst:{i}".encode(), b"y" * 50)
    pipe.execute()
    sout = DataSwitch().apply(make_context(tmp_path, env, "data-switch", upstream={"redis-sync": out}))
    assert sout["redis_fence"]["token"] and sout["write_downtime_s"] >= 0
    assert everything(src, 2) == everything(dst, 2)
    assert not follower_status(Path(out["workdir"]))["alive"]
    assert src.client(0).config_get("notify-keyspace-events")["notify-keyspace-events"] == ""
    # the way back: a follower target -> source runs from the switch on (stopped here: the servers are shared)
    reverse = tmp_path / "state" / env.name / "redis-sync-reverse"
    assert sout["redis_reverse"]["started"] and follower_status(reverse)["alive"]
    dst.client(2).set(b"after-switch", b"1")
    deadline = time.monotonic() + 10
    while src.client(2).get(b"after-switch") != b"1":
        assert time.monotonic() < deadline, "the reverse follower did not carry a write back to the source"
        time.sleep(0.05)
    stop_follower(reverse)


def test_cluster_mode_target_gets_prefixed_keys(
    tmp_path: Path, fresh_redis: Any, redis_source: Any, redis_target: Any
) -> None:
    src, dst = adapter(redis_source, "source"), adapter(redis_target, "target")
    src.client(0).config_set("notify-keyspace-events", "")
    env = env_for(redis_source, redis_target, cluster_mode=True)
    src.client(1).set(b"a", b"1")
    step = RedisSyncStep()
    c = make_context(tmp_path, env, "redis-sync")
    try:
        out = step.apply(c)  # the reconcile pass copies db 1 under its prefix
        src.client(1).set(b"b", b"2")
        src.client(1).delete(b"a")
        fence_follower(src, Path(out["workdir"]), timeout=20)
        assert dst.client(0).get(b"db1:b") == b"2"
        assert not dst.client(0).exists(b"db1:a")
    finally:
        step.rollback(make_context(tmp_path, env, "redis-sync"))
    assert src.client(0).config_get("notify-keyspace-events")["notify-keyspace-events"] == ""


def test_killed_follower_restarts_reconciles_and_keeps_the_original_setting(
    tmp_path: Path, synced: tuple[RedisAdapter, RedisAdapter, EnvConfig, Callable[..., Any]]
) -> None:
    src, dst, _env, ctx = synced
    step = RedisSyncStep()
    out = step.apply(ctx())
    workdir = Path(out["workdir"])
    os.kill(out["pid"], signal.SIGKILL)  # the follower this test's step started
    deadline = time.monotonic() + 10
    while follower_pid(workdir) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not follower_status(workdir)["alive"]
    assert not step.verify(ctx({"redis-sync": out}))[0].ok
    src.client(0).set(b"while:dead", b"1")  # missed by pub/sub: the restart's reconcile pass must catch it
    src.client(0).delete(b"k0:2:str")
    again = step.apply(ctx({"redis-sync": out}))
    assert again["pid"] != out["pid"] and again["notify_previous"] == ""
    fence_follower(src, workdir, timeout=20)
    assert everything(src, 0) == everything(dst, 0)
    step.rollback(ctx({"redis-sync": again}))
    assert src.client(0).config_get("notify-keyspace-events")["notify-keyspace-events"] == ""
