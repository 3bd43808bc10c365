"""Ledger backups and the audit trail: automatic online snapshots, restore with a verified chain, the error that
names the newest good backup (its command run exactly as printed), the OS account as operator with USER/LOGNAME
unset, and — against AWS (a moto server) — the caller identity ARN and the off-site copy in the state bucket."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from migrate import ledger_backup as lb
from migrate.config import load
from migrate.engine import Engine
from migrate.errors import LedgerError, UsageError
from migrate.ledger import Ledger
from migrate.ledger_read import LedgerReader
from migrate.reporting import RecordingReporter
from migrate.states import Event
from tests.engine_helpers import make_project, run_cli
from tests.servers_plugin import moto_client


def _events(db: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(db) as conn:
        return [(int(r[0]), str(r[1]), str(r[2])) for r in conn.execute("SELECT id, kind, hash FROM bpm_events ORDER BY id")]


def _last_json(text: str) -> dict[str, Any]:
    """The last of the JSON documents a command printed (the report, then the error)."""
    decoder, pos = json.JSONDecoder(), 0
    last: dict[str, Any] = {}
    while pos < len(text.rstrip()):
        last, pos = decoder.raw_decode(text, pos)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return last


def _truncate(db: Path) -> None:
    for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        extra.unlink(missing_ok=True)  # what a copy of state/ without the WAL, or a crash of the disk, leaves
    with db.open("r+b") as fh:
        fh.truncate(db.stat().st_size // 3)


def test_truncated_ledger_is_restored_from_its_automatic_backup(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0
    assert run_cli(project, "apply", "--step", "touch-b", "--yes").returncode == 0
    db = project / "state" / "test.db"
    backups = lb.list_backups(db, "test")
    assert len(backups) == 2 and all(p.name.endswith("-apply.db") for p in backups)
    before_second = _events(backups[0])  # the snapshot taken before the second command changed anything
    assert before_second == _events(db)[: len(before_second)]
    _truncate(db)

    failed = run_cli(project, "--json", "status")
    assert failed.returncode == 4, failed.stdout + failed.stderr
    error = json.loads(failed.stdout)
    printed = error["next"]
    assert printed == f"bpmigrate --env test ledger restore --from {backups[0].resolve()}"
    checked = run_cli(project, "--json", "ledger", "check")  # and `ledger check` names the same command
    assert checked.returncode == 4 and _last_json(checked.stdout)["next"] == printed

    argv = shlex.split(printed)
    assert argv[0] == "bpmigrate"
    restored = run_cli(project, *argv[1:])  # the command exactly as printed
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "hash chain intact" in restored.stdout

    check = run_cli(project, "ledger", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    reader = LedgerReader(f"sqlite:///{db}", "test")
    try:
        chain = reader.verify_chain()
        kinds = [e.kind for e in reader.events()]
        assert reader.states()["touch-a"].state == "verified"
    finally:
        reader.close()
    assert chain.ok and chain.events == len(before_second) + 2  # + lock_forced (the backup's lease) + ledger_restored
    assert kinds[-1] == "ledger_restored" and _events(db)[: len(before_second)] == before_second
    kept = [p.name for p in (db.parent / "test" / "ledger-backups").iterdir() if p.name.startswith("replaced-")]
    assert kept, "the damaged ledger is kept aside, never deleted"
    # and work goes on from the restored record
    assert run_cli(project, "apply", "--step", "touch-b", "--yes").returncode == 0


def test_a_mutating_run_without_user_or_logname_records_the_os_account(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME", "LNAME", "USERNAME", "BPMIGRATE_OPERATOR")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "migrate.cli", "apply", "--step", "touch-a", "--yes"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    account = pwd.getpwuid(os.getuid()).pw_name
    with sqlite3.connect(project / "state" / "test.db") as conn:
        operators = {r[0] for r in conn.execute("SELECT operator FROM bpm_events")}
        runs = conn.execute("SELECT operator FROM bpm_runs").fetchall()
    assert operators == {account} and runs == [(account,)]
    # a role named by the operator wins, and the OS account is kept next to it
    named = run_cli(project, "apply", "--step", "touch-b", "--yes", env={"BPMIGRATE_OPERATOR": "release-bot"})
    assert named.returncode == 0
    with sqlite3.connect(project / "state" / "test.db") as conn:
        row = conn.execute("SELECT operator, data FROM bpm_events WHERE kind = 'run_started' ORDER BY id DESC").fetchone()
    assert row[0] == "release-bot" and json.loads(row[1])["os_account"] == account


def test_snapshots_are_online_consistent_and_rotated(tmp_path: Path) -> None:
    db = tmp_path / "state" / "e.db"
    ledger = Ledger(f"sqlite:///{db}", "e")
    try:
        ledger.transition("s", Event.BEGIN_APPLY, run_id=None)
        assert Path(f"{db}-wal").stat().st_size > 0  # the latest commits are still in the WAL
        for i in range(4):
            lb.backup_now(db, "e", f"bpmigrate --env e apply --step s{i}", keep=3)
        ledger.transition("s", Event.APPLY_OK, run_id=None)  # a writer keeps going meanwhile
    finally:
        ledger.close()
    kept = lb.list_backups(db, "e")
    assert len(kept) == 3 and all("-apply.db" in p.name for p in kept)
    newest = lb.check_file(kept[0], "e")
    assert newest.ok and newest.events == 1 and newest.schema_version == 2  # the snapshot, not the later write
    assert not Path(f"{kept[0]}-wal").exists()  # one self-contained file


def test_restore_refuses_a_damaged_backup_and_a_healthy_ledger(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0
    assert run_cli(project, "apply", "--step", "touch-b", "--yes").returncode == 0
    cfg = load(project / "migrate.toml")
    db = project / "state" / "test.db"
    newest, older = lb.list_backups(db, "test")
    with sqlite3.connect(newest) as conn:  # tamper with the newest backup's history
        conn.execute("UPDATE bpm_events SET data = '{}' WHERE id = 2")
    assert lb.newest_good(db, "test").path == older  # type: ignore[union-attr]
    _truncate(db)
    with pytest.raises(LedgerError) as bad:
        lb.restore(cfg, "test", str(newest))
    assert "hash chain" in bad.value.what and bad.value.next_cmd == lb.restore_command("test", older.resolve())
    lb.restore(cfg, "test")  # default: the newest good one
    with pytest.raises(UsageError) as healthy:
        lb.restore(cfg, "test", str(older))
    assert healthy.value.next_cmd.endswith("--force")


def test_against_aws_the_run_records_the_caller_and_copies_the_ledger_offsite(moto_reset: Any, tmp_path: Path) -> None:
    project = make_project(tmp_path)
    toml = project / "migrate.toml"
    toml.write_text(toml.read_text().replace('[environments.test]\nkind = "aws"', f'[environments.test]\nkind = "aws"\naws = {{ endpoint_url = "{moto_reset.endpoint_url}" }}'))
    s3 = moto_client(moto_reset.endpoint_url, "s3")
    s3.create_bucket(Bucket="bp-tfstate")
    s3.put_bucket_versioning(Bucket="bp-tfstate", VersioningConfiguration={"Status": "Enabled"})
    db = project / "state" / "test.db"
    ledger = Ledger(f"sqlite:///{db}", "test")  # tf-state-backend recorded its bucket (as its apply does)
    ledger.transition("tf-state-backend", Event.BEGIN_APPLY, run_id=None)
    ledger.transition("tf-state-backend", Event.APPLY_OK, run_id=None, outputs={"bucket": "bp-tfstate"})
    ledger.close()

    for step in ("touch-a", "touch-b"):
        engine = Engine(load(toml), "test", RecordingReporter(), command=f"bpmigrate apply --step {step}")
        try:
            with engine.session(engine.command):
                engine.apply([engine.graph.get(step)], confirm=lambda _q: True, assume_yes=True)
        finally:
            engine.close()
    with sqlite3.connect(db) as conn:
        callers = [r[0] for r in conn.execute("SELECT caller_arn FROM bpm_runs ORDER BY id")]
        offsite = [json.loads(r[0]) for r in conn.execute("SELECT data FROM bpm_events WHERE kind = 'ledger_backup_offsite'")]
    assert len(callers) == 2 and all(c and c.startswith("arn:aws:") for c in callers)
    assert [o["url"] for o in offsite] == ["s3://bp-tfstate/bpmigrate/ledger/test.db"] * 2
    versions = s3.list_object_versions(Bucket="bp-tfstate", Prefix="bpmigrate/ledger/")["Versions"]
    assert len(versions) == 2  # one object version per mutating run
    head = s3.head_object(Bucket="bp-tfstate", Key="bpmigrate/ledger/test.db")
    assert head["ServerSideEncryption"] == "AES256" and head["Metadata"]["sha256"] == offsite[-1]["sha256"]

    history = run_cli(project, "--json", "history")
    rows = json.loads(history.stdout)
    assert {r["caller_arn"] for r in rows if r["kind"] == "run_started"} == set(callers)
    table = run_cli(project, "history", "--limit", "40").stdout
    assert "AWS caller" in table and "arn:aws:" in table

    # the laptop is lost: only the off-site copy is left
    for path in list(db.parent.iterdir()):
        if path.name.startswith("test.db"):
            path.unlink()
    cfg = load(toml)
    done = lb.restore(cfg, "test", "s3://bp-tfstate/bpmigrate/ledger/test.db")
    assert done.events > 0
    reader = LedgerReader(f"sqlite:///{db}", "test")
    try:
        assert reader.verify_chain().ok and reader.states()["touch-b"].state == "verified"
    finally:
        reader.close()
