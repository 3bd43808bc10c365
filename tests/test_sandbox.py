"""The local sandbox: dataset determinism, seeding real servers, and up/status/down/reset through the CLI.

CLI tests run in subprocesses against a temporary project (a copy of migrate.toml with its own state/), never the
repository's state/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters import localservers as ls
from migrate.adapters import sandbox_seed
from migrate.sandbox import dataset as ds

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------
# the dataset (pure)
# ---------------------------------------------------------------------------------------------------------------
def _take(rows: Iterator[tuple[Any, ...]], n: int) -> list[tuple[Any, ...]]:
    out = []
    for row in rows:
        out.append(row)
        if len(out) == n:
            break
    return out


def test_dataset_is_deterministic_and_seed_sensitive() -> None:
    a, b, c = ds.Dataset(1, 7), ds.Dataset(1, 7), ds.Dataset(1, 8)
    for schema, table, columns, types in ds.TABLES:
        first = _take(a.rows(schema, table), 50)
        assert first == _take(b.rows(schema, table), 50), table
        assert all(len(row) == len(columns) == len(types) for row in first)
        assert first != _take(c.rows(schema, table), 50), table


def test_dataset_has_the_values_that_bite() -> None:
    data = ds.Dataset(1, 42)
    history = list(data.rows("prompts", "history"))
    assert len(history) == data.counts.history
    texts = [r[5] for r in history] + [r[6] for r in history if r[6]]
    for needle in ("\t", "\n", "\\", "\\N", "中文", "🚀", "'", '"'):
        assert any(needle in t for t in texts), needle
    assert max(len(t) for t in texts) > 100_000  # TOASTed values
    assert any(r[2] is None for r in history) and any(r[15] is None for r in history)  # NULLs
    assert len({r[1] for r in history}) == len(history)  # request_id unique
    users = list(data.rows("auth", "users"))
    assert len({u[1] for u in users}) == len(users) and len({u[2] for u in users}) == len(users)
    emb = list(data.rows("prompts", "ml_embeddings"))
    vectors = [e[3] for e in emb if e[3] is not None]
    assert len(ds.decode_vector(vectors[0])) == ds.EMBEDDING_DIM
    assert len(set(vectors)) == len(vectors)
    assert all(1 <= e[1] <= data.counts.history for e in emb)  # FK into history


def test_counts_scale_linearly() -> None:
    one, ten = ds.counts_for(1), ds.counts_for(10)
    assert ten.history == 10 * one.history and ten.users == 10 * one.users
    with pytest.raises(ValueError):
        ds.counts_for(0)
    assert ds.counts_for(0.2).users == 200


def test_redis_keys_cover_every_type_db_and_ttls() -> None:
    keys = list(ds.redis_keys(2000, 3))
    assert keys == list(ds.redis_keys(2000, 3))
    assert keys != list(ds.redis_keys(2000, 4))
    assert len({(k.db, k.key) for k in keys}) == 2000
    assert {k.kind for k in keys} == {"string", "hash", "list", "set", "zset", "stream"}
    assert {k.db for k in keys} == {0, 1, 2}
    with_ttl = sum(k.ttl_ms is not None for k in keys)
    assert 0 < with_ttl < len(keys)


# ---------------------------------------------------------------------------------------------------------------
# seeding real servers
# ---------------------------------------------------------------------------------------------------------------
def test_seed_postgres_is_deterministic(pg_source: ls.LocalPostgres, fresh_pg_db: Any) -> None:
    first, second, other = fresh_pg_db(pg_source), fresh_pg_db(pg_source), fresh_pg_db(pg_source)
    small = 0.2  # 1/5 of the default dataset: same shapes, faster
    report = sandbox_seed.seed_postgres(first, small, 7)
    assert not report.skipped and report.total_rows == sum(ds.counts_for(small).table_rows().values())
    assert report.rows == ds.counts_for(small).table_rows()
    assert set(report.extensions_missing) == {"uuid-ossp", "pgcrypto"}  # pgserver ships neither
    sandbox_seed.seed_postgres(second, small, 7)
    sums = sandbox_seed.pg_checksums(first)
    assert sums == sandbox_seed.pg_checksums(second)
    assert sandbox_seed.pg_seed_info(first) is not None
    # idempotent: the same inputs are a no-op; other inputs are refused unless forced
    assert sandbox_seed.seed_postgres(first, small, 7).skipped
    with pytest.raises(Exception, match="already seeded"):
        sandbox_seed.seed_postgres(first, small, 9)
    forced = sandbox_seed.seed_postgres(second, small, 8, force=True)
    assert not forced.skipped
    different = sandbox_seed.pg_checksums(second)
    assert all(sums[t][1] != different[t][1] for t in sums)
    assert sandbox_seed.pg_seed_info(other) is None  # an empty database is not seeded
    import psycopg

    with psycopg.connect(other) as conn:
        conn.execute("CREATE SCHEMA prompts")
        conn.execute("CREATE TABLE prompts.precious (x int)")
    with pytest.raises(Exception, match="not created by `sandbox seed`"):
        sandbox_seed.seed_postgres(other, small, 7)  # someone else's schema is never dropped without --force
    with psycopg.connect(other) as conn:
        assert conn.execute("SELECT to_regclass('prompts.precious') IS NOT NULL").fetchone() == (True,)


def test_seeded_postgres_has_the_betterprompts_shape(pg_target: ls.LocalPostgres, fresh_pg_db: Any) -> None:
    import psycopg

    dsn = fresh_pg_db(pg_target)
    sandbox_seed.seed_postgres(dsn, 0.2, 42)
    with psycopg.connect(dsn) as conn:

        def one(sql: str) -> Any:
            row = conn.execute(sql.encode()).fetchone()
            assert row is not None
            return row[0]

        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
        assert schemas >= {"auth", "prompts", "analytics"}
        assert one("SELECT extversion IS NOT NULL FROM pg_extension WHERE extname = 'vector'") is True
        assert (
            one("SELECT vector_dims(embedding) FROM prompts.ml_embeddings WHERE embedding IS NOT NULL LIMIT 1") == 768
        )
        assert one("SELECT count(*) FROM pg_indexes WHERE indexname = 'ml_embeddings_ivfflat'") == 1
        history = "SELECT count(*) FROM prompts.history WHERE "
        assert one(history + "original_input LIKE E'%\\t%' AND original_input LIKE E'%\\n%'") > 0
        assert one(history + "enhanced_output LIKE '%🚀%'") > 0
        assert one(history + "strpos(original_input, E'\\\\') > 0") > 0
        assert one(history + "enhanced_output IS NULL") > 0
        # generated column computed by the server, identity column and sequences positioned after the data
        assert one("SELECT count(*) FROM auth.users WHERE email_domain <> lower(split_part(email, '@', 2))") == 0
        assert (
            one("SELECT attidentity FROM pg_attribute WHERE attrelid = 'auth.api_keys'::regclass AND attname = 'id'")
            == "a"
        )
        nxt = one(
            "INSERT INTO auth.api_keys (user_id, name, key_prefix, key_hash, scopes, created_at) "
            "SELECT id, 'n', 'p', '\\x00', '{a}', now() FROM auth.users LIMIT 1 RETURNING id"
        )
        assert nxt == ds.counts_for(0.2).api_keys + 1
        conn.rollback()
        fks = one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace IN "
            "('auth'::regnamespace, 'prompts'::regnamespace, 'analytics'::regnamespace)"
        )
        assert fks >= 8
        types = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT data_type FROM information_schema.columns "
                "WHERE table_schema IN ('auth', 'prompts', 'analytics')"
            ).fetchall()
        }
        assert {
            "jsonb",
            "ARRAY",
            "uuid",
            "inet",
            "timestamp with time zone",
            "bytea",
            "USER-DEFINED",
            "numeric",
        } <= types


def test_seed_redis_is_deterministic(redis_source: ls.LocalRedis, fresh_redis: Any) -> None:
    import redis

    report = sandbox_seed.seed_redis(redis_source.host, redis_source.port, 1500, 5)
    assert sum(report.per_db.values()) == 1500 and set(report.per_db) == {0, 1, 2}
    assert set(report.per_type) == {"string", "hash", "list", "set", "zset", "stream"}
    sums = sandbox_seed.redis_checksums(redis_source.host, redis_source.port)
    assert {db: n for db, (n, _) in sums.items()} == report.per_db
    client = redis.Redis(host=redis_source.host, port=redis_source.port, db=1)
    assert any(client.pttl(k) > 0 for k in client.scan_iter(count=500))
    assert sandbox_seed.seed_redis(redis_source.host, redis_source.port, 1500, 5).skipped
    fresh_redis(redis_source)
    sandbox_seed.seed_redis(redis_source.host, redis_source.port, 1500, 5)
    assert sandbox_seed.redis_checksums(redis_source.host, redis_source.port) == sums
    sandbox_seed.seed_redis(redis_source.host, redis_source.port, 1500, 6)
    assert sandbox_seed.redis_checksums(redis_source.host, redis_source.port) != sums


# ---------------------------------------------------------------------------------------------------------------
# the CLI against a temporary project
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project(servers_root: Path) -> Iterator[Path]:
    """A throw-away project: the repo's migrate.toml, links to its phases/templates, and an empty state/ (outside
    pytest's basetemp, which other pytest sessions chmod to 0700 while our PostgreSQL runs as ``pgserver``)."""
    root = servers_root / "proj"
    root.mkdir()
    toml = (ROOT / "migrate.toml").read_text()
    anchor = 'kind = "sandbox"'
    assert anchor in toml
    (root / "migrate.toml").write_text(toml.replace(anchor, anchor + "\nsandbox = { fsync = false }", 1))
    ignore = shutil.ignore_patterns("__pycache__", ".terraform", "*.tfstate*")
    for name in ("phases", "templates", "runbooks", "terraform"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, root / name, ignore=ignore)
    yield root
    _cli(root, "down", check=False)  # never leave servers behind


