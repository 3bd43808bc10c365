"""Real local servers: they start, answer, and leave no process behind when stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters import localservers as ls
from migrate.errors import AdapterError


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid and ls.is_alive(int(entry.name)):
                members.append(int(entry.name))
        except OSError:
            continue
    return members


def test_free_port_is_bindable() -> None:
    port = ls.free_port()
    assert 1024 < port < 65536
    assert ls.port_is_free(port)


def test_is_alive_and_stop_pid_on_a_plain_process() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        assert ls.is_alive(proc.pid)
        assert ls.is_alive(proc.pid, "time.sleep")
        assert not ls.is_alive(proc.pid, "redis-server")
        ls.stop_pid(proc.pid, 5.0)
        proc.wait(timeout=5)
        assert not ls.is_alive(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not ls.is_alive(0)
    assert not ls.is_alive(None)
    ls.stop_pid(proc.pid, 1.0)  # stopping a dead process is a no-op


def test_stop_pid_escalates_to_sigkill() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    ls.stop_pid(proc.pid, 0.5)
    assert proc.wait(timeout=5) == -signal.SIGKILL


def test_session_postgres_answers_with_pgvector_and_logical_wal(pg_source: ls.LocalPostgres, fresh_pg_db: Any) -> None:
    import psycopg

    assert pg_source.version.startswith("16.")
    assert (pg_source.bin_dir / "pg_dump").is_file()
    out = subprocess.run([str(pg_source.bin_dir / "pg_dump"), "--version"], capture_output=True, text=True, check=True)
    assert "16." in out.stdout
    dsn = fresh_pg_db(pg_source)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE TABLE t (id int primary key, v vector(3))")
        conn.execute("INSERT INTO t VALUES (1, '[1,2,3]')")
        assert conn.execute("SELECT v::text FROM t").fetchone() == ("[1,2,3]",)
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'uuid-ossp'").fetchone() == (0,)
    assert dsn != pg_source.dsn


def test_fresh_pg_db_is_empty_and_isolated(pg_target: ls.LocalPostgres, fresh_pg_db: Any) -> None:
    import psycopg

    first, second = fresh_pg_db(pg_target), fresh_pg_db(pg_target)
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
    with psycopg.connect(second) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'").fetchone() == (0,)


def test_session_redis_answers_with_16_dbs(
    redis_source: ls.LocalRedis, redis_target: ls.LocalRedis, fresh_redis: Any
) -> None:
    import redis

    assert redis_source.port != redis_target.port
    client = redis.Redis.from_url(redis_source.url)
    client.set("k", "v")
    assert int(str(client.config_get("databases")["databases"])) >= 16
    assert redis.Redis(host=redis_source.host, port=redis_source.port, db=15).ping()  # databases >= 16
    fresh_redis(redis_source)
    assert redis.Redis.from_url(redis_source.url).dbsize() == 0
    assert ls.ping_redis(redis_source.host, redis_source.port)


def test_session_moto_answers_and_resets(moto_reset: ls.LocalMoto) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=moto_reset.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="bp-test-bucket")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["bp-test-bucket"]
    moto_reset.reset()
    assert s3.list_buckets()["Buckets"] == []
    with urllib.request.urlopen(f"{moto_reset.endpoint_url}/moto-api/", timeout=5) as resp:
        assert resp.status == 200


@pytest.mark.slow
def test_start_stop_leaves_no_process(server_dir: Path) -> None:
    tmp_path = server_dir
    pg = ls.start_postgres(tmp_path / "pg")
    rd = ls.start_redis(tmp_path / "rd", persist=True)
    mt = ls.start_moto(tmp_path / "mt")
    import psycopg
    import redis

    with psycopg.connect(pg.dsn) as conn:  # a live backend in the group
        assert conn.execute("SELECT 1").fetchone() == (1,)
        pg_family = ls.descendants(pg.pid)
        assert len(pg_family) >= 3  # checkpointer, walwriter, the backend serving us, ...
    redis.Redis.from_url(rd.url).set("kept", "1")
    assert ls.ping_postgres(pg.host, pg.port)
    assert ls.ping_http(mt.endpoint_url + "/moto-api/")
    pg.stop()
    rd.stop()
    mt.stop()
    for pid in (pg.pid, rd.pid, mt.pid):
        assert not ls.is_alive(pid)
        assert _group_members(pid) == []
    assert [p for p in pg_family if ls.is_alive(p)] == []
    assert not ls.ping_postgres(pg.host, pg.port)
    assert not ls.ping_redis(rd.host, rd.port)
    # restart on the same data: PostgreSQL reuses its cluster, Redis (persist=True) its RDB
    pg2 = ls.start_postgres(tmp_path / "pg")
    rd2 = ls.start_redis(tmp_path / "rd", persist=True)
    try:
        assert pg2.pgdata == pg.pgdata
        assert redis.Redis.from_url(rd2.url).get("kept") == b"1"
    finally:
        pg2.stop()
        rd2.stop()


def test_second_server_on_same_data_dir_is_refused(pg_source: ls.LocalPostgres) -> None:
    with pytest.raises(AdapterError, match="already runs"):
        ls.start_postgres(pg_source.data_dir)


def test_busy_port_is_reported(server_dir: Path, redis_source: ls.LocalRedis) -> None:
    with pytest.raises(AdapterError, match="busy"):
        ls.start_redis(server_dir / "rd", port=redis_source.port, timeout=10)


@pytest.mark.slow
def test_servers_die_with_their_parent(tmp_path: Path) -> None:
    """A test process killed with SIGKILL takes its servers with it (PR_SET_PDEATHSIG)."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from migrate.adapters import localservers as ls
        r = ls.start_redis(Path({str(tmp_path / "rd")!r}))
        print(r.pid, flush=True)
        time.sleep(60)
        """
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}
    )
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    assert ls.is_alive(pid, "redis-server")
    proc.kill()
    proc.wait(timeout=5)
    deadline = time.monotonic() + 10
    while ls.is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ls.is_alive(pid)
