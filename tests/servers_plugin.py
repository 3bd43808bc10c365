"""Session-scoped real servers for every test file: moto (AWS), PostgreSQL 16 + pgvector (source and target), Redis.

The servers are started once per pytest session by the same code the sandbox uses
(``migrate.adapters.localservers``) and stopped by fixture finalizers (plus an atexit hook and ``PR_SET_PDEATHSIG``
in the server processes, so nothing outlives the session even if pytest is killed).

Fixtures:
  moto_server, pg_source, pg_target, redis_source, redis_target   (session scope)
  servers_root         -> the session's server data directory (outside pytest's 0700 basetemp)
  server_dir           -> a fresh directory for a test's own servers (use it, not tmp_path, for PostgreSQL data)
  moto_reset           -> the moto server after ``POST /moto-api/reset``
  fresh_pg_db(pg_x)    -> DSN of a new, empty database on that server (dropped at teardown)
  fresh_redis          -> flushes both Redis servers; calling it, ``fresh_redis(redis_x)``, flushes that server again
                          and returns it
  redis_cluster        -> a Redis Cluster of three primaries on free loopback ports (session scope)
  fresh_redis_cluster  -> flushes the source Redis and every primary of the cluster; returns the cluster
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.localservers import (
    LocalMoto,
    LocalPostgres,
    LocalRedis,
    LocalRedisCluster,
    start_moto,
    start_postgres,
    start_redis,
    start_redis_cluster,
)


@pytest.fixture(scope="session")
def servers_root() -> Iterator[Path]:
    """Where server data lives: NOT under pytest's basetemp, which every new pytest session chmods back to 0700
    (PostgreSQL runs as the unprivileged ``pgserver`` user when we are root and must traverse the path)."""
    root = Path(tempfile.mkdtemp(prefix="bpm-test-servers-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def server_dir(servers_root: Path) -> Path:
    """A fresh directory for a test's own servers (same location rules as the session servers)."""
    path = Path(tempfile.mkdtemp(prefix="t-", dir=servers_root))
    path.chmod(0o711)
    return path


def moto_client(endpoint_url: str, service: str, region: str = "us-east-1") -> Any:
    """A boto3 client for the moto server at ``endpoint_url`` (test credentials, never the operator's)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="session")
def moto_server(servers_root: Path) -> Iterator[LocalMoto]:
    server = start_moto(servers_root / "moto")
    yield server
    server.stop()


@pytest.fixture()
def moto_reset(moto_server: LocalMoto) -> LocalMoto:
    moto_server.reset()
    return moto_server


@pytest.fixture(scope="session")
def pg_source(servers_root: Path) -> Iterator[LocalPostgres]:
    server = start_postgres(servers_root / "pg-source", fsync=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_target(servers_root: Path) -> Iterator[LocalPostgres]:
    server = start_postgres(servers_root / "pg-target", fsync=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_source(servers_root: Path) -> Iterator[LocalRedis]:
    server = start_redis(servers_root / "redis-source")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_target(servers_root: Path) -> Iterator[LocalRedis]:
    server = start_redis(servers_root / "redis-target")
    yield server
    server.stop()


@pytest.fixture()
def fresh_pg_db() -> Iterator[Callable[[LocalPostgres], str]]:
    """Factory: ``dsn = fresh_pg_db(pg_source)`` creates a new empty database; all are dropped at teardown."""
    created: list[tuple[LocalPostgres, str]] = []

    def make(server: LocalPostgres) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        dsn = server.create_database(name)
        created.append((server, name))
        return dsn

    yield make
    for server, name in created:
        if server.alive():
            server.drop_database(name)


def _flush(server: LocalRedis) -> None:
    import redis

    client = redis.Redis(host=server.host, port=server.port, socket_timeout=10)
    try:
        client.flushall()
    finally:
        client.close()


@pytest.fixture()
def fresh_redis(redis_source: LocalRedis, redis_target: LocalRedis) -> Callable[[LocalRedis], LocalRedis]:
    """Both Redis servers start empty (every DB); ``fresh_redis(server)`` flushes one again and returns it."""
    _flush(redis_source)
    _flush(redis_target)

    def flush(server: LocalRedis) -> LocalRedis:
        _flush(server)
        return server

    return flush


@pytest.fixture(scope="session")
def redis_cluster(servers_root: Path) -> Iterator[LocalRedisCluster]:
    """Three redis-server nodes with ``cluster-enabled yes``, slots split evenly, no replicas."""
    cluster = start_redis_cluster(servers_root / "redis-cluster")
    yield cluster
    cluster.stop()


@pytest.fixture()
def fresh_redis_cluster(redis_source: LocalRedis, redis_cluster: LocalRedisCluster) -> LocalRedisCluster:
    """The source Redis and every primary of the cluster start empty."""
    _flush(redis_source)
    for node in redis_cluster.nodes:
        _flush(node)
    return redis_cluster
