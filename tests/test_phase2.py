"""Phase 2 steps (plan/apply/verify/rollback) through real StepContexts against real PostgreSQL and Redis servers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.postgres import nearest_ids
from migrate.config import EnvConfig, PgEndpoint, RedisEndpoint
from migrate.errors import StepFailed
from migrate.testing import make_context
from phases.p2_data._common import extension_findings
from phases.p2_data.data_validate import DataValidate
from phases.p2_data.pg_backup import PgBackup
from phases.p2_data.pgvector import PgVector
from phases.p2_data.rds_restore import RdsRestore
from phases.p2_data.redis_migrate import RedisMigrate
from phases.p2_data.redis_verify import RedisVerify
from tests.pg_data_helpers import make_pair
from tests.test_redis_copy import seed


def pg_env(src: Any, dst: Any) -> EnvConfig:
    def ep(a: Any) -> PgEndpoint:
        return PgEndpoint(host=a.host, port=a.port, dbname=a.dbname, user=a.user, bin_dir=a.bin_dir)

    return EnvConfig(name="sandbox", kind="sandbox", postgres={"source": ep(src), "target": ep(dst)})


def redis_env(src: Any, dst: Any, *, cluster_mode: bool = False) -> EnvConfig:
    return EnvConfig(
        name="sandbox",
        kind="sandbox",
        redis={
            "source": RedisEndpoint(host=src.host, port=src.port),
            "target": RedisEndpoint(host=dst.host, port=dst.port, cluster_mode=cluster_mode),
        },
    )


SMALL = {"chunk_rows": 50, "chunk_mb": 1024, "analyze": False}


def test_postgres_steps_end_to_end(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    src, dst = make_pair(pg_source, pg_target, fresh_pg_db, users=120, prompts=150, events=200)
    env = pg_env(src, dst)

    step_v = PgVector()
    ctx = make_context(tmp_path, env, "pgvector")
    assert [c.action for c in step_v.plan(ctx).changes] == ["create"]
    assert step_v.apply(ctx)["created"] is True
    assert all(c.ok for c in step_v.verify(ctx))
    assert step_v.plan(ctx).is_noop

    backup = PgBackup()
    ctx = make_context(tmp_path, env, "pg-backup")
    out = backup.apply(ctx)
    assert out["size"] > 0 and len(out["sha256"]) == 64 and Path(out["path"]).is_file()
    assert ctx.recorded_artifacts[0][2] == out["sha256"]
    vctx = make_context(tmp_path, env, "pg-backup", upstream={"pg-backup": out})
    assert all(c.ok for c in backup.verify(vctx)), backup.verify(vctx)
    with Path(out["path"]).open("r+b") as fh:  # a flipped byte is caught by the checksum re-read
        fh.seek(out["size"] // 2)
        byte = fh.read(1)
        fh.seek(out["size"] // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert not next(c for c in backup.verify(vctx) if c.name.startswith("sha256")).ok
    # the damaged file is not the one recorded (size/sha): apply re-takes it
    retaken = backup.apply(make_context(tmp_path, env, "pg-backup", upstream={"pg-backup": out}))
    assert retaken["reused"] is False and Path(retaken["path"]).is_file()

    restore = RdsRestore()
    ctx = make_context(tmp_path, env, "rds-restore", settings=SMALL)
    plan = restore.plan(ctx)
    assert not plan.blocking
    assert any(c.target == "rows of public.prompts" for c in plan.changes)
    out = restore.apply(ctx)
    assert out["rows_copied"] == 120 + 150 + 200 + 50
    assert out["chunks_total"] >= 8
    assert ctx.recorded_intents[0][0] == "restore"
    assert any(k.startswith("chunk:public.prompts#") for k in ctx.checkpoints.all())
    assert all(c.ok for c in restore.verify(ctx))
    assert restore.plan(ctx).is_noop  # complete: nothing left to do

    validate = DataValidate()
    vctx = make_context(tmp_path, env, "data-validate", settings={"chunk_rows": 40, "chunk_mb": 1024})
    vout = validate.apply(vctx)
    assert vout["rows"]["public.prompts"] == 150 and vout["nearest_neighbours"]["match"] is True
    assert len(vout["nearest_neighbours"]["ids"]) == 10
    prompts = next(t for t in src.tables() if t.qualified == "public.prompts")
    assert vout["nearest_neighbours"]["ids"] == nearest_ids(src, prompts, "embedding")  # the real pgvector query
    assert all(c.ok for c in validate.verify(vctx))
    again = validate.apply(vctx)  # resumable: every chunk was recorded as equal
    assert again["chunks_resumed"] == again["chunks"]
    assert again["nearest_neighbours"] == vout["nearest_neighbours"]

    dst.execute("UPDATE public.users SET note = note || 'x' WHERE id = 17")
    fresh = make_context(tmp_path, env, "data-validate", settings={"chunk_rows": 40, "chunk_mb": 1024})
    with pytest.raises(StepFailed) as err:
        validate.apply(fresh)
    assert "table public.users chunk" in str(err.value)
    assert "same row count, different content checksum" in str(err.value)

    restore.rollback(ctx)
    assert dst.tables() == []
    assert not dst.schema_exists("_bpmigrate")
    assert src.row_count("public", "users") == 120
    step_v.rollback(make_context(tmp_path, env, "pgvector", upstream={"pgvector": {"created": True}}))
    assert "vector" not in dst.extensions_installed()


def test_rds_restore_refuses_source_as_target(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    src, _ = make_pair(pg_source, pg_target, fresh_pg_db, users=5, prompts=5, events=5)
    env = pg_env(src, src)
    with pytest.raises(Exception, match="same database"):
        RdsRestore().apply(make_context(tmp_path, env, "rds-restore", settings=SMALL))
    assert src.row_count("public", "users") == 5


def test_extension_parity_blocks_when_a_table_needs_a_missing_extension(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str], monkeypatch: Any
) -> None:
    src, dst = make_pair(pg_source, pg_target, fresh_pg_db, users=5, prompts=5, events=5)
    uses = {u.name: u.tables for u in src.extension_uses()}
    assert "public.prompts" in uses["vector"]
    assert extension_findings(src, dst) == []
    # a target whose allow-list lacks pgvector (as pgserver lacks uuid-ossp/pgcrypto)
    monkeypatch.setattr(dst, "extensions_available", lambda: {"plpgsql": "1.0"})
    findings = extension_findings(src, dst)
    assert [f.level for f in findings] == ["block"]
    assert "vector" in findings[0].message and "public.prompts" in findings[0].message


def test_redis_steps_end_to_end(tmp_path: Path, fresh_redis: Any, redis_source: Any, redis_target: Any) -> None:
    from migrate.adapters.redis import RedisAdapter

    env = redis_env(redis_source, redis_target)
    src = RedisAdapter(role="source", host=redis_source.host, port=redis_source.port)
    tgt = RedisAdapter(role="target", host=redis_target.host, port=redis_target.port)
    seed(src.client, per_db=30)
    step = RedisMigrate()
    ctx = make_context(tmp_path, env, "redis-migrate", settings={"batch": 20})
    plan = step.plan(ctx)
    assert len(plan.changes) == 3 and "migrate" in plan.changes[0].detail
    out = step.apply(ctx)
    assert out["dbs"] == {"0": 181, "1": 181, "2": 181} and out["method"]["1"] == "migrate"
    assert all(c.ok for c in step.verify(ctx))
    assert step.plan(ctx).is_noop  # all DBs recorded done

    verify = RedisVerify()
    vctx = make_context(tmp_path, env, "redis-verify", settings={"sample": 0})
    assert verify.apply(vctx)["keys_compared"] == 3 * 181
    tgt.client(1).set(b"k1:3:str", b"changed")
    tgt.client(2).set(b"only-on-target", b"x")
    with pytest.raises(StepFailed) as err:
        verify.apply(vctx)
    text = str(err.value)
    assert "k1:3:str" in text and "only-on-target" in text

    tgt.client(0).set(b"pre-existing", b"1")
    step.rollback(ctx)
    assert tgt.keyspace() == {0: 1, 2: 1}
    assert src.keyspace() == {0: 181, 1: 181, 2: 181}
    assert ctx.checkpoints.all() == {}


def test_redis_migrate_cluster_mode_warns_and_resumes(
    tmp_path: Path, fresh_redis: Any, redis_source: Any, redis_target: Any
) -> None:
    from migrate.adapters.redis import RedisAdapter

    env = redis_env(redis_source, redis_target, cluster_mode=True)
    src = RedisAdapter(role="source", host=redis_source.host, port=redis_source.port)
    tgt = RedisAdapter(role="target", host=redis_target.host, port=redis_target.port)
    seed(src.client, per_db=10)
    settings = {"db_prefix": {"1": "sessions:", "2": "ratelimit:"}, "batch": 10}
    step = RedisMigrate()
    ctx = make_context(tmp_path, env, "redis-migrate", settings=settings)
    plan = step.plan(ctx)
    warn = [f for f in plan.findings if f.level == "warn"]
    assert warn and "cluster mode" in warn[0].message and "sessions:" in warn[0].message
    # an earlier run finished DB 0 and stopped in DB 1: it resumes there
    ctx.checkpoints.put("db0", {"done": True, "keys": 61})
    out = step.apply(ctx)
    assert out["method"] == {"1": "dump", "2": "dump"}
    assert tgt.dbsize(0) == 2 * 61  # DB 0 was not copied again
    assert tgt.client(0).exists(b"sessions:k1:0:hash") and tgt.client(0).exists(b"ratelimit:k2:9:zset")
    vctx = make_context(tmp_path, env, "redis-verify", settings={"db_prefix": settings["db_prefix"], "sample": 0})
    with pytest.raises(StepFailed, match="db 0"):
        RedisVerify().apply(vctx)  # DB 0's keys are missing (the checkpoint lied on purpose)


def test_pg_backup_is_bound_to_its_source_and_ledger(
    tmp_path: Path, pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str]
) -> None:
    src, dst = make_pair(pg_source, pg_target, fresh_pg_db, users=5, prompts=5, events=5)
    env = pg_env(src, dst)
    backup = PgBackup()
    out = backup.apply(make_context(tmp_path, env, "pg-backup"))
    meta = json.loads(Path(out["path"] + ".json").read_text())
    assert meta["identity"]["database"] == src.dbname and meta["identity"]["system_identifier"]
    assert out["identity"]["lsn"] and out["reused"] is False and "sha256" in backup.summary(out)

    # same ledger, same source, no write since: reused (plan says so, apply does it)
    ctx = make_context(tmp_path, env, "pg-backup", upstream={"pg-backup": out})
    assert backup.plan(ctx).is_noop
    again = backup.apply(ctx)
    assert again["reused"] is True and again["sha256"] == out["sha256"]

    # a new ledger (sandbox reset: nothing recorded) re-takes instead of reusing the old rehearsal's dump
    fresh_ledger = backup.plan(make_context(tmp_path, env, "pg-backup"))
    assert "re-take (the existing file is not the one recorded in this environment's ledger" in fresh_ledger.changes[0].detail

    # writes since: stale (max_age_h 0), the reason named; a young backup is accepted when max_age_h allows it
    src.execute("INSERT INTO public.nokey VALUES (999, 'written after the backup')")
    stale = backup.plan(ctx)
    assert not stale.is_noop and "the source was written since" in stale.changes[0].detail
    lenient = make_context(tmp_path, env, "pg-backup", upstream={"pg-backup": out}, settings={"max_age_h": 1})
    assert backup.plan(lenient).is_noop

    # --refresh re-takes deliberately, the reason recorded with the intent and in the outputs
    ctx.refresh = True
    fresh = backup.apply(ctx)
    assert fresh["reused"] is False and fresh["reason"] == "re-take requested with --refresh"
    assert ctx.recorded_intents[-1] == ("pg-dump", {"source": src.endpoint, "path": out["path"], "reason": fresh["reason"]})
    assert not Path(out["path"] + ".prev").exists()  # the previous dump was kept only until the new one read back
    checks = backup.verify(make_context(tmp_path, env, "pg-backup", upstream={"pg-backup": fresh}))
    assert all(c.ok for c in checks), checks

    # verify proves the identity: the same file recorded against another source fails
    other = dict(fresh, identity={**fresh["identity"], "system_identifier": "1"})
    checks = backup.verify(make_context(tmp_path, env, "pg-backup", upstream={"pg-backup": other}))
    assert [c.name for c in checks if not c.ok] == ["taken from this source (system identifier, database)"]


def test_sandbox_reset_archives_artifacts_beside_the_ledger(tmp_path: Path) -> None:
    from migrate.sandbox.orchestrate import SandboxPaths, _wipe

    env_dir = tmp_path / "state" / "sandbox"
    (env_dir / "artifacts" / "pg-backup").mkdir(parents=True)
    (env_dir / "artifacts" / "pg-backup" / "db.dump").write_bytes(b"old rehearsal")
    ledger = tmp_path / "state" / "sandbox.db"
    ledger.write_bytes(b"ledger")
    p = SandboxPaths(
        env_dir=env_dir,
        data_dir=env_dir,
        endpoints=env_dir / "endpoints.json",
        tfvars=env_dir / "terraform.tfvars.json",
        lock=env_dir / "sandbox.lock",
        terraform_state=env_dir / "terraform",
        ledger=ledger,
    )
    notes = _wipe(p, env_dir, "sandbox", lambda _m: None)
    assert not (env_dir / "artifacts").exists() and not ledger.exists()
    archived = list((tmp_path / "state" / "archive").iterdir())
    kept = next(a for a in archived if a.name.endswith("-artifacts"))
    assert (kept / "pg-backup" / "db.dump").read_bytes() == b"old rehearsal"
    assert any(str(kept) in n for n in notes) and any("archived the ledger" in n for n in notes)


def test_apply_refresh_reapplies_a_verified_step_with_the_reason_in_the_ledger(tmp_path: Path) -> None:
    """`apply --step X --refresh` (how pg-backup is re-taken on purpose): a verified step is planned and applied
    again, the ledger records why; without --step it is refused with the command that works."""
    import sqlite3

    from tests.engine_helpers import make_project, run_cli, states

    project = make_project(tmp_path)
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0
    assert "nothing to do" in run_cli(project, "apply", "--step", "touch-a", "--yes").stdout
    r = run_cli(project, "apply", "--step", "touch-a", "--refresh", "--yes")
    assert r.returncode == 0, r.stderr + r.stdout
    assert states(project)["touch-a"] == "verified"
    with sqlite3.connect(project / "state" / "test.db") as conn:
        kinds = [k for (k,) in conn.execute("SELECT kind FROM bpm_events WHERE step_id = 'touch-a' ORDER BY id")]
        data = [d for (d,) in conn.execute("SELECT data FROM bpm_events WHERE step_id = 'touch-a' ORDER BY id")]
    assert "refresh" in " ".join(kinds) + " ".join(data)
    assert any("re-take requested by the operator" in d for d in data)
    assert kinds.count(kinds[-1]) >= 2  # verified twice: once per apply
    bad = run_cli(project, "apply", "--phase", "1", "--refresh", "--yes")
    assert bad.returncode != 0 and "bpmigrate apply --step pg-backup --refresh" in bad.stderr
