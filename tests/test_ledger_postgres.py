"""A shared PostgreSQL ledger: two operators on two "machines" contend; killing the holder frees the lease;
the hash chain stays intact; an existing SQLite ledger is copied over with its history."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.engine_helpers import REPO, effects, make_project, run_cli


@pytest.fixture()
def pg_project(tmp_path: Path, pg_target):
    name = f"ledger_{uuid.uuid4().hex[:8]}"
    url = pg_target.create_database(name)
    project = make_project(tmp_path)
    toml = project / "migrate.toml"
    toml.write_text(toml.read_text().replace("[environments.test]\n", f'[environments.test]\nledger_url = "{url}"\n'))
    yield project, url
    pg_target.drop_database(name)


def _popen(project: Path, host: str, sleep: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "migrate.cli", "apply", "--step", "touch-a", "--yes"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO), "BPMIGRATE_HOST_ID": host, "BPM_TEST_SLEEP": sleep},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_lock(project: Path) -> dict:
    deadline = time.time() + 30
    while time.time() < deadline:
        out = run_cli(project, "--json", "status")
        if out.returncode == 0 and json.loads(out.stdout)["lock"]:
            return json.loads(out.stdout)["lock"]
        time.sleep(0.2)
    raise AssertionError("no lock appeared")


def test_two_machines_contend_and_killed_holder_is_taken_over(pg_project) -> None:
    project, _url = pg_project
    holder = _popen(project, "machine-a", "touch-a:60")
    try:
        lock = _wait_lock(project)
        assert lock["host"] == "machine-a"
        contender = run_cli(project, "apply", "--step", "touch-a", "--yes", env={"BPMIGRATE_HOST_ID": "machine-b"})
        assert contender.returncode == 3
        assert "machine-a" in contender.stderr and "locked by" in contender.stderr
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        # the holder's database session died with it: its advisory lock is gone, so machine-b takes over
        deadline = time.time() + 30
        while True:
            r = run_cli(project, "apply", "--step", "touch-a", "--yes", env={"BPMIGRATE_HOST_ID": "machine-b"})
            if r.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.5)
        assert r.returncode == 0, r.stderr
        assert "took over a stale lock from" in r.stdout and "machine-a" in r.stdout
    finally:
        if holder.poll() is None:
            holder.kill()
    assert states_pg(project)["touch-a"] == "verified"
    assert effects(project) == ["create a"]
    assert run_cli(project, "history", "--verify-chain").returncode == 0
    hist = json.loads(run_cli(project, "--json", "history", "--limit", "0").stdout)
    assert any(e["kind"] == "lock_taken_over" for e in hist)
    assert any(e["data"].get("event") == "recover_apply_failed" for e in hist)  # reconciled the killed apply


def test_sqlite_ledger_is_copied_to_postgres_with_history(tmp_path: Path, pg_target) -> None:
    project = make_project(tmp_path)
    assert run_cli(project, "apply", "--phase", "1", "--yes").returncode == 0
    name = f"ledger_{uuid.uuid4().hex[:8]}"
    url = pg_target.create_database(name)
    try:
        r = run_cli(project, "ledger", "migrate", "--to", url, "--yes")
        assert r.returncode == 0, r.stderr
        assert "hash chain intact" in r.stdout
        toml = project / "migrate.toml"
        toml.write_text(
            toml.read_text().replace("[environments.test]\n", f'[environments.test]\nledger_url = "{url}"\n')
        )
        st = json.loads(run_cli(project, "--json", "status").stdout)
        verified = [s["id"] for p in st["phases"] for s in p["steps"] if s["state"] == "verified"]
        assert set(verified) == {"touch-a", "touch-b", "flaky", "touch-c"}
        assert run_cli(project, "history", "--verify-chain").returncode == 0
        # the new ledger keeps working: roll back the last step through it
        assert run_cli(project, "rollback", "--yes").returncode == 0
        assert states_pg(project)["touch-c"] == "rolled_back"
        again = run_cli(project, "ledger", "migrate", "--to", url, "--yes")
        assert again.returncode == 4 and "already has history" in again.stderr
    finally:
        pg_target.drop_database(name)


def states_pg(project: Path) -> dict[str, str]:
    st = json.loads(run_cli(project, "--json", "status").stdout)
    return {s["id"]: s["state"] for p in st["phases"] for s in p["steps"]}


def test_postgres_ledger_migrates_and_is_not_copied_as_a_file(pg_project) -> None:
    """Schema migration 1 → 2 runs on PostgreSQL too; a team ledger takes no file backups (the database's own
    backups cover it) and `ledger restore` says so."""
    from sqlalchemy import create_engine, text

    from migrate.ledger import Ledger
    from migrate.ledger_read import LedgerReader, normalize_url

    project, url = pg_project
    Ledger(url, "test").close()
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:  # make it look like a 0.1.0 ledger
        conn.execute(text("ALTER TABLE bpm_runs DROP COLUMN caller_arn"))
        conn.execute(text("UPDATE bpm_meta SET value = '1' WHERE key = 'schema_version'"))
    engine.dispose()
    ledger = Ledger(url, "test")
    try:
        run_id = ledger.start_run("bpmigrate verify")
        ledger.record_caller(run_id, {"arn": "arn:aws:sts::123456789012:assumed-role/ops/bob"})
    finally:
        ledger.close()
    reader = LedgerReader(url, "test")
    try:
        assert reader.schema_version() == 2 and reader.verify_chain().ok
        assert reader.run_callers() == {run_id: "arn:aws:sts::123456789012:assumed-role/ops/bob"}
    finally:
        reader.close()
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0
    assert not (project / "state" / "test" / "ledger-backups").exists()
    refused = run_cli(project, "--json", "ledger", "restore")
    assert refused.returncode == 2 and "database's own backups" in json.loads(refused.stdout)["why"]
