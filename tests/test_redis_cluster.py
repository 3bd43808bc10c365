"""The Redis path as production runs it: a Redis Cluster target (three local primaries, slots split evenly).

redis-migrate, its verify, redis-verify (counts summed over primaries, a two-way sample drawn from every primary),
redis-sync under writes and rollback, all against a real cluster; source DBs 1-2 land under key prefixes in DB 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.localservers import LocalRedisCluster
from migrate.adapters.redis import RedisAdapter
from migrate.adapters.redis_copy import copy_db, delete_copied, routes
from migrate.adapters.redis_sync import fence_follower, stop_follower
from migrate.config import EnvConfig, RedisEndpoint
from migrate.errors import ConfigError, StepFailed
from migrate.testing import make_context
from phases.p2_data.redis_migrate import RedisMigrate
from phases.p2_data.redis_sync import RedisSyncStep
from phases.p2_data.redis_verify import RedisVerify
from tests.test_redis_copy import seed

PREFIX = {"0": "", "1": "sessions:", "2": "ratelimit:"}
PER_DB = 6 * 30 + 1  # seed(per_db=30): 30 keys of each of 6 types + 1 binary key, per DB


def cluster_adapter(cluster: LocalRedisCluster) -> RedisAdapter:
    return RedisAdapter(role="target", host=cluster.host, port=cluster.port, cluster_mode=True)


def env_for(src: Any, cluster: LocalRedisCluster) -> EnvConfig:
    return EnvConfig(
        name="sandbox",
        kind="sandbox",
        redis={
            "source": RedisEndpoint(host=src.host, port=src.port),
            "target": RedisEndpoint(host=cluster.host, port=cluster.port, cluster_mode=True),
        },
    )


def per_primary(cluster: LocalRedisCluster) -> list[int]:
    import redis

    out = []
    for node in cluster.nodes:
        client = redis.Redis(host=node.host, port=node.port)
        out.append(int(client.dbsize()))
        client.close()
    return out


def test_adapter_counts_scans_and_deletes_over_every_primary(fresh_redis_cluster: LocalRedisCluster) -> None:
    dst = cluster_adapter(fresh_redis_cluster)
    assert dst.clustered and dst.topology() == "cluster (3 primaries)"
    client = dst.client(0)
    for i in range(300):
        client.set(f"k:{i}".encode(), b"v")
    spread = per_primary(fresh_redis_cluster)
    assert sum(spread) == 300 and all(n > 50 for n in spread)  # really spread over three primaries
    assert dst.dbsize(0) == 300 and dst.keyspace() == {0: 300}
    # one resumable (composite) cursor walks every primary
    seen: list[bytes] = []
    cursor, steps = 0, 0
    while True:
        cursor, keys = dst.scan(0, cursor, 25)
        seen += keys
        steps += 1
        if cursor == 0:
            break
    assert sorted(seen) == sorted(f"k:{i}".encode() for i in range(300)) and steps > 3
    assert dst.count_matching(0, b"k:1") == 111  # k:1, k:10-19, k:100-199
    assert 40 <= len(dst.random_keys(0, 60)) <= 60
    with pytest.raises(ConfigError, match="only DB 0"):
        dst.client(1)
    # a multi-key UNLINK over many slots: grouped by slot, nothing CROSSSLOT
    assert dst.delete_many(0, [f"k:{i}".encode() for i in range(0, 300, 2)]) == 150
    assert dst.dbsize(0) == 150


def test_a_cluster_configured_as_single_node_is_refused(fresh_redis_cluster: LocalRedisCluster) -> None:
    wrong = RedisAdapter(role="target", host=fresh_redis_cluster.host, port=fresh_redis_cluster.port)
    with pytest.raises(ConfigError, match="cluster_mode = false"):
        wrong.dbsize(0)


def test_copy_into_the_cluster_and_delete_exactly_what_was_copied(
    fresh_redis_cluster: LocalRedisCluster, redis_source: Any
) -> None:
    src = RedisAdapter(role="source", host=redis_source.host, port=redis_source.port)
    dst = cluster_adapter(fresh_redis_cluster)
    seed(src.client, per_db=30)
    dst.client(0).set(b"unrelated", b"keep me")
    rts = routes([0, 1, 2], cluster_mode=True, db_prefix=PREFIX)
    for r in rts:
        res = copy_db(src, dst, r, method="dump", batch=40)
        assert res.keys == src.dbsize(r.source_db) == PER_DB
        keys = sorted(k for batch in src.scan_all(r.source_db) for k in batch)
        tkeys = [r.target_key(k) for k in keys]
        assert src.read_values(r.source_db, keys) == dst.read_values(0, tkeys)
        for a, b in zip(src.pttl_many(r.source_db, keys), dst.pttl_many(0, tkeys), strict=True):
            assert (a == -1 and b == -1) or abs(a - b) <= 5000
    assert dst.dbsize(0) == 3 * PER_DB + 1
    assert dst.count_matching(0, b"sessions:") == PER_DB
    for r in rts:
        delete_copied(src, dst, r)
    assert dst.dbsize(0) == 1 and dst.client(0).get(b"unrelated") == b"keep me"


def test_migrate_verify_redis_verify_and_rollback_on_a_cluster(
    tmp_path: Path, fresh_redis_cluster: LocalRedisCluster, redis_source: Any
) -> None:
    src = RedisAdapter(role="source", host=redis_source.host, port=redis_source.port)
    dst = cluster_adapter(fresh_redis_cluster)
    seed(src.client, per_db=30)
    env = env_for(redis_source, fresh_redis_cluster)
    mig = RedisMigrate()
    plan = mig.plan(make_context(tmp_path, env, "redis-migrate", settings={"db_prefix": PREFIX}))
    assert any("cluster (3 primaries)" in line for line in plan.in_place)
    assert all("by dump" in c.detail for c in plan.changes)  # MIGRATE cannot target a cluster
    ctx = make_context(tmp_path, env, "redis-migrate", settings={"db_prefix": PREFIX, "batch": 50})
    out = mig.apply(ctx)
    assert out["dbs"] == {"0": PER_DB, "1": PER_DB, "2": PER_DB}
    assert out["route_map"][1] == {"source_db": 1, "target_db": 0, "prefix": "sessions:"}
    assert out["target_topology"] == "cluster (3 primaries)"
    assert "543 keys" in mig.summary(out) and "cluster" in mig.summary(out)
    checks = mig.verify(ctx)
    assert [c.observed for c in checks] == [PER_DB] * 3 and all(c.ok for c in checks)
    assert all(n > 0 for n in per_primary(fresh_redis_cluster))

    # redis-verify reads the keys where redis-migrate wrote them (its recorded mapping), both ways
    up = {"redis-migrate": out}
    ver = RedisVerify()
    vout = ver.apply(make_context(tmp_path, env, "redis-verify", settings={"sample": 0}, upstream=up))
    assert vout["keys_compared"] == 3 * PER_DB and vout["target_keys_checked"] == 3 * PER_DB
    sampled = ver.apply(make_context(tmp_path, env, "redis-verify", settings={"sample": 50}, upstream=up))
    assert 0 < sampled["keys_compared"] <= 150
    assert all(c.ok for c in ver.verify(make_context(tmp_path, env, "redis-verify", upstream=up)))
    with pytest.raises(ConfigError, match="differently"):
        ver.apply(make_context(tmp_path, env, "redis-verify", settings={"db_prefix": {"1": "x:"}}, upstream=up))

    # a key missing on the cluster, and one the source never had: both directions are caught
    dst.client(0).delete(b"sessions:k1:3:hash")
    dst.client(0).set(b"ratelimit:ghost", b"1")
    dst.client(0).delete(b"ratelimit:k2:4:str")  # keeps db 2's count equal: only the key diff can see it
    with pytest.raises(StepFailed) as failed:
        ver.apply(make_context(tmp_path, env, "redis-verify", settings={"sample": 0}, upstream=up))
    text = str(failed.value.why)
    assert "k1:3:hash" in text and "ghost" in text and "k2:4:str" in text
    assert not all(c.ok for c in mig.verify(ctx))

    mig.rollback(ctx)
    assert dst.dbsize(0) == 1  # only the key the source never had
    assert src.dbsize(1) == PER_DB  # the source is untouched


@pytest.fixture()
def synced(tmp_path: Path, fresh_redis_cluster: LocalRedisCluster, redis_source: Any) -> Iterator[dict[str, Any]]:
    src = RedisAdapter(role="source", host=redis_source.host, port=redis_source.port)
    src.client(0).config_set("notify-keyspace-events", "")
    seed(src.client, per_db=10)
    env = env_for(redis_source, fresh_redis_cluster)
    out = RedisMigrate().apply(make_context(tmp_path, env, "redis-migrate", settings={"db_prefix": PREFIX}))
    dst = cluster_adapter(fresh_redis_cluster)
    yield {"src": src, "dst": dst, "env": env, "up": {"redis-migrate": out}}
    stop_follower(tmp_path / "state" / "sandbox" / "redis-sync")
    stop_follower(tmp_path / "state" / "sandbox" / "redis-sync-reverse")
    src.client(0).config_set("notify-keyspace-events", "")
    dst.config_set("notify-keyspace-events", "")


def test_redis_sync_keeps_the_cluster_current_under_writes(tmp_path: Path, synced: dict[str, Any]) -> None:
    src, dst, env, up = synced["src"], synced["dst"], synced["env"], synced["up"]
    s0, s1, s2 = src.client(0), src.client(1), src.client(2)
    s1.set(b"before:follower", b"1")  # between redis-migrate and the follower: its reconcile pass copies it
    step = RedisSyncStep()
    ctx = make_context(tmp_path, env, "redis-sync", upstream=up)
    out = step.apply(ctx)
    assert out["target_topology"] == "cluster (3 primaries)"
    workdir = Path(out["workdir"])
    d = dst.client(0)
    try:
        assert d.get(b"sessions:before:follower") == b"1"
        for i in range(100):  # new keys in every DB, spread over every slot range
            s0.set(f"new:{i}".encode(), b"n")
            s1.set(f"new:{i}".encode(), b"n")
        s2.hset(b"k2:1:hash", "a", "updated")  # update
        s1.delete(b"k1:2:str", b"k1:2:list")  # deletes
        s2.set(b"short", b"x", px=150)  # expires on the source
        s0.pexpire(b"k0:3:str", 150)
        time.sleep(0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (s2.exists(b"short") or s0.exists(b"k0:3:str")):
            time.sleep(0.05)
        fence_follower(src, workdir, timeout=20)
        assert d.get(b"new:99") == b"n" and d.get(b"sessions:new:0") == b"n"
        assert d.hget(b"ratelimit:k2:1:hash", "a") == b"updated"
        assert not d.exists(b"sessions:k1:2:str") and not d.exists(b"sessions:k1:2:list")
        assert not d.exists(b"ratelimit:short") and not d.exists(b"k0:3:str")
        for r in routes([0, 1, 2], cluster_mode=True, db_prefix=PREFIX):
            keys = sorted(k for batch in src.scan_all(r.source_db) for k in batch)
            assert src.read_values(r.source_db, keys) == dst.read_values(0, [r.target_key(k) for k in keys])
        assert dst.dbsize(0) == sum(src.dbsize(db) for db in (0, 1, 2))
        assert all(c.ok for c in step.verify(make_context(tmp_path, env, "redis-sync", upstream={**up, "redis-sync": out})))
    finally:
        step.rollback(make_context(tmp_path, env, "redis-sync", upstream={**up, "redis-sync": out}))
    assert src.config_get("notify-keyspace-events") == ""


def test_data_switch_on_a_cluster_fences_then_carries_writes_back(tmp_path: Path, synced: dict[str, Any]) -> None:
    """data-switch with a cluster target: the forward follower is fenced and stopped, then the way back runs from
    the cluster (one subscription per primary) into the source DBs, prefixes removed; rollback fences it."""
    from migrate.adapters.redis_sync import follower_status
    from phases.p5_cutover.data_switch import DataSwitch

    src, dst, env, up = synced["src"], synced["dst"], synced["env"], synced["up"]
    out = RedisSyncStep().apply(make_context(tmp_path, env, "redis-sync", upstream=up))
    pipe = src.client(1).pipeline(transaction=False)
    for i in range(1000):
        pipe.set(f"burst:{i}".encode(), b"y")
    pipe.execute()
    switch_up = {**up, "redis-sync": out}
    sout = DataSwitch().apply(make_context(tmp_path, env, "data-switch", upstream=switch_up))
    assert sout["redis_fence"]["token"] and dst.count_matching(0, b"sessions:burst:") == 1000
    assert not follower_status(Path(out["workdir"]))["alive"]
    reverse = tmp_path / "state" / env.name / "redis-sync-reverse"
    try:
        assert sout["redis_reverse"]["started"] and follower_status(reverse)["alive"]
        c = dst.client(0)
        for i in range(50):  # the app, after the switch, writes to the cluster
            c.set(f"sessions:after:{i}".encode(), b"1")
            c.set(f"bp:write:{i}".encode(), b"2")
        c.delete(b"sessions:burst:7")
        DataSwitch().rollback(make_context(tmp_path, env, "data-switch", upstream={**switch_up, "data-switch": sout}))
        assert src.client(1).get(b"after:49") == b"1" and src.client(0).get(b"bp:write:0") == b"2"
        assert not src.client(1).exists(b"burst:7") and src.client(1).exists(b"burst:8")
        assert not follower_status(reverse)["alive"]
        assert dst.config_get("notify-keyspace-events") == ""
    finally:
        stop_follower(reverse)


def test_a_follower_from_the_cluster_back_to_the_source_strips_the_prefixes(
    tmp_path: Path, fresh_redis_cluster: LocalRedisCluster, redis_source: Any
) -> None:
    """The way back after a switch (data-switch's reverse follower): the cluster is the source — one subscription
    per primary, since keyspace events are per node — and prefixed keys return to their DBs without the prefix."""
    from migrate.adapters.redis_copy import reverse_routes
    from migrate.adapters.redis_sync import FollowerSpec, restore_notify, start_follower, wait_ready

    src = RedisAdapter(role="source", host=redis_source.host, port=redis_source.port)
    cl = cluster_adapter(fresh_redis_cluster)
    back = reverse_routes(routes([0, 1, 2], cluster_mode=True, db_prefix=PREFIX))
    assert "prefix removed" in back[1].describe()
    c = cl.client(0)
    c.set(b"sessions:old", b"1")  # before the follower: its reconcile pass copies it
    src.client(1).set(b"stale", b"x")  # absent on the cluster: the reconcile pass deletes it
    workdir = tmp_path / "reverse"
    start_follower(workdir, FollowerSpec.build(cl, src, back, notify_previous=""))
    try:
        wait_ready(workdir, 60)
        assert src.client(1).get(b"old") == b"1" and not src.client(1).exists(b"stale")
        for i in range(100):  # spread over every primary
            c.set(f"sessions:n{i}".encode(), b"v")
            c.set(f"k{i}".encode(), str(i).encode())
        c.hset(b"ratelimit:h", "a", "1")
        c.delete(b"sessions:old")
        c.set(b"ratelimit:short", b"x", px=100)
        time.sleep(0.4)
        fence_follower(cl, workdir, timeout=20)
        assert src.client(1).get(b"n99") == b"v" and src.client(0).get(b"k5") == b"5"
        assert src.client(2).hget(b"h", "a") == b"1"
        assert not src.client(1).exists(b"old") and not src.client(2).exists(b"short")
        assert src.dbsize(0) == 100 and src.dbsize(1) == 100 and src.dbsize(2) == 1
    finally:
        stop_follower(workdir)
        restore_notify(cl, "")
    assert cl.config_get("notify-keyspace-events") == ""


def test_an_unexpected_error_names_the_step_the_adapter_call_and_keeps_its_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure the issue met (a cluster's DBSIZE answering per node) as an error message: the step's frame,
    the adapter call and the exception are named; ``raise ... from exc`` keeps the step's frames for --traceback."""
    import importlib.util
    import traceback

    from migrate.engine import _as_step_failed

    class PerNode:
        def dbsize(self) -> dict[str, int]:
            return {"127.0.0.1:1": 1, "127.0.0.1:2": 2}

    adapter = RedisAdapter(role="target", host="127.0.0.1", port=1)
    monkeypatch.setattr(adapter, "_node_clients", lambda db: [PerNode()])
    step_file = tmp_path / "phases" / "p9_fake" / "count_step.py"
    step_file.parent.mkdir(parents=True)
    step_file.write_text("def apply(adapter):\n    return adapter.dbsize(0)\n")
    spec = importlib.util.spec_from_file_location("count_step", step_file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(StepFailed) as failed:
        try:
            module.apply(adapter)
        except Exception as exc:
            raise _as_step_failed(exc, "count-step", "apply", "sandbox") from exc
    err = failed.value
    assert err.what.startswith("apply of count-step failed: TypeError: int() argument")
    assert "p9_fake/count_step.py:2 (apply)" in err.why
    assert "inside the adapter call migrate/adapters/redis.py" in err.why and "(dbsize)" in err.why
    shown = "".join(traceback.format_exception(err))
    assert "count_step.py" in shown and "return adapter.dbsize(0)" in shown  # the step's own frames


@pytest.mark.slow
def test_sandbox_rehearses_the_redis_steps_on_a_cluster_like_production(servers_root: Path) -> None:
    """`sandbox up` follows production's cluster_mode (auto): the target Redis is a local 3-primary cluster,
    recorded with cluster_mode = true; the Redis steps run against it with the repo's settings; doctor names the
    topology; `down` stops every node; `redis_topology = "single"` switches it back on the next `up`."""
    import json
    import os
    import shutil

    from migrate import config
    from migrate.adapters import localservers as ls
    from migrate.doctor import DoctorContext, check_redis_topology
    from migrate.sandbox import orchestrate

    root = Path(__file__).resolve().parents[1]
    project = servers_root / "proj-redis-cluster"
    project.mkdir()
    anchor = 'kind = "sandbox"'
    toml = (root / "migrate.toml").read_text().replace(anchor, anchor + '\nsandbox = { fsync = false }', 1)
    (project / "migrate.toml").write_text(toml)
    shutil.copytree(root / "templates", project / "templates", ignore=shutil.ignore_patterns("__pycache__"))
    os.environ.pop("BPMIGRATE_SANDBOX_REDIS_TOPOLOGY", None)

    def load() -> Any:
        return config.load(project / "migrate.toml")

    try:
        st = orchestrate.up(load(), "sandbox")
        endpoints = json.loads((project / "state/sandbox/endpoints.json").read_text())
        assert endpoints["redis"]["target"]["cluster_mode"] is True
        facts = endpoints["sandbox"]["redis_target"]
        assert facts["topology"] == "cluster" and "production" in facts["why"] and len(facts["nodes"]) == 3
        assert {c.name: c.endpoint for c in st.components}["redis-target"].endswith("(cluster)")
        env = load().env("sandbox")
        assert env.redis["target"].cluster_mode
        orchestrate.seed(load(), "sandbox", redis_keys=3000)

        def ctx(step: str, up: dict[str, Any] | None = None) -> Any:
            return make_context(project, env, step, settings=load().step_settings("sandbox", step), upstream=up)

        out = RedisMigrate().apply(ctx("redis-migrate"))
        assert out["target_topology"] == "cluster (3 primaries)" and sum(out["dbs"].values()) == 3000
        assert out["route_map"][2]["prefix"] == "ratelimit:"  # the repo's db_prefix: what the app reads
        up = {"redis-migrate": out}
        assert all(c.ok for c in RedisMigrate().verify(ctx("redis-migrate")))
        vout = RedisVerify().apply(ctx("redis-verify", up))
        assert vout["keys_compared"] > 0 and sum(vout["counts"].values()) == 3000
        target = RedisAdapter(role="target", host=env.redis["target"].host, port=env.redis["target"].port, cluster_mode=True)
        assert target.dbsize(0) == 3000 and target.count_matching(0, b"sessions:") > 0

        cfg = load()
        from migrate.adapters import Adapters

        doc = {r.check: r for r in check_redis_topology(DoctorContext(cfg, env, Adapters(env, project_root=project, state_dir=project / "state"), {}))}
        assert doc["Redis target topology (sandbox)"].status == "ok"
        assert "cluster (3 primaries)" in doc["Redis target topology (sandbox)"].detail
        assert "production: cluster" in doc["Redis topology per environment"].detail

        RedisMigrate().rollback(ctx("redis-migrate"))
        assert target.dbsize(0) == 0
        target.close()

        nodes = ls.redis_cluster_pids(project / "state/sandbox/redis-target")
        assert len(nodes) == 3 and all(ls.is_alive(pid) for pid in nodes)
        orchestrate.down(load(), "sandbox")
        assert not any(ls.is_alive(pid) for pid in nodes)

        # pinned to a single node: the next `up` restarts the target in that shape
        (project / "migrate.toml").write_text(toml.replace("fsync = false", 'fsync = false, redis_topology = "single"'))
        orchestrate.up(load(), "sandbox")
        endpoints = json.loads((project / "state/sandbox/endpoints.json").read_text())
        assert endpoints["redis"]["target"]["cluster_mode"] is False
        assert endpoints["sandbox"]["redis_target"]["topology"] == "single"
    finally:
        orchestrate.down(load(), "sandbox", wipe=True)


def test_sandbox_topology_follows_production_unless_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate.config import Config, ProjectSettings
    from migrate.sandbox.orchestrate import redis_topology

    def cfg(prod_cluster: bool, **sandbox: Any) -> tuple[Config, EnvConfig]:
        box = EnvConfig(name="sandbox", kind="sandbox", sandbox=sandbox, redis={"target": RedisEndpoint()})
        prod = EnvConfig(name="production", redis={"target": RedisEndpoint(host="from-terraform", cluster_mode=prod_cluster)})
        dev = EnvConfig(name="development", redis={"target": RedisEndpoint(cluster_mode=not prod_cluster)})
        return Config(project=ProjectSettings(), environments={"sandbox": box, "production": prod, "development": dev}), box

    monkeypatch.delenv("BPMIGRATE_SANDBOX_REDIS_TOPOLOGY", raising=False)
    assert redis_topology(*cfg(True)) == ("cluster", "auto: production redis.target has cluster_mode = true")
    assert redis_topology(*cfg(False))[0] == "single"  # production decides, not development
    assert redis_topology(*cfg(True, redis_topology="single"))[0] == "single"
    monkeypatch.setenv("BPMIGRATE_SANDBOX_REDIS_TOPOLOGY", "cluster")
    topology, why = redis_topology(*cfg(False, redis_topology="single"))
    assert topology == "cluster" and "BPMIGRATE_SANDBOX_REDIS_TOPOLOGY" in why
    with pytest.raises(ValueError, match="redis_topology"):
        EnvConfig(name="sandbox", kind="sandbox", sandbox={"redis_topology": "sharded"})


def test_doctor_names_each_topology_and_refuses_a_mislabelled_cluster(
    tmp_path: Path, fresh_redis_cluster: LocalRedisCluster, redis_source: Any
) -> None:
    from migrate.adapters import Adapters
    from migrate.config import Config, ProjectSettings
    from migrate.doctor import DoctorContext, check_redis_topology

    def results(cluster_mode: bool) -> dict[str, Any]:
        env = EnvConfig(
            name="staging",
            redis={
                "source": RedisEndpoint(host=redis_source.host, port=redis_source.port),
                "target": RedisEndpoint(
                    host=fresh_redis_cluster.host, port=fresh_redis_cluster.port, cluster_mode=cluster_mode
                ),
            },
        )
        config = Config(project=ProjectSettings(), environments={"staging": env}, root=tmp_path)
        ctx = DoctorContext(config, env, Adapters(env, project_root=tmp_path, state_dir=tmp_path / "state"), {})
        return {r.check: r for r in check_redis_topology(ctx)}

    good = results(True)
    assert good["Redis topology per environment"].detail == "staging: cluster (cluster_mode = true)"
    assert good["Redis target topology (staging)"].status == "ok"
    assert "cluster (3 primaries)" in good["Redis target topology (staging)"].detail
    bad = results(False)["Redis target topology (staging)"]
    assert bad.status == "fail" and bad.blocking and "cluster_mode = true" in bad.fix
