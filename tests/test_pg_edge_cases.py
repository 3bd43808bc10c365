"""A schema as real applications have them (issue 23), through pg-backup, rds-restore and data-validate, with an
independent comparison at the end: enums, domains, identity and generated columns, range/list/hash partitions with a
sub-partition, quoted mixed-case names with a space, an unlogged table, views and materialized views (with and
without data, one reading another), a trigger, RLS, large objects (one empty, one ~1 MB, NUL bytes), a table without
a key, empty and one-row tables, wide TOASTed rows, arrays of a composite type, bytea with NUL bytes, NaN/Infinity
numerics and floats, -infinity timestamps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters import pgcopy
from migrate.adapters.postgres import parse_toc
from migrate.errors import StepFailed
from migrate.testing import make_context
from phases.p2_data.data_validate import DataValidate
from phases.p2_data.pg_backup import PgBackup
from phases.p2_data.rds_restore import RdsRestore
from tests.pg_data_helpers import independent_snapshot, make_edge_pair
from tests.test_phase2 import pg_env

SMALL = {"chunk_rows": 40, "chunk_mb": 1024, "analyze": False}


def test_edge_schema_backup_restore_validate_and_independent_comparison(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    src, dst = make_edge_pair(pg_source, pg_target, fresh_pg_db)
    env = pg_env(src, dst)

    # pg-backup: verify passes on a good backup (partitioned parents, a name with a space, large objects)
    backup = PgBackup()
    bctx = make_context(tmp_path, env, "pg-backup")
    out = backup.apply(bctx)
    checks = backup.verify(make_context(tmp_path, env, "pg-backup", upstream={"pg-backup": out}))
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    toc = parse_toc(src.restore_list(Path(out["path"])))
    assert sum(e.desc == "BLOB" for e in toc) == src.large_object_count() == 4
    weird = next(e for e in toc if e.desc == "TABLE DATA" and "Weird Table" in e.rest)
    assert weird.oid == src.query("""SELECT '"Edge Cases"."Weird Table"'::regclass::oid""")[0][0]

    # rds-restore: no blocking finding for the large objects; they, the matviews and every row arrive
    restore = RdsRestore()
    rctx = make_context(tmp_path, env, "rds-restore", settings=SMALL)
    plan = restore.plan(rctx)
    assert not plan.blocking, plan.blocking
    assert any(c.target == "large objects" for c in plan.changes)
    rout = restore.apply(rctx)
    assert rout["large_objects"] == 4 and rout["matviews_refreshed"] == 2
    assert "large objects" in restore.summary(rout)
    assert all(c.ok for c in restore.verify(rctx)), [c for c in restore.verify(rctx) if not c.ok]
    assert dst.query("SELECT n FROM public.mood_top ORDER BY 1")  # populated: reading it does not fail
    assert not dst.query("""SELECT relispopulated FROM pg_class WHERE oid = '"Edge Cases"."Lazy View"'::regclass""")[
        0
    ][0]

    # data-validate: rows, large objects and matviews compared; a changed large object is named
    validate = DataValidate()
    vctx = make_context(tmp_path, env, "data-validate", settings={"chunk_rows": 30, "chunk_mb": 1024})
    vout = validate.apply(vctx)
    assert vout["large_objects"] == 4
    assert vout["matviews"] == {"public.mood_counts": 3, "public.mood_top": 3, "Edge Cases.Lazy View": "not populated"}
    assert all(c.ok for c in validate.verify(vctx))

    # the independent comparison: counts and content per leaf table, matviews, large objects, sequences, RLS
    src_view, dst_view = independent_snapshot(src), independent_snapshot(dst)
    assert src_view == dst_view
    assert src_view['table "Edge Cases".events_2024_h1'][0] > 0 and src_view["table public.empty_one"][0] == 0
    assert src_view["table public.scratch"][3] == "u" and src_view["table public.secrets"][2] is True

    lo = int(dst.query("SELECT min(oid) FROM pg_largeobject_metadata WHERE oid IN (SELECT body_oid FROM docs)")[0][0])
    dst.execute("SELECT lo_put(%s::oid, 3, 'X')", [lo])
    with pytest.raises(StepFailed, match="large objects missing or different"):
        validate.apply(make_context(tmp_path / "v2", env, "data-validate", settings={"chunk_rows": 30}))
    dst.execute("REFRESH MATERIALIZED VIEW \"Edge Cases\".\"Lazy View\"")
    fails = [c.name for c in validate.verify(vctx) if not c.ok]
    assert fails == ["materialized view Edge Cases.Lazy View (populated, rows)"]

    restore.rollback(rctx)
    assert dst.large_object_count() == 0 and dst.tables() == []


def test_large_object_copy_resumes_per_object(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    src, dst = make_edge_pair(pg_source, pg_target, fresh_pg_db)
    pgcopy.ensure_state(dst)
    first = min(lo.oid for lo in src.large_objects())
    # an earlier run copied one object and recorded it, then died
    dst.execute("SELECT lo_from_bytea(%s::oid, 'stale copy, kept: recorded as done')", [first])
    dst.execute("INSERT INTO _bpmigrate.lo_progress (lo, bytes) VALUES (%s, 1)", [first])
    copied, nbytes, missing = pgcopy.copy_large_objects(src, dst, chunk=4096)
    assert copied == 3 and nbytes > 1_000_000 and missing == []
    assert pgcopy.copy_large_objects(src, dst) == (0, 0, [])  # all recorded: nothing copied again
    digests_src, digests_dst = src.large_object_digests(), dst.large_object_digests()
    assert {o: d for o, d in digests_src.items() if o != first} == {o: d for o, d in digests_dst.items() if o != first}
    assert digests_dst[first] != digests_src[first]  # proof the recorded object was skipped


def test_matviews_in_dependency_order(pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]) -> None:
    src, _ = make_edge_pair(pg_source, pg_target, fresh_pg_db)
    src.execute("CREATE MATERIALIZED VIEW public.a_first AS SELECT * FROM public.mood_top")  # name sorts first
    names = [v.qualified for v in src.matviews()]
    assert names.index("public.mood_counts") < names.index("public.mood_top") < names.index("public.a_first")
    assert pgcopy.refresh_statements(src)[-1] == 'REFRESH MATERIALIZED VIEW "public"."a_first";'


@pytest.mark.slow
def test_edge_schema_through_sync_with_writes_and_switch(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    """rds-restore, then pg-sync (logical replication) with writes on the source, then data-switch: the independent
    comparison finds no difference (matviews refreshed at the switch; large objects are not replicated: frozen)."""
    from phases.p2_data.pg_sync import PgSyncStep
    from phases.p5_cutover.data_switch import DataSwitch
    from tests.test_pg_sync import _cleanup

    src, dst = make_edge_pair(pg_source, pg_target, fresh_pg_db)
    env = pg_env(src, dst)
    sync = PgSyncStep()
    try:
        RdsRestore().apply(make_context(tmp_path, env, "rds-restore", settings=SMALL))
        sctx = make_context(tmp_path, env, "pg-sync", settings={"replica_identity_full": True})
        plan = sync.plan(sctx)
        messages = [f.message for f in plan.findings]
        assert any("materialized views are not replicated" in m for m in messages), messages
        assert [f for f in plan.findings if f.level == "block"] == []
        out = sync.apply(sctx)
        checks = sync.verify(make_context(tmp_path, env, "pg-sync", upstream={"pg-sync": out}))
        assert all(c.ok for c in checks), [c for c in checks if not c.ok]  # partitioned parents count as published
        assert sync.plan(sctx).in_place  # the publication is as wanted: no "update publication" every time
        src.execute(
            """INSERT INTO "Edge Cases"."Weird Table" ("Mixed Col", qty, mood, pairs, blob, num, f8, ts)
               VALUES (NULL, 7, 'ok', ARRAY[ROW('w', 'NaN')::"Edge Cases".pair], '\\x0000', 'Infinity', 'NaN',
                       '-infinity');
               UPDATE "Edge Cases"."Weird Table" SET wide = repeat('z', 300000) WHERE "ID" = 3;
               DELETE FROM "Edge Cases".events WHERE id % 50 = 0;
               INSERT INTO "Edge Cases".events VALUES (9001, '2024-06-01', 'late'), (9002, '2031-01-01', 'future');
               UPDATE public.regions SET name = 'Deutschland' WHERE code = 'de';
               INSERT INTO public.buckets VALUES (31, 'b31');
               UPDATE public.nokey SET b = 'upd' WHERE a = 3;
               INSERT INTO public.one_row VALUES (2, 'second');
               INSERT INTO public.secrets VALUES (3, 'carol', 's3');"""
        )
        DataSwitch().apply(make_context(tmp_path, env, "data-switch", upstream={"pg-sync": out}))
        assert pgcopy.refresh_matviews(src, dst) == ["public.mood_counts", "public.mood_top"]  # data-switch's job
        for stmt in pgcopy.refresh_statements(src):  # the source's own views, as fresh as the target's now
            src.execute(stmt)
        src.execute("TRUNCATE public.scratch")  # unlogged: not replicated, as PostgreSQL documents
        dst.execute("TRUNCATE public.scratch")
        assert independent_snapshot(src) == independent_snapshot(dst)
    finally:
        _cleanup(src, dst)
        sync.rollback(
            make_context(
                tmp_path, env, "pg-sync", upstream={"pg-sync": {"name": None, "replica_identity_full": ["public.nokey"]}}
            )
        )


def test_toc_parsing_and_identity_drift_are_exact() -> None:
    from migrate.adapters.postgres import identity_drift

    toc = parse_toc(
        [
            ";",
            "; Archive created at 2026-12-05",
            "2705; 0 16402 TABLE DATA Edge Cases Weird Table postgres",
            "2722; 0 16538 MATERIALIZED VIEW DATA public mood_counts postgres",
            "2725; 2613 16534 BLOB - 16534 postgres",
            "2729; 0 0 BLOBS - BLOBS ",
            '3001; 1259 16600 TABLE public "quoted ""name""" postgres',
        ]
    )
    assert [(e.oid, e.desc) for e in toc] == [
        (16402, "TABLE DATA"),
        (16538, "MATERIALIZED VIEW DATA"),
        (16534, "BLOB"),
        (0, "BLOBS"),
        (16600, "TABLE"),
    ]
    assert toc[0].rest == "Edge Cases Weird Table postgres"
    then = {"system_identifier": "1", "database": "bp", "server_version": "16.4", "next_xid": 700, "lsn": "0/1"}
    assert identity_drift(then, {**then, "lsn": "0/9"}) is None  # WAL moved (checkpoint), no transaction: same
    assert "written since" in str(identity_drift(then, {**then, "next_xid": 701}))
    assert "another source" in str(identity_drift(then, {**then, "system_identifier": "2"}))
    assert "upgraded" in str(identity_drift(then, {**then, "server_version": "17.0"}))
