from typing import Any
import psycopg, time


def test_explore(pg_source: Any, pg_target: Any, fresh_pg_db: Any) -> None:
    s = fresh_pg_db(pg_source)
    t = fresh_pg_db(pg_target)
    with psycopg.connect(s, autocommit=True) as c:
        c.execute("create table a (id int primary key, v text)")
        c.execute("insert into a select g, 'x' from generate_series(1,10) g")
        c.execute("create publication p for table a")
    r = psycopg.connect(s + "?replication=database", autocommit=True)
    row = r.execute("CREATE_REPLICATION_SLOT sl1 LOGICAL pgoutput (SNAPSHOT 'export')").fetchone()
    print(row)
    w = psycopg.connect(s)
    w.execute("ISOLATION LEVEL") if False else None
    w.execute("BEGIN ISOLATION LEVEL REPEATABLE READ") if False else None
    w.autocommit = False
    w.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    w.execute(f"SET TRANSACTION SNAPSHOT '{row[2]}'")
    with psycopg.connect(s, autocommit=True) as c:
        c.execute("insert into a values (11, 'y')")
    print(w.execute("select count(*) from a").fetchone())
    w.close()
    r.close()
    with psycopg.connect(t, autocommit=True) as c:
        c.execute("create table a (id int primary key, v text)")
        c.execute("insert into a select g, 'x' from generate_series(1,10) g")
        dbn = s.rsplit("/", 1)[1]
        c.execute(
            f"create subscription sub1 connection 'host=127.0.0.1 port={pg_source.port} user={pg_source.user} dbname={dbn}' publication p with (copy_data=false, create_slot=false, slot_name='sl1', enabled=true)"
        )
        t0 = time.time()
        while time.time() - t0 < 10:
            n = c.execute("select count(*) from a").fetchone()[0]
            if n == 11:
                break
            time.sleep(0.05)
        print("caught", n, time.time() - t0)
    with psycopg.connect(s, autocommit=True) as c:
        for i in range(3):
            c.execute(f"insert into a values ({20 + i}, 'z')")
        fence = c.execute("select pg_current_wal_lsn()").fetchone()[0]
        t0 = time.time()
        while time.time() - t0 < 30:
            cf = c.execute(
                "select confirmed_flush_lsn, pg_current_wal_lsn() from pg_replication_slots where slot_name='sl1'"
            ).fetchone()
            if cf[0] >= fence:
                break
            time.sleep(0.02)
        print("fence", fence, cf, time.time() - t0)
    with psycopg.connect(t, autocommit=True) as c:
        c.execute("alter subscription sub1 disable")
        c.execute("alter subscription sub1 set (slot_name = NONE)")
        c.execute("drop subscription sub1")
    with psycopg.connect(s, autocommit=True) as c:
        t0 = time.time()
        while True:
            try:
                c.execute("select pg_drop_replication_slot('sl1')")
                break
            except psycopg.errors.ObjectInUse as e:
                print(e)
                time.sleep(0.05)
        print("dropped", time.time() - t0)
