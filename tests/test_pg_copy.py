"""The PostgreSQL fast path against real servers: types that bite, resumability, idempotency, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters import pgcopy
from migrate.adapters.postgres import PostgresAdapter, validate_chunks, validation_chunks
from tests.pg_data_helpers import TABLES, make_pair, table_text

ROOT = Path(__file__).resolve().parent.parent


def _opts(**kw: Any) -> pgcopy.RestoreOptions:
    base: dict[str, Any] = {"workers": 2, "chunk_rows": 100, "chunk_bytes": 1 << 40, "analyze": False}
    base.update(kw)
    return pgcopy.RestoreOptions(**base)


def _same_content(src: PostgresAdapter, dst: PostgresAdapter) -> None:
    for rel, key in TABLES.items():
        assert table_text(src, rel, key + ", 1") == table_text(dst, rel, key + ", 1"), rel


def test_restore_copies_types_that_bite(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    src, dst = make_pair(pg_source, pg_target, fresh_pg_db)
    before = table_text(src, "public.users", "id")
    stats = pgcopy.run_restore(src, dst, tmp_path, _opts())
    assert stats.stages_run == ["pre-data", "plan", "data", "large-objects", "sequences", "post-data"]
    assert stats.chunks_total > 4  # users/prompts/events were split into key ranges
    _same_content(src, dst)
    # sequences: identity, serial and a standalone sequence carry the source values
    seqs = {s.qualified: (s.last_value, s.is_called) for s in dst.sequences()}
    assert seqs == {s.qualified: (s.last_value, s.is_called) for s in src.sequences()}
    assert seqs["public.standalone_seq"] == (4242, True)
    # post-data: constraints, indexes and triggers exist on the target
    assert dst.query("SELECT count(*) FROM pg_constraint WHERE contype = 'f'")[0][0] == 2
    assert dst.query("SELECT count(*) FROM pg_indexes WHERE indexname = 'prompts_user_idx'")[0][0] == 1
    assert dst.query("SELECT count(*) FROM pg_trigger WHERE tgname = 'events_touch'")[0][0] == 1
    # generated column recomputed; identity continues after the copied ids
    row = dst.query("INSERT INTO public.users (email) VALUES ('new@x.org') RETURNING id, email_domain")[0]
    assert row == (301, "x.org")
    # the source was never written
    assert table_text(src, "public.users", "id") == before
    assert not src.schema_exists("_bpmigrate")
    status = pgcopy.restore_status(dst)
    assert status["complete"] and status["chunks_done"] == status["chunks_planned"]


def test_restore_rerun_is_noop_and_rollback_cleans_target_only(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    src, dst = make_pair(pg_source, pg_target, fresh_pg_db, users=50, prompts=60, events=70)
    pgcopy.run_restore(src, dst, tmp_path, _opts())
    again = pgcopy.run_restore(src, dst, tmp_path, _opts())
    assert again.stages_run == []
    assert dst.row_count("public", "users") == 50
    dropped = pgcopy.drop_user_objects(dst)
    pgcopy.drop_copy_state(dst)
    assert any("users" in d for d in dropped)
    assert dst.tables() == []
    assert "vector" in dst.extensions_installed()  # extensions are left (pgvector step owns them)
    assert src.row_count("public", "users") == 50


def test_restore_overwrites_a_dirty_target(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    src, dst = make_pair(pg_source, pg_target, fresh_pg_db, users=20, prompts=20, events=20)
    dst.execute("CREATE TABLE public.users (junk int); INSERT INTO public.users VALUES (1)")
    pgcopy.run_restore(src, dst, tmp_path, _opts())
    _same_content(src, dst)


_KILL_SCRIPT = """
import sys
from pathlib import Path
from migrate.adapters import pgcopy
from migrate.adapters.postgres import PostgresAdapter
def ad(role, host, port, db, user, bindir):
    return PostgresAdapter(role=role, host=host, port=int(port), dbname=db, user=user, password=None,
                           sslmode=None, bin_dir=bindir)
a = sys.argv[1:]
src = ad("source", *a[0:5]); dst = ad("target", *a[5:10])
pgcopy.run_restore(src, dst, Path(a[10]), pgcopy.RestoreOptions(workers=1, chunk_rows=40, chunk_bytes=1 << 40,
                   pause_s=0.3, analyze=False))
