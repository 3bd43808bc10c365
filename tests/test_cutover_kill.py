"""Kill -9 at random points inside data-switch and dns-cutover, then resume: the same end state, no acknowledged
write lost or doubled, while a logging writer drives traffic through the router the whole time."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.aws_route53 import from_config
from migrate.testing import make_context
from phases.p2_data.pg_sync import PgSyncStep
from phases.p2_data.rds_restore import RdsRestore
from tests.cutover_stack import (
    LoggingWriter,
    Stack,
    audit,
    run_step_child,
    stack,  # noqa: F401 - fixture
    step_class,
    step_context,
)


def _job(
    work: Path, stk: Stack, step: str, settings: dict[str, Any], upstream: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    job = {
        "work": str(work / step),
        "env": stk.env.model_dump(mode="json"),
        "step": step,
        "settings": settings,
        "upstream": upstream,
        "checkpoints": str(work / f"{step}.checkpoints.json"),
    }
    path = work / f"{step}.job.json"
    path.write_text(json.dumps(job))
    return path, job


def _kill_then_resume(
    path: Path, job: dict[str, Any], rng: random.Random, window_s: float
) -> tuple[list[float], dict[str, Any]]:
    """SIGKILL the step at random instants until a run completes on its own (at most 3 kills), then resume it."""
    kills: list[float] = []
    for _ in range(3):
        at = round(rng.uniform(0.2, window_s), 2)
        code = run_step_child(path, at)
        if code != -9:
            assert code == 0, f"the child failed (exit {code})"
            break
        kills.append(at)
    out = step_class(job["step"])().apply(step_context(job))  # resume (a no-op when the last run completed)
    return kills, out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [7, 23])
def test_kill_9_inside_data_switch_and_dns_cutover_then_resume(stack: Stack, tmp_path: Path, seed: int) -> None:  # noqa: F811
    rng = random.Random(seed)
    env = stack.env
    work = tmp_path / "work"
    work.mkdir()
    with LoggingWriter(stack.router_url) as writer:
        writer.wait_acked(20)
        RdsRestore().apply(make_context(work / "r", env, "rds-restore", settings={"analyze": False}))
        pg_out = PgSyncStep().apply(make_context(work / "p", env, "pg-sync"))
        writer.wait_acked(20)
        settings = {"fences": stack.fences(), "catchup_timeout_s": 30}
        path, job = _job(work, stack, "data-switch", settings, {"pg-sync": pg_out})
        kills, ds_out = _kill_then_resume(path, job, rng, 3.0)
        assert ds_out["switched_at"] and ds_out["reverse"]["name"].endswith("_rev")
        writer.wait_acked(30)  # the stacks were released: writes flow again (to the target)
        up = {"pg-sync": pg_out, "data-switch": ds_out}
        path, job = _job(work, stack, "dns-cutover", stack.dns_settings(sample_with="http", min_sample=20), up)
        dns_kills, _dns_out = _kill_then_resume(path, job, rng, 6.0)
        writer.wait_acked(30)
    weights = from_config(env).weights(_dns_out["zone_id"], _dns_out["record"], "CNAME")
    assert weights == {"old-stack": 0, "new-stack": 100}
    result = audit(stack.dst, writer.log.acked)
    assert result["lost"] == 0 and result["duplicated"] == 0, (result, kills, dns_kills)
    assert writer.log.by_backend.get("new.betterprompts.test", 0) > 0
    checks = step_class("data-switch")().verify(step_context(json.loads((work / "data-switch.job.json").read_text())))
    assert all(c.ok for c in checks), checks
    # db-rollback-point's way back while the reverse stream runs: nothing restored, data-switch's rollback named
    from phases.p5_cutover.db_rollback_point import DbRollbackPoint

    rbp = make_context(work / "rbp", env, "db-rollback-point", upstream={"pg-sync": pg_out})
    rbp.checkpoints.put("point", {"instant": 1_700_000_000.0, "rds_instance_id": "bp-db", "backup_path": None})
    rbp.force_past_fence = True
    DbRollbackPoint().rollback(rbp)
    assert any("rollback --step data-switch" in line for line in rbp.recorded_logs)
    assert "rds-point-in-time-restore" not in [a for a, _ in rbp.recorded_intents]
    # decommission: refused while the reverse stream runs, unless it is stopped on purpose; then the old stack's
    # process is stopped (the sandbox's Compose stand-in)
    from phases.p6_cleanup.decommission import Decommission

    backup = tmp_path / "final.dump"
    backup.write_bytes(b"PGDMP final")
    sha = __import__("hashlib").sha256(backup.read_bytes()).hexdigest()
    dec_up = {
        "final-backup": {"path": str(backup), "sha256": sha},
        "dns-cutover": _dns_out,
        "post-cutover-watch": {"ends_ts": 1_700_000_000.0, "ends_at": "2023-11-14T22:13:20+00:00", "clean": True},
        "pg-sync": pg_out,
        "data-switch": ds_out,
    }
    old = {"kind": "process", "config_file": str(stack.config_file("app-old"))}
    keep = make_context(work / "dec", env, "decommission", settings={"old_stack": old}, upstream=dec_up)
    failed = [c.name for c in Decommission().preconditions(keep) if not c.ok]
    assert failed == ["reverse stream stopped on purpose"]
    stop = make_context(
        work / "dec", env, "decommission", settings={"old_stack": old, "reverse_stream": "stop"}, upstream=dec_up
    )
    out = Decommission().apply(stop)
    assert out["method"] == "process" and out["pid"] == stack.pids["app-old"] and out["reverse_stream_stopped"]
    assert all(c.ok for c in Decommission().verify(stop))
    assert stack.src.query("SELECT count(*) FROM pg_subscription")[0][0] == 0  # the reverse stream is gone
