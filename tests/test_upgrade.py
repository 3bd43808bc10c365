"""A ledger written by the last release (0.1.0, a full sandbox rehearsal) read and extended by the current code."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine_helpers import REPO

FIXTURE = REPO / "tests" / "fixtures" / "ledger-0.1.0-sandbox.db"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """The repo's migrate.toml and phases with the 0.1.0 ledger as the sandbox's ledger."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "migrate.toml", root / "migrate.toml")
    shutil.copytree(REPO / "phases", root / "phases", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "state").mkdir()
    shutil.copy(FIXTURE, root / "state" / "sandbox.db")
    return root


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPMIGRATE_")}
    env.update(PYTHONPATH=str(REPO), COLUMNS="120")
    return subprocess.run(
        [sys.executable, "-m", "migrate.cli", *args, "--env", "sandbox"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


def _fixture_states() -> dict[str, str]:
    with sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT step_id, state FROM bpm_step_state WHERE env = 'sandbox'").fetchall())


def _status(project: Path) -> dict[str, dict[str, object]]:
    r = _cli(project, "status", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    return {"__report__": report, **{s["id"]: s for p in report["phases"] for s in p["steps"]}}


def test_fixture_is_a_full_rehearsal() -> None:
    states = _fixture_states()
    assert len(states) == 45
    assert sorted(set(states.values())) == ["skipped", "verified"]
    assert list(states.values()).count("verified") == 23


def test_old_ledger_reads_unchanged(project: Path) -> None:
    db = project / "state" / "sandbox.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    steps = _status(project)
    report = steps.pop("__report__")
    recorded = _fixture_states()
    # the same 45 step ids and states; steps added to the plan since 0.1.0 are pending
    assert {sid: s["state"] for sid, s in steps.items() if sid in recorded} == recorded
    assert {s["state"] for sid, s in steps.items() if sid not in recorded} <= {"pending"}
    counts = dict(report["counts"])  # type: ignore[call-overload]
    assert {k: v for k, v in counts.items() if k != "pending"} == {"verified": 23, "skipped": 22}
    # checksums written by 0.1.0 (a hash of the class source) are another format: never reported as "code changed"
    assert not any(s["definition_changed"] for s in steps.values())
    assert not [w for w in report["warnings"] if "code changed" in w]  # type: ignore[attr-defined]
    assert all("summary" in s for s in steps.values())

    chain = _cli(project, "history", "--verify-chain", "--json")
    assert chain.returncode == 0, chain.stderr
    assert json.loads(chain.stdout) == {"ok": True, "events": 172, "problem": "", "event_id": None}
    check = _cli(project, "ledger", "check", "--json")
    assert check.returncode == 0, check.stderr + check.stdout
    assert json.loads(check.stdout)["ok"] is True

    text = _cli(project, "status")  # the dashboard renders the old ledger too
    assert text.returncode == 0, text.stderr
    assert "aws-accounts" in text.stdout and "code changed" not in text.stdout
    # reading never writes: no schema migration, no event, not a byte changed
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_a_later_apply_records_the_new_checksum_and_a_code_change_is_reported(project: Path) -> None:
    from migrate.ledger import Ledger
    from migrate.states import Event
    from phases.p1_foundation.aws_accounts import AwsAccounts

    step_file = project / "phases" / Path(inspect.getfile(AwsAccounts)).relative_to(REPO / "phases")
    assert step_file.read_bytes() == Path(inspect.getfile(AwsAccounts)).read_bytes()
    checksum = AwsAccounts.definition_checksum()
    assert checksum.startswith("f1:")

    ledger = Ledger(f"sqlite:///{project / 'state' / 'sandbox.db'}", "sandbox")  # opens it as a new release would
    try:  # a later release rolls the step back and applies it again: the new checksum format is recorded
        run = ledger.start_run("bpmigrate apply --step aws-accounts")
        for event in (Event.BEGIN_ROLLBACK, Event.ROLLBACK_OK, Event.BEGIN_APPLY):
            ledger.transition("aws-accounts", event, run_id=run)
        ledger.transition("aws-accounts", Event.APPLY_OK, run_id=run, outputs={"accounts_count": 3}, definition_checksum=checksum)
        for event in (Event.BEGIN_VERIFY, Event.VERIFY_OK):
            ledger.transition("aws-accounts", event, run_id=run)
        ledger.end_run(run, "ok")
    finally:
        ledger.close()

    steps = _status(project)
    steps.pop("__report__")
    assert not any(s["definition_changed"] for s in steps.values())  # same file: nothing to report

    step_file.write_text(step_file.read_text(encoding="utf-8") + "\n# changed after the apply\n", encoding="utf-8")
    steps = _status(project)
    report = steps.pop("__report__")
    assert [sid for sid, s in steps.items() if s["definition_changed"]] == ["aws-accounts"]
    assert any("aws-accounts" in w and "code changed" in w for w in report["warnings"])  # type: ignore[attr-defined]
    chain = _cli(project, "history", "--verify-chain", "--json")
    assert json.loads(chain.stdout)["ok"] is True
