"""The sandbox API stand-in's connection pool never hands out a connection the server ended while it sat idle
(a restart or `pg_terminate_backend`): the next request gets a fresh one instead of an HTTP 500."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg

from migrate.adapters.localservers import LocalPostgres
from migrate.sandbox.app import _Pool


def test_a_connection_ended_while_idle_is_replaced(pg_source: LocalPostgres, fresh_pg_db: Callable[[LocalPostgres], str]) -> None:
    dsn = fresh_pg_db(pg_source)
    pool = _Pool(dsn, size=2)
    try:
        with pool.conn() as c:
            first_pid = c.info.backend_pid
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [first_pid])
            admin.execute("SELECT pg_sleep(0.2)")  # the notice reaches the idle socket
        with pool.conn() as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
            assert c.info.backend_pid != first_pid
        with pool.conn() as c:  # a live idle connection is reused
            again = c.info.backend_pid
        with pool.conn() as c:
            assert c.info.backend_pid == again
    finally:
        pool.close()


def test_shadow_writes_race_free_and_survive_a_dropped_schema(pg_source: LocalPostgres, fresh_pg_db: Callable[[LocalPostgres], str]) -> None:
    """The first concurrent writes to a stand-in in shadow mode all succeed (the table is created once, under a
    lock), and a write after `_bpmigrate` was dropped (target-cleanup) recreates it instead of failing."""
    dsn = fresh_pg_db(pg_source)
    pool = _Pool(dsn, size=16)
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            with pool.conn() as c:
                pool.shadow_write(c, [f"w{i}", "enhance", "{}"])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("SELECT count(*) FROM _bpmigrate.shadow_writes").fetchone() == (16,)
            admin.execute("DROP SCHEMA _bpmigrate CASCADE")
        with pool.conn() as c:
            pool.shadow_write(c, ["after-drop", "enhance", "{}"])
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("SELECT write_id FROM _bpmigrate.shadow_writes").fetchall() == [("after-drop",)]
    finally:
        pool.close()
