"""The engine end to end through the real CLI in subprocesses, on the tiny engine-test project."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine_helpers import REPO, effects, event_count, make_project, run_cli, states

PHASE1 = ["touch-a", "touch-b", "flaky", "touch-c"]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def test_apply_phase_then_rerun_is_noop(project: Path) -> None:
    r = run_cli(project, "apply", "--phase", "1", "--yes")
    assert r.returncode == 0, r.stderr + r.stdout
    assert all(states(project)[s] == "verified" for s in PHASE1)
    assert effects(project) == ["create a", "create b", "create flaky", "create c"]
    again = run_cli(project, "apply", "--phase", "1", "--yes")
    assert again.returncode == 0
    assert "nothing to do" in again.stdout
    assert len(effects(project)) == 4


def test_outputs_flow_downstream_and_are_redacted(project: Path) -> None:
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0
    assert run_cli(project, "apply", "--step", "touch-b", "--yes").returncode == 0
    out = run_cli(project, "--json", "show", "touch-b")
    details = json.loads(out.stdout)
    assert details["outputs"]["upstream"] == "a"
    raw = (project / "state" / "test.db").read_bytes()
    assert b"hunter2secret" not in raw
    assert "hunter2secret" not in out.stdout
    assert "***" in details["outputs"]["db_url"]


def test_dependency_not_ready_is_refused(project: Path) -> None:
    r = run_cli(project, "apply", "--step", "touch-b", "--yes")
    assert r.returncode == 3
    assert "depends on touch-a" in r.stderr
    assert "bpmigrate --env test apply --step touch-a" in r.stderr
    assert effects(project) == []


def test_no_confirmation_without_yes_on_non_tty(project: Path) -> None:
    r = run_cli(project, "apply", "--step", "touch-a")
    assert r.returncode == 3
    assert "cancelled" in r.stderr and "--yes" in r.stderr
    assert effects(project) == []
    assert states(project).get("touch-a") in (None, "pending")


def test_dry_run_writes_nothing(project: Path) -> None:
    r = run_cli(project, "apply", "--all", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "create a" in r.stdout
    assert not (project / "state" / "test.db").exists()
    assert effects(project) == []


def test_stale_plan_is_refused(project: Path) -> None:
    assert run_cli(project, "plan", "touch-a").returncode == 0
    # the world changes after the plan: a is created by someone else, so apply would now do something else
    work = project / "state" / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "a").write_text("made by hand")
    r = run_cli(project, "apply", "--step", "touch-a", "--yes")
    assert r.returncode == 3, r.stderr
    assert "stale" in r.stderr
    assert "bpmigrate --env test plan touch-a" in r.stderr
    # re-planning accepts the new reality
    assert run_cli(project, "plan", "touch-a").returncode == 0
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0


def test_rollback_reverse_order_and_fence(project: Path) -> None:
    assert run_cli(project, "apply", "--phase", "1", "--yes").returncode == 0
    assert run_cli(project, "apply", "--step", "fence", "--yes").returncode == 0
    refused = run_cli(project, "rollback", "--to", "touch-a", "--yes")
    assert refused.returncode == 3
    assert "one-way" in refused.stderr and "--force-past-fence" in refused.stderr
    assert states(project)["fence"] == "verified"
    ok = run_cli(project, "rollback", "--to", "touch-a", "--yes", "--force-past-fence")
    assert ok.returncode == 0, ok.stderr
    removed = [e for e in effects(project) if e.startswith("remove")]
    assert removed == ["remove fence", "remove c", "remove flaky", "remove b"]
    assert states(project)["touch-a"] == "verified"
    assert states(project)["touch-b"] == "rolled_back"


def test_rollback_of_nothing_is_a_clear_noop(project: Path) -> None:
    r = run_cli(project, "rollback", "--yes")
    assert r.returncode == 0
    assert "nothing to roll back" in r.stdout
    r2 = run_cli(project, "rollback", "--step", "touch-c", "--yes")
    assert r2.returncode == 0 and "nothing to roll back" in r2.stdout


def test_rollback_refuses_under_live_dependents(project: Path) -> None:
    assert run_cli(project, "apply", "--phase", "1", "--yes").returncode == 0
    r = run_cli(project, "rollback", "--step", "touch-a", "--yes")
    assert r.returncode == 3
    assert "depend on it" in r.stderr


def test_default_rollback_unwinds_last_applied(project: Path) -> None:
    assert run_cli(project, "apply", "--phase", "1", "--yes").returncode == 0
    assert run_cli(project, "rollback", "--yes").returncode == 0
    assert states(project)["touch-c"] == "rolled_back"
    assert states(project)["flaky"] == "verified"


def test_gate_waits_until_approved(project: Path) -> None:
    assert run_cli(project, "apply", "--from", "touch-a", "--yes").returncode == 3
    assert states(project)["fence"] == "verified"
    assert "gated" not in states(project) or states(project)["gated"] != "verified"
    r = run_cli(project, "apply", "--step", "gated", "--yes")
    assert r.returncode == 3 and "approve gated" in r.stderr
    assert run_cli(project, "approve", "gated", "--reason", "window announced").returncode == 0
    assert run_cli(project, "apply", "--step", "gated", "--yes").returncode == 0
    assert states(project)["gated"] == "verified"


def test_apply_failure_then_resume(project: Path) -> None:
    r = run_cli(project, "apply", "--phase", "1", "--yes", env={"BPM_TEST_FAIL": "touch-b"})
    assert r.returncode == 1
    assert "touch-b failed on purpose" in r.stderr
    assert states(project)["touch-b"] == "apply_failed"
    r2 = run_cli(project, "apply", "--yes")
    assert r2.returncode == 3  # stops at the gate, everything before it done
    assert all(states(project)[s] == "verified" for s in PHASE1)


def test_verify_failure_is_recorded(project: Path) -> None:
    r = run_cli(project, "apply", "--step", "touch-a", "--yes", env={"BPM_TEST_VERIFY_FAIL": "touch-a"})
    assert r.returncode == 1
    assert "verify of touch-a failed" in r.stderr
    assert states(project)["touch-a"] == "verify_failed"
    assert run_cli(project, "verify", "touch-a").returncode == 0
    assert states(project)["touch-a"] == "verified"


def test_mark_is_audited(project: Path) -> None:
    assert run_cli(project, "mark", "touch-a", "--as", "skipped", "--reason", "done by hand").returncode == 0
    assert states(project)["touch-a"] == "skipped"
    hist = json.loads(run_cli(project, "--json", "history", "--step", "touch-a").stdout)
    assert any("marked by operator: done by hand" in json.dumps(e["data"]) for e in hist)
    # a skipped dependency satisfies its dependents' ordering ...
    assert run_cli(project, "apply", "--step", "flaky", "--yes").returncode == 0
    # ... but a dependent that needs its outputs says precisely what is missing
    needs = run_cli(project, "apply", "--step", "touch-b", "--yes")
    assert needs.returncode == 3 and "needs output 'file' of step touch-a" in needs.stderr


def test_status_warns_when_step_code_changed(project: Path) -> None:
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0
    module = project / "testphases" / "p1_alpha.py"
    module.write_text(module.read_text().replace('"""Create file a."""', '"""Create file a (edited)."""'))
    out = json.loads(run_cli(project, "--json", "status").stdout)
    assert any("touch-a: its code changed" in w for w in out["warnings"])


def test_hash_chain_detects_tampering(project: Path) -> None:
    assert run_cli(project, "apply", "--phase", "1", "--yes").returncode == 0
    ok = run_cli(project, "history", "--verify-chain")
    assert ok.returncode == 0 and "intact" in ok.stdout
    db = project / "state" / "test.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE bpm_events SET data = replace(data, 'apply_fail', 'apply_ok') WHERE id = 5")
        conn.execute('UPDATE bpm_events SET data = \'{"to":"verified"}\' WHERE id = 7')
    bad = run_cli(project, "history", "--verify-chain")
    assert bad.returncode == 4
    assert "event 7" in bad.stderr and "modified" in bad.stderr


def test_hash_chain_detects_removed_tail(project: Path) -> None:
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0
    db = project / "state" / "test.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM bpm_events WHERE id = (SELECT max(id) FROM bpm_events)")
    bad = run_cli(project, "history", "--verify-chain")
    assert bad.returncode == 4 and "removed" in bad.stderr


def test_corrupt_ledger_gives_clear_error(project: Path) -> None:
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0
    db = project / "state" / "test.db"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    data = db.read_bytes()
    db.write_bytes(data[:100] + b"\x00garbage" * 50 + data[600:1000])
    for args in (("status",), ("ledger", "check"), ("apply", "--all", "--yes")):
        r = run_cli(project, *args)
        assert r.returncode == 4, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert "ledger" in r.stderr


def test_status_and_json_never_block_on_lock(project: Path) -> None:
    slow = subprocess.Popen(
        [sys.executable, "-m", "migrate.cli", "apply", "--step", "touch-a", "--yes"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO), "BPM_TEST_SLEEP": "touch-a:3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 20
        holder = None
        while time.time() < deadline:
            out = run_cli(project, "--json", "status")
            if out.returncode == 0 and json.loads(out.stdout)["lock"]:
                holder = json.loads(out.stdout)["lock"]
                break
            time.sleep(0.1)
        assert holder is not None and holder["pid"] == slow.pid
        contender = run_cli(project, "apply", "--step", "touch-a", "--yes")
        assert contender.returncode == 3
        assert f"pid {slow.pid}" in contender.stderr and "locked by" in contender.stderr
    finally:
        slow.wait(timeout=30)
    assert slow.returncode == 0


def test_dead_holder_on_same_host_is_taken_over(project: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrate.cli", "apply", "--step", "touch-a", "--yes"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO), "BPM_TEST_SLEEP": "touch-a:30"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_lock(project)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = run_cli(project, "apply", "--step", "touch-a", "--yes")
    assert r.returncode == 0, r.stderr
    assert "took over a stale lock" in r.stdout
    hist = json.loads(run_cli(project, "--json", "history", "--limit", "0").stdout)
    assert any(e["kind"] == "lock_taken_over" for e in hist)
    assert effects(project) == ["create a"]


def test_other_host_lock_needs_forced_unlock(project: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrate.cli", "apply", "--step", "touch-a", "--yes"],
        cwd=project,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "BPM_TEST_SLEEP": "touch-a:30",
            "BPMIGRATE_HOST_ID": "laptop-of-ana",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_lock(project)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = run_cli(project, "apply", "--step", "touch-a", "--yes")
    assert r.returncode == 3 and "laptop-of-ana" in r.stderr
    plain = run_cli(project, "unlock")
    assert plain.returncode == 3
    forced = run_cli(project, "unlock", "--force", "--reason", "ana's laptop crashed")
    assert forced.returncode == 0
    hist = json.loads(run_cli(project, "--json", "history", "--limit", "0").stdout)
    assert any(e["kind"] == "lock_forced" and "ana's laptop crashed" in json.dumps(e["data"]) for e in hist)
    r2 = run_cli(project, "apply", "--step", "touch-a", "--yes")
    assert r2.returncode == 0, r2.stderr
    assert effects(project).count("create a") == 1


def test_ctrl_c_leaves_a_resumable_ledger(project: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrate.cli", "apply", "--step", "touch-a", "--yes"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO), "BPM_TEST_SLEEP": "touch-a:30"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_lock(project)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert states(project)["touch-a"] == "apply_failed"
    assert "resume" in err
    lock = json.loads(run_cli(project, "--json", "status").stdout)["lock"]
    assert lock is None
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0


def _wait_for_lock(project: Path) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        out = run_cli(project, "--json", "status")
        if out.returncode == 0 and json.loads(out.stdout)["lock"]:
            return
        time.sleep(0.1)
    raise AssertionError("the lock never appeared")


@pytest.mark.parametrize(
    "kill_at",
    [
        "touch-b:before-intent",
        "touch-b:after-intent",
        "touch-b:after-effect",
        "flaky:after-effect",
        "touch-c:after-intent",
    ],
)
def test_crash_during_apply_resumes_without_double_effects(project: Path, kill_at: str) -> None:
    first = run_cli(project, "apply", "--phase", "1", "--yes", env={"BPM_TEST_KILL": kill_at})
    assert first.returncode == -signal.SIGKILL
    step = kill_at.split(":")[0]
    assert states(project)[step] == "applying"  # the ledger says exactly where it died
    second = run_cli(project, "apply", "--phase", "1", "--yes")
    assert second.returncode == 0, second.stderr + second.stdout
    assert "reconcil" in second.stdout
    assert all(states(project)[s] == "verified" for s in PHASE1)
    assert sorted(effects(project)) == sorted(["create a", "create b", "create flaky", "create c"])
    hist = json.loads(run_cli(project, "--json", "history", "--step", step, "--limit", "0").stdout)
    assert any(e["data"].get("event") == "recover_apply_failed" for e in hist)
    assert run_cli(project, "history", "--verify-chain").returncode == 0


@pytest.mark.parametrize("kill_at", ["touch-c:rollback-before", "touch-c:rollback-after", "flaky:rollback-after"])
def test_crash_during_rollback_resumes(project: Path, kill_at: str) -> None:
    assert run_cli(project, "apply", "--phase", "1", "--yes").returncode == 0
    first = run_cli(project, "rollback", "--to", "touch-a", "--yes", env={"BPM_TEST_KILL": kill_at})
    assert first.returncode == -signal.SIGKILL
    assert states(project)[kill_at.split(":")[0]] == "rolling_back"
    second = run_cli(project, "rollback", "--to", "touch-a", "--yes")
    assert second.returncode == 0, second.stderr + second.stdout
    for s in ("touch-b", "flaky", "touch-c"):
        assert states(project)[s] == "rolled_back"
    removed = [e for e in effects(project) if e.startswith("remove")]
    assert sorted(removed) == ["remove b", "remove c", "remove flaky"]  # each exactly once
    assert run_cli(project, "history", "--verify-chain").returncode == 0


def test_illegal_transition_writes_nothing(project: Path) -> None:
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0
    before = event_count(project)
    r = run_cli(project, "mark", "touch-a", "--as", "skipped", "--reason", "x")
    assert r.returncode == 3
    assert "cannot mark skipped while it is verified" in r.stderr
    # only the run/lock bookkeeping events were added, no transition
    with sqlite3.connect(project / "state" / "test.db") as conn:
        kinds = [k for (k,) in conn.execute("SELECT kind FROM bpm_events WHERE id > ?", (before,))]
    assert "transition" not in kinds
    assert states(project)["touch-a"] == "verified"


def test_estimates_come_from_rehearsal_history(project: Path) -> None:
    before = json.loads(run_cli(project, "--json", "status").stdout)
    assert all(s["estimate"] == "no estimate" for p in before["phases"] for s in p["steps"])
    # rehearse phase 1 in another environment (its own ledger), with a slow touch-a
    assert run_cli(project, "--env", "other", "apply", "--phase", "1", "--yes", env={"BPM_TEST_SLEEP": "touch-a:1.2"}).returncode == 0
    after = json.loads(run_cli(project, "--json", "status").stdout)
    steps = {s["id"]: s for p in after["phases"] for s in p["steps"]}
    assert steps["touch-a"]["estimate_seconds"] >= 1.2
    assert steps["fence"]["estimate"] == "no estimate"  # never run anywhere: no guess
    assert after["phases"][0]["estimate_seconds"] >= 1.2
    assert after["phases"][1]["estimate_seconds"] is None
    plan_out = run_cli(project, "plan", "touch-a")
    assert "estimate: 1." in plan_out.stdout