def _cli(project: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "migrate.sandbox.cli", *args, "--config", str(project / "migrate.toml")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"sandbox {args} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def _status(project: Path) -> dict[str, Any]:
    done = _cli(project, "status", "--json", check=False)
    assert done.returncode in (0, 3), done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_up_status_seed_down_through_the_cli(project: Path) -> None:
    from migrate import config
    from migrate.sandbox import orchestrate

    def load() -> Any:
        return config.load(project / "migrate.toml")

    up = json.loads(_cli(project, "up", "--json").stdout)
    assert up["state"] == "up" and not up["already_up"]
    endpoints = json.loads((project / "state/sandbox/endpoints.json").read_text())
    pids = endpoints["sandbox"]["pids"]
    assert set(pids) == {
        "moto",
        "pg-source",
        "pg-target",
        "redis-source",
        "redis-target",
        "app-old",
        "app-new",
        "router",
    }
    assert endpoints["steps"]["data-switch"]["fences"][0]["kind"] == "process"  # the stand-ins, as steps see them
    assert all(ls.is_alive(pid) for pid in pids.values())
    assert endpoints["postgres"]["source"]["port"] != endpoints["postgres"]["target"]["port"]
    assert endpoints["redis"]["source"]["dbs"] == [0, 1, 2]
    assert endpoints["redis"]["target"]["cluster_mode"] is True  # redis_topology "auto": production's cluster mode
    tfvars = json.loads((project / "state/sandbox/terraform.tfvars.json").read_text())
    assert tfvars["pg_target_port"] == endpoints["postgres"]["target"]["port"]
    assert tfvars["redis_target_port"] == endpoints["redis"]["target"]["port"]
    assert tfvars["aws_endpoint_url"] == endpoints["aws"]["endpoint_url"] and tfvars["env_name"] == "sandbox"

    # the config loader merges the endpoints over the sandbox environment
    env = load().env("sandbox")
    assert env.aws.endpoint_url == endpoints["aws"]["endpoint_url"]
    assert env.postgres["target"].port == endpoints["postgres"]["target"]["port"]
    assert env.postgres["source"].bin_dir and Path(env.postgres["source"].bin_dir, "pg_dump").is_file()

    # idempotent: a second `up` adopts everything and says so
    assert "already up" in _cli(project, "up").stdout
    assert json.loads((project / "state/sandbox/endpoints.json").read_text())["sandbox"]["pids"] == pids

    st = _status(project)  # from another process: reads the file, checks PIDs, pings
    assert st["state"] == "up" and all(c["ok"] for c in st["components"]) and st["seeded"] is None

    seeded = orchestrate.seed(load(), "sandbox")
    assert not seeded.skipped and seeded.postgres["total_rows"] == 40300 and seeded.redis["keys"] == 5000
    assert "already seeded" in _cli(project, "seed").stdout

    # a dead server is reported and `up` restarts only that one, on the same port
    os.kill(pids["redis-target"], signal.SIGKILL)
    assert _status(project)["state"] == "degraded"
    repaired = json.loads(_cli(project, "up", "--json").stdout)
    actions = {c["name"]: c["action"] for c in repaired["components"]}
    assert actions["redis-target"] == "started" and actions["pg-source"] == "adopted"
    after = json.loads((project / "state/sandbox/endpoints.json").read_text())
    assert after["redis"]["target"]["port"] == endpoints["redis"]["target"]["port"]

    # down: no process left (by PID, and no PostgreSQL backend either), data kept, status says down (exit 3)
    pids = after["sandbox"]["pids"]
    down = json.loads(_cli(project, "down", "--json").stdout)
    assert down["state"] == "down"
    assert not any(ls.is_alive(pid) for pid in pids.values())
    assert all(not ls.descendants(pid) for pid in pids.values())
    assert _cli(project, "status", check=False).returncode == 3
    assert (project / "state/sandbox/pg-source/pgdata/PG_VERSION").is_file()
    assert orchestrate.down(load(), "sandbox").components[0].action == "not running"

    # up again: the data survived (PostgreSQL cluster and Redis RDB), the seed is a no-op
    again = orchestrate.up(load(), "sandbox")
    assert not again.already_up and again.state == "up"
    assert orchestrate.seed(load(), "sandbox").skipped

    # reset: wipes, archives the ledger, starts clean (unseeded)
    (project / "state" / "sandbox.db").write_text("ledger stand-in")
    reset = orchestrate.reset(load(), "sandbox")
    assert reset.state == "up" and reset.seeded is None
    assert not (project / "state" / "sandbox.db").exists()
    assert list((project / "state" / "archive").glob("sandbox-*.db"))
    pids = json.loads((project / "state/sandbox/endpoints.json").read_text())["sandbox"]["pids"]
    _cli(project, "down", "--wipe")
    assert not any(ls.is_alive(pid) for pid in pids.values())
    assert not (project / "state/sandbox/pg-source").exists()
    assert orchestrate.status(load(), "sandbox").state == "absent"


@pytest.mark.slow
def test_up_adopts_a_server_left_by_a_crashed_up(servers_root: Path) -> None:
    """`up` killed after spawning a server but before writing endpoints.json: the next `up` finds it by its
    server.json record and adopts it instead of starting a second one; `down` then stops it by PID."""
    from migrate import config
    from migrate.sandbox import orchestrate

    root = servers_root / "proj-crashed-up"
    root.mkdir()
    toml = (
        (ROOT / "migrate.toml")
        .read_text()
        .replace('kind = "sandbox"', 'kind = "sandbox"\nsandbox = { fsync = false }', 1)
    )
    (root / "migrate.toml").write_text(toml)
    orphan = ls.start_redis(root / "state" / "sandbox" / "redis-source", persist=True, keep_running=True)
    try:
        assert not (root / "state/sandbox/endpoints.json").exists()
        st = orchestrate.up(config.load(root / "migrate.toml"), "sandbox")
        by_name = {c.name: c for c in st.components}
        assert by_name["redis-source"].pid == orphan.pid and by_name["redis-source"].action == "adopted"
        assert by_name["pg-source"].action == "started"
        pids = [c.pid for c in st.components]
        orchestrate.down(config.load(root / "migrate.toml"), "sandbox", wipe=True)
        assert not any(ls.is_alive(pid) for pid in pids)
    finally:
        orphan.stop()


def test_sandbox_commands_refuse_a_non_sandbox_env(project: Path) -> None:
    done = _cli(project, "up", "--env", "production", check=False)
    assert done.returncode == 2
    assert "not a sandbox" in done.stderr
    refused = _cli(project, "reset", check=False)  # no TTY and no --yes: never wipes
    assert refused.returncode == 3 and "--yes" in refused.stderr


def test_seed_needs_a_running_sandbox(tmp_path: Path) -> None:
    shutil.copy(ROOT / "migrate.toml", tmp_path / "migrate.toml")
    done = _cli(tmp_path, "seed", check=False)
    assert done.returncode == 2 and "sandbox up" in done.stderr


# ---------------------------------------------------------------------------------------------------------------
# crash safety of the whole rehearsal: `apply --all` killed with SIGKILL at random moments, then re-run
# ---------------------------------------------------------------------------------------------------------------
def _bpm(project: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from migrate.cli import main; main()",
        "--config",
        str(project / "migrate.toml"),
        *args,
    ]


def _bpm_env(project: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "KUBECONFIG": str(project / "no-kubeconfig")}


def _step_states(project: Path) -> dict[str, str]:
    done = subprocess.run(
        _bpm(project, "--env", "sandbox", "--json", "status"),
        cwd=project,
        env=_bpm_env(project),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    doc = json.loads(done.stdout)
    assert "phases" in doc, f"`bpmigrate status` failed: {doc}"
    return {s["id"]: s["state"] for phase in doc["phases"] for s in phase["steps"]}


@pytest.mark.slow
def test_apply_all_killed_at_random_moments_converges(servers_root: Path) -> None:
    import random
    import time

    if not (ROOT / "migrate" / "engine.py").is_file() or not list((ROOT / "phases").glob("p*_*")):
        pytest.skip("the engine or the phases are not in this tree yet")
    project = servers_root / "proj-kill"
    project.mkdir()
    toml = (
        (ROOT / "migrate.toml")
        .read_text()
        .replace('kind = "sandbox"', 'kind = "sandbox"\nsandbox = { fsync = false }', 1)
    )
    (project / "migrate.toml").write_text(toml)
    ignore = shutil.ignore_patterns("__pycache__", ".terraform", "*.tfstate*")
    for name in ("phases", "templates", "runbooks", "terraform"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, project / name, ignore=ignore)
    try:
        from migrate import config
        from migrate.sandbox import orchestrate

        orchestrate.up(config.load(project / "migrate.toml"), "sandbox")
        orchestrate.seed(config.load(project / "migrate.toml"), "sandbox")
        seed = int(os.environ.get("BPM_KILL_SEED", random.randrange(1_000_000)))
        rng = random.Random(seed)
        kills = 0
        # decommission's manual gate (it stops the old stack, here the stand-in process): approved up front
        approve = ("approve", "decommission", "--reason", "rehearsal")
        subprocess.run(_bpm(project, "--env", "sandbox", *approve), cwd=project, env=_bpm_env(project), check=True)
        for _ in range(2):
            proc = subprocess.Popen(
                _bpm(project, "--env", "sandbox", "apply", "--all", "--yes"),
                cwd=project,
                env=_bpm_env(project),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # killpg takes terraform/pg_dump children down too, like a crashed host
            )
            delay = rng.uniform(1.0, 8.0)
            try:
                proc.wait(timeout=delay)
                break  # finished before the kill: nothing left to interrupt
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                kills += 1
                time.sleep(0.2)
        final = subprocess.run(
            _bpm(project, "--env", "sandbox", "apply", "--all", "--yes"),
            cwd=project,
            env=_bpm_env(project),
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        states = _step_states(project)
        bad = {k: v for k, v in states.items() if v not in ("verified", "skipped")}
        assert final.returncode == 0 and not bad, (
            f"kill seed {seed} ({kills} kills): exit {final.returncode}, not converged: {bad}\n"
            f"{final.stdout[-3000:]}\n{final.stderr[-3000:]}"
        )
        assert kills >= 1 or states, "the run was never interrupted"
        again = subprocess.run(
            _bpm(project, "--env", "sandbox", "--json", "apply", "--all", "--yes"),
            cwd=project,
            env=_bpm_env(project),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert again.returncode == 0, again.stderr[-2000:]
        doc = json.loads(again.stdout)
        # a converged rehearsal re-run applies nothing: at most it re-checks the environment-skipped steps
        redone = [o for o in doc["outcomes"] if o["state"] != "skipped"]
        assert doc["nothing_to_do"] or not redone, redone
        assert _step_states(project) == states
    finally:
        endpoints = _read_endpoints(project)
        _cli(project, "down", "--wipe", check=False)
        for pid in (endpoints or {}).get("sandbox", {}).get("pids", {}).values():
            assert not ls.is_alive(pid)


def _read_endpoints(project: Path) -> dict[str, Any] | None:
    try:
        return json.loads((project / "state/sandbox/endpoints.json").read_text())
    except (OSError, ValueError):
        return None
