"""pg-sync: PostgreSQL logical replication between two real PostgreSQL 16 servers (wal_level=logical).

Writes (insert/update/delete, toasted text > 2 kB, vector(768) embeddings) made on the source while the snapshot
copy and the stream run all arrive; the switch leaves both sides identical by data-validate's checksums; a killed
pg-sync (SIGKILL of a subprocess) resumes from its slot; rollback leaves no slot, publication or subscription.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import psycopg
import pytest

from migrate.adapters.postgres import PostgresAdapter
from migrate.config import EnvConfig, PgEndpoint
from migrate.errors import StepFailed
from migrate.testing import make_context
from phases.p2_data.data_validate import DataValidate
from phases.p2_data.pg_sync import PgSyncStep
from phases.p2_data.rds_restore import RdsRestore
from phases.p5_cutover.data_switch import DataSwitch
from tests.pg_data_helpers import adapter

ROOT = Path(__file__).resolve().parent.parent

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, bio text, updated int NOT NULL DEFAULT 0);
ALTER TABLE users ALTER COLUMN bio SET STORAGE EXTERNAL;
CREATE TABLE docs (id bigserial PRIMARY KEY, user_id bigint REFERENCES users (id) ON DELETE CASCADE,
                   body text, embedding vector(768), version int NOT NULL DEFAULT 1);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE INDEX docs_user_idx ON docs (user_id);
CREATE TABLE events (id uuid PRIMARY KEY, doc_id bigint, kind text, at timestamptz DEFAULT now());
"""

SEED = """
INSERT INTO users (email, bio) SELECT 'u' || g || '@example.com',
       CASE WHEN g % 3 = 0 THEN repeat(md5(g::text), 80) END FROM generate_series(1, 200) g;
INSERT INTO docs (user_id, body, embedding)
SELECT 1 + g % 200, repeat(md5((g * 7)::text), 90),
       (SELECT array_agg(sin(g * 0.31 + i * 0.07)::float4 ORDER BY i) FROM generate_series(1, 768) i)::vector
FROM generate_series(1, 400) g;
INSERT INTO events SELECT md5('e' || g)::uuid, 1 + g % 400, 'seed', now() FROM generate_series(1, 300) g;
ANALYZE;
"""

SMALL = {"chunk_rows": 60, "chunk_mb": 1024, "analyze": False}


def env_for(src: PostgresAdapter, dst: PostgresAdapter) -> EnvConfig:
    def ep(a: PostgresAdapter) -> PgEndpoint:
        return PgEndpoint(host=a.host, port=a.port, dbname=a.dbname, user=a.user, bin_dir=a.bin_dir)

    return EnvConfig(name="sandbox", kind="sandbox", postgres={"source": ep(src), "target": ep(dst)})


def _cleanup(src: PostgresAdapter, dst: PostgresAdapter) -> None:
    """Drop what a test may have left, both directions (the switch starts a reverse stream; subscriptions block
    DROP DATABASE; slots retain WAL)."""
    _cleanup_one(src, dst)
    _cleanup_one(dst, src)


def _cleanup_one(src: PostgresAdapter, dst: PostgresAdapter) -> None:
    for sub, _slot in dst.query(
        "SELECT subname, subslotname FROM pg_subscription WHERE subdbid = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())"
    ):
        dst.execute(f'ALTER SUBSCRIPTION "{sub}" DISABLE')
        dst.execute(f'ALTER SUBSCRIPTION "{sub}" SET (slot_name = NONE)')
        dst.execute(f'DROP SUBSCRIPTION "{sub}"')
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = src.query("SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s", [src.dbname])
        if not rows:
            break
        for slot, pid in rows:
            if pid:
                src.execute("SELECT pg_terminate_backend(%s)", [pid])
            else:
                src.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        time.sleep(0.1)