"""


def test_copy_killed_mid_table_resumes_without_duplicates(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    src, dst = make_pair(pg_source, pg_target, fresh_pg_db)
    args = [
        *(src.host, str(src.port), src.dbname, src.user, str(src.bin_dir)),
        *(dst.host, str(dst.port), dst.dbname, dst.user, str(dst.bin_dir)),
        str(tmp_path),
    ]
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, *args], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            done = len(pgcopy.done_chunks(dst))
            if done >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the copy finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    finished = pgcopy.done_chunks(dst)
    plan = pgcopy.load_plan(dst)
    assert 3 <= len(finished) < len(plan)
    assert "data" not in pgcopy.stages_done(dst)
    # rows present on the target are exactly those of finished chunks (the in-flight chunk rolled back)
    copied = sum(r for r, _ in finished.values())
    present = sum(dst.row_count(*t.split(".")) for t in TABLES)
    assert present == copied

    stats = pgcopy.run_restore(src, dst, tmp_path, _opts(chunk_rows=10))  # other settings: the saved plan wins
    assert stats.chunks_skipped == len(finished)
    assert stats.chunks_copied == len(plan) - len(finished)
    _same_content(src, dst)
    for rel in TABLES:
        assert src.row_count(*rel.split(".")) == dst.row_count(*rel.split("."))


def test_validation_catches_a_corrupted_row_naming_table_and_chunk(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    src, dst = make_pair(pg_source, pg_target, fresh_pg_db, users=100, prompts=200, events=50)
    pgcopy.run_restore(src, dst, tmp_path, _opts())
    tables = src.tables()
    chunks = validation_chunks(src, tables, chunk_rows=30, chunk_bytes=1 << 40)
    assert all(v.ok for v in validate_chunks(src, dst, tables, chunks))
    # one float in one embedding, one byte of text: invisible to row counts
    dst.execute(
        "UPDATE public.prompts SET embedding = embedding + array_fill(0.0001, ARRAY[768])::vector "
        "WHERE id = md5('p78')::uuid"
    )
    bad = [v for v in validate_chunks(src, dst, tables, chunks) if not v.ok]
    assert len(bad) == 1
    assert bad[0].chunk.table == "public.prompts"
    assert bad[0].source_rows == bad[0].target_rows
    target_key = dst.query("SELECT md5('p78')::uuid::text")[0][0]
    lo, hi = bad[0].chunk.lo, bad[0].chunk.hi
    assert (lo is None or lo <= target_key) and (hi is None or target_key < hi)
    assert "public.prompts chunk" in bad[0].chunk.describe()
    # a deleted row shows in the counts
    dst.execute("DELETE FROM app.events WHERE id = 7")
    bad = [v for v in validate_chunks(src, dst, tables, chunks) if not v.ok]
    assert {v.chunk.table for v in bad} == {"public.prompts", "app.events"}
    ev = next(v for v in bad if v.chunk.table == "app.events")
    assert ev.source_rows == ev.target_rows + 1


@pytest.mark.parametrize("workers", [1, 3])
def test_copy_chunks_worker_counts(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str], workers: int
) -> None:
    src, dst = make_pair(pg_source, pg_target, fresh_pg_db, users=40, prompts=80, events=30)
    stats = pgcopy.run_restore(
        src, dst, tmp_path, _opts(workers=workers, chunk_rows=7, consistent_snapshot=workers > 1)
    )
    assert stats.rows == 40 + 80 + 30 + 50
    _same_content(src, dst)


def test_post_data_is_all_or_nothing_and_resumes(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    src, dst = make_pair(pg_source, pg_target, fresh_pg_db, users=20, prompts=20, events=20)

    class Stop(Exception):
        pass

    def stop_at_post_data(stage: str) -> None:
        if stage == "post-data":
            raise Stop

    with pytest.raises(Stop):
        pgcopy.run_restore(src, dst, tmp_path, _opts(), on_stage=stop_at_post_data)
    assert pgcopy.stages_done(dst) == {"pre-data", "plan", "data", "large-objects", "sequences"}
    # a clashing object makes one post-data statement fail: nothing of post-data may stay behind
    dst.execute("CREATE INDEX prompts_user_idx ON public.nokey (a)")
    with pytest.raises(Exception, match="prompts_user_idx"):
        pgcopy.run_restore(src, dst, tmp_path, _opts())
    user_keys = (
        "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
        "WHERE n.nspname IN ('public', 'app') AND c.contype IN ('p', 'f')"
    )
    assert dst.query(user_keys)[0][0] == 0
    assert "post-data" not in pgcopy.stages_done(dst)
    dst.execute("DROP INDEX public.prompts_user_idx")
    stats = pgcopy.run_restore(src, dst, tmp_path, _opts())
    assert stats.stages_run == ["post-data"]
    assert dst.query(user_keys)[0][0] == 2 + 3  # foreign keys + primary keys
    _same_content(src, dst)