@pytest.fixture()
def pair(
    pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> Iterator[tuple[PostgresAdapter, PostgresAdapter]]:
    src = adapter(pg_source, fresh_pg_db(pg_source), "source")
    dst = adapter(pg_target, fresh_pg_db(pg_target), "target")
    src.execute(SCHEMA)
    src.execute(SEED)
    dst.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield src, dst
    _cleanup(src, dst)


def restore(tmp_path: Path, env: EnvConfig) -> None:
    RdsRestore().apply(make_context(tmp_path, env, "rds-restore", settings=SMALL))


class Writer:
    """Insert/update/delete on the source (toasted text, embeddings) until stopped; counts what it did."""

    def __init__(self, src: PostgresAdapter, seed: int = 1) -> None:
        self.conn = psycopg.connect(src.conninfo(), autocommit=True)
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.ops = {"insert": 0, "update": 0, "delete": 0}
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.error: BaseException | None = None

    def one(self) -> None:
        r = self.rng.random()
        big = os.urandom(1800).hex()  # 3600 chars, incompressible: stored out of line (TOAST)
        vec = "[" + ",".join(f"{self.rng.uniform(-1, 1):.5f}" for _ in range(768)) + "]"
        c = self.conn
        if r < 0.45:
            with c.transaction():
                uid = c.execute(
                    "INSERT INTO users (email, bio) VALUES (%s, %s) RETURNING id", [f"w{self.rng.random()}@x", big]
                ).fetchone()[0]
                c.execute("INSERT INTO docs (user_id, body, embedding) VALUES (%s, %s, %s::vector)", [uid, big, vec])
                c.execute("INSERT INTO events (id, doc_id, kind) VALUES (gen_random_uuid(), %s, 'w')", [uid])
            self.ops["insert"] += 1
        elif r < 0.8:
            target = self.rng.randint(1, 400)
            if self.rng.random() < 0.5:  # leaves the toasted body unchanged (sent as 'unchanged toast' in WAL)
                c.execute("UPDATE docs SET version = version + 1 WHERE id = %s", [target])
            else:
                c.execute("UPDATE docs SET body = %s, embedding = %s::vector WHERE id = %s", [big, vec, target])
            c.execute("UPDATE users SET updated = updated + 1 WHERE id = %s", [self.rng.randint(1, 200)])
            self.ops["update"] += 1
        else:
            c.execute("DELETE FROM events WHERE id = (SELECT id FROM events ORDER BY random() LIMIT 1)")
            c.execute("DELETE FROM docs WHERE id = %s", [self.rng.randint(1, 400)])
            self.ops["delete"] += 1

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.paused.is_set():
                    time.sleep(0.01)
                    continue
                self.one()
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.conn.close()
        assert self.error is None, self.error


def wait_until(fn: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def slots(src: PostgresAdapter) -> list[str]:
    return [
        str(r[0]) for r in src.query("SELECT slot_name FROM pg_replication_slots WHERE database = %s", [src.dbname])
    ]


def assert_identical(tmp_path: Path, env: EnvConfig) -> dict[str, Any]:
    """data-validate's own check (exact counts + content checksums per chunk) on a fresh context."""
    return DataValidate().apply(make_context(tmp_path, env, "data-validate", settings={"chunk_rows": 100}))


def test_writes_during_copy_and_stream_arrive_and_switch_leaves_sides_identical(
    tmp_path: Path, pair: tuple[PostgresAdapter, PostgresAdapter]
) -> None:
    src, dst = pair
    env = env_for(src, dst)
    restore(tmp_path, env)
    step = PgSyncStep()
    settings = {"chunk_rows": 50, "chunk_mb": 1024, "pause_between_chunks_s": 0.05, "workers": 2}
    ctx = make_context(tmp_path, env, "pg-sync", settings=settings)
    plan = step.plan(ctx)
    assert not plan.blocking, plan.findings
    assert any(c.target.startswith("replication slot") for c in plan.changes)
    with Writer(src) as writer:
        out = step.apply(ctx)  # snapshot copy (chunked, paused) + subscription, all while the writer runs
        assert out["rows_copied"] > 0 and out["slot"] in slots(src)
        assert [a for a, _ in ctx.recorded_intents][:4] == [
            "publication",
            "create-slot",
            "snapshot-copy",
            "create-subscription",
        ]
        time.sleep(1.0)  # keep writing while the stream runs
        vctx = make_context(tmp_path, env, "pg-sync", settings=settings, upstream={"pg-sync": out})
        checks = {c.name: c for c in step.verify(vctx)}
        assert checks["subscription enabled with a running apply worker (target pg_stat_subscription)"].ok
        assert checks["replication slot exists and is active (source pg_replication_slots)"].ok
        assert checks["no orphaned bpmigrate replication slot on the source"].ok
        assert any(n.startswith("row-count drift public.docs") for n in checks)
    assert sum(writer.ops.values()) > 20 and all(writer.ops.values()), writer.ops
    # a re-apply is a no-op (the subscription exists and keeps streaming)
    again = step.apply(make_context(tmp_path, env, "pg-sync", settings=settings))
    assert again["resumed_from_slot"] is True

    switch = DataSwitch()
    sctx = make_context(tmp_path, env, "data-switch", upstream={"pg-sync": out})
    assert step.plan(ctx).in_place  # streaming
    sout = switch.apply(sctx)
    assert sout["write_downtime_s"] >= 0 and "write_downtime_s" in sctx.recorded_metrics
    assert sout["sequences_set"] == 2
    valid = assert_identical(tmp_path, env)
    assert valid["rows"]["public.docs"] == src.row_count("public", "docs")
    # sequences carried: the next id on the target continues after the source's
    assert dst.query("SELECT last_value FROM users_id_seq") == src.query("SELECT last_value FROM users_id_seq")
    # the stream is detached: no slot, publication or subscription left anywhere
    assert slots(src) == [] and src.query("SELECT pubname FROM pg_publication") == []
    assert dst.query("SELECT subname FROM pg_subscription") == [] or all(
        r[0] != out["subscription"] for r in dst.query("SELECT subname FROM pg_subscription")
    )
    final = switch.verify(make_context(tmp_path, env, "data-switch", upstream={"pg-sync": out, "data-switch": sout}))
    assert all(c.ok for c in final), final


CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from migrate.config import EnvConfig
from migrate.testing import make_context
from phases.p2_data.pg_sync import PgSyncStep
from pathlib import Path
spec = json.loads(sys.argv[2])
env = EnvConfig.model_validate(spec["env"])
ctx = make_context(Path(spec["tmp"]), env, "pg-sync", settings=spec["settings"])
PgSyncStep().apply(ctx)
print("FINISHED", flush=True)
"""


def test_killed_pg_sync_resumes_from_its_slot(tmp_path: Path, pair: tuple[PostgresAdapter, PostgresAdapter]) -> None:
    src, dst = pair
    env = env_for(src, dst)
    restore(tmp_path, env)
    spec = {
        "env": env.model_dump(mode="json"),
        "tmp": str(tmp_path / "child"),
        "settings": {"pause_before_subscribe_s": 60},
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ROOT), json.dumps(spec)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def copied() -> bool:
            try:
                return bool(dst.query("SELECT 1 FROM _bpmigrate.sync_state WHERE key = 'copy' AND value = 'done'"))
            except Exception:  # noqa: BLE001 - table not created yet
                return False

        wait_until(copied, 60, "the child's snapshot copy")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert len(slots(src)) == 1  # the slot survives the kill and retains every change since the snapshot
    with Writer(src, seed=7) as writer:
        while sum(writer.ops.values()) < 40:
            time.sleep(0.05)
    ctx = make_context(tmp_path, env, "pg-sync")
    out = PgSyncStep().apply(ctx)
    assert out["resumed_from_slot"] is True
    assert "create-slot" not in [a for a, _ in ctx.recorded_intents]  # no new slot, no second copy
    assert any("resuming from slot" in line for line in ctx.recorded_logs)
    DataSwitch().apply(make_context(tmp_path, env, "data-switch", upstream={"pg-sync": out}))
    assert_identical(tmp_path, env)


def test_interrupted_copy_restarts_with_a_fresh_slot(
    tmp_path: Path, pair: tuple[PostgresAdapter, PostgresAdapter]
) -> None:
    src, dst = pair
    env = env_for(src, dst)
    restore(tmp_path, env)
    step = PgSyncStep()
    sync_ctx = make_context(tmp_path, env, "pg-sync")
    from phases._sync import _pgsync

    sync = _pgsync(sync_ctx)
    exported = sync.create_slot_exported()  # a copy that died: slot present, copy never marked done
    exported.close()
    sync.put_state(slot=sync.slot, copy="running")
    with Writer(src, seed=3) as writer:
        out = step.apply(sync_ctx)
        while sum(writer.ops.values()) < 30:
            time.sleep(0.05)
    assert out["resumed_from_slot"] is False
    assert [a for a, _ in sync_ctx.recorded_intents][1] == "drop-stale-slot"
    DataSwitch().apply(make_context(tmp_path, env, "data-switch", upstream={"pg-sync": out}))
    assert_identical(tmp_path, env)


def test_rollback_leaves_no_slot_publication_or_subscription(
    tmp_path: Path, pair: tuple[PostgresAdapter, PostgresAdapter]
) -> None:
    src, dst = pair
    env = env_for(src, dst)
    restore(tmp_path, env)
    step = PgSyncStep()
    ctx = make_context(tmp_path, env, "pg-sync")
    out = step.apply(ctx)
    assert slots(src) == [out["slot"]]
    rctx = make_context(tmp_path, env, "pg-sync", upstream={"pg-sync": out})
    step.rollback(rctx)
    assert slots(src) == []
    assert src.query("SELECT pubname FROM pg_publication") == []
    assert [r for r in dst.query("SELECT subname FROM pg_subscription") if r[0] == out["subscription"]] == []
    step.rollback(rctx)  # idempotent: absent things are a no-op
    checks = {c.name: c for c in step.verify(rctx)}
    assert not checks["replication slot exists and is active (source pg_replication_slots)"].ok


def test_prerequisites_block_keyless_tables_and_replica_identity_full_fixes_it(
    tmp_path: Path, pair: tuple[PostgresAdapter, PostgresAdapter]
) -> None:
    src, dst = pair
    src.execute(
        "CREATE TABLE nokey (a int, b text); INSERT INTO nokey SELECT g, 'r' || g FROM generate_series(1, 20) g"
    )
    env = env_for(src, dst)
    restore(tmp_path, env)
    step = PgSyncStep()
    plan = step.plan(make_context(tmp_path, env, "pg-sync"))
    assert any("public.nokey" in f.message and f.level == "block" for f in plan.findings)
    with pytest.raises(StepFailed, match=r"public\.nokey"):
        step.apply(make_context(tmp_path, env, "pg-sync"))
    assert slots(src) == []  # refused before creating anything
    ctx = make_context(tmp_path, env, "pg-sync", settings={"replica_identity_full": True})
    assert not step.plan(ctx).blocking
    out = step.apply(ctx)
    assert out["replica_identity_full"] == ["public.nokey"]
    src.execute("UPDATE nokey SET b = 'changed' WHERE a = 3; DELETE FROM nokey WHERE a = 4")
    from phases._sync import _pgsync

    sync = _pgsync(ctx)
    sync.wait_confirmed(sync.fence_lsn(), 30)
    assert dst.query("SELECT b FROM nokey WHERE a = 3") == [("changed",)]
    assert dst.query("SELECT count(*) FROM nokey") == [(19,)]
    step.rollback(make_context(tmp_path, env, "pg-sync", upstream={"pg-sync": out}))
    assert src.query("SELECT relreplident FROM pg_class WHERE relname = 'nokey'") == [("d",)]
    assert slots(src) == []


def test_prerequisites_report_a_missing_replication_privilege(
    tmp_path: Path, pair: tuple[PostgresAdapter, PostgresAdapter]
) -> None:
    src, dst = pair
    src.execute("CREATE ROLE sync_nopriv LOGIN")
    try:
        weak = PostgresAdapter(
            role="source",
            host=src.host,
            port=src.port,
            dbname=src.dbname,
            user="sync_nopriv",
            password=None,
            sslmode=None,
            bin_dir=src.bin_dir,
        )
        from migrate.adapters.pgsync import PgSync

        problems = PgSync(weak, dst, "bpm_test").prerequisites(weak.tables())
        assert any("REPLICATION privilege" in p.message for p in problems)
    finally:
        src.execute("DROP ROLE sync_nopriv")


def test_types_that_bite_survive_copy_stream_and_switch(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    """The data phase's schema (jsonb, arrays, enum, inet, bytea, identity + generated columns, triggers, a key-less
    table, a standalone sequence) through pg-sync and data-switch, with writes on the source while it streams."""
    from tests.pg_data_helpers import make_pair

    src, dst = make_pair(pg_source, pg_target, fresh_pg_db, users=60, prompts=80, events=90)
    try:
        dst.execute("CREATE EXTENSION IF NOT EXISTS vector")
        env = env_for(src, dst)
        restore(tmp_path, env)
        out = PgSyncStep().apply(make_context(tmp_path, env, "pg-sync", settings={"replica_identity_full": True}))
        assert out["replica_identity_full"] == ["public.nokey"]
        src.execute(
            "INSERT INTO public.users (email, profile, tags, note, mood) VALUES "
            "(E'new\\t@example.com', '{\"a\": [1, null]}', ARRAY['x', NULL], E'line\\nbreak\\\\', 'calm');"
            "UPDATE public.users SET email = 'changed@corp.io', avatar = '\\x00ff00' WHERE id = 5;"
            "DELETE FROM app.events WHERE id <= 10;"
            "INSERT INTO app.events (prompt_id, payload) SELECT id, '{}' FROM public.prompts LIMIT 3;"
            "UPDATE public.nokey SET b = 'upd' WHERE a = 7; DELETE FROM public.nokey WHERE a = 8;"
            "SELECT nextval('public.standalone_seq');"
        )
        sout = DataSwitch().apply(make_context(tmp_path, env, "data-switch", upstream={"pg-sync": out}))
        assert sout["sequences_set"] >= 3
        valid = assert_identical(tmp_path, env)
        assert valid["rows"]["public.nokey"] == 49
        assert dst.query("SELECT email_domain FROM public.users WHERE id = 5") == [("corp.io",)]  # generated
    finally:
        _cleanup(src, dst)
        PgSyncStep().rollback(
            make_context(
                tmp_path,
                env_for(src, dst),
                "pg-sync",
                upstream={"pg-sync": {"name": None, "replica_identity_full": ["public.nokey"]}},
            )
        )
