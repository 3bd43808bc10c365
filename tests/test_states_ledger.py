"""The state machine and the ledger writer: every transition, property-tested over random event sequences."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate.errors import IllegalTransition, LedgerError
from migrate.ledger import Ledger
from migrate.ledger_read import LedgerReader
from migrate.states import _TABLE, Event, State, allowed_events, transition

EXPECTED = {
    (State.PENDING, Event.PLAN): State.PLANNED,
    (State.PLANNED, Event.BEGIN_APPLY): State.APPLYING,
    (State.APPLYING, Event.APPLY_OK): State.APPLIED,
    (State.APPLYING, Event.APPLY_FAIL): State.APPLY_FAILED,
    (State.APPLIED, Event.BEGIN_VERIFY): State.VERIFYING,
    (State.VERIFYING, Event.VERIFY_OK): State.VERIFIED,
    (State.VERIFYING, Event.VERIFY_FAIL): State.VERIFY_FAILED,
    (State.VERIFIED, Event.BEGIN_ROLLBACK): State.ROLLING_BACK,
    (State.ROLLING_BACK, Event.ROLLBACK_OK): State.ROLLED_BACK,
    (State.ROLLING_BACK, Event.ROLLBACK_FAIL): State.ROLLBACK_FAILED,
    (State.PENDING, Event.SKIP): State.SKIPPED,
    (State.APPLYING, Event.RECOVER_APPLY_FAILED): State.APPLY_FAILED,
    (State.VERIFYING, Event.RECOVER_VERIFY): State.APPLIED,
    (State.ROLLING_BACK, Event.RECOVER_ROLLED_BACK): State.ROLLED_BACK,
}


def test_documented_path_transitions() -> None:
    for (src, ev), dst in EXPECTED.items():
        assert transition(src, ev) == dst


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_every_pair_is_decided(state: State, event: Event) -> None:
    sources, target = _TABLE[event]
    if state in sources:
        assert transition(state, event, "s") == target
        assert event in allowed_events(state)
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(state, event, "s")
        assert info.value.exit_code == 3
        assert "s" in info.value.what and info.value.next_cmd


def test_cannot_apply_a_verified_step_or_skip_an_applied_one() -> None:
    with pytest.raises(IllegalTransition):
        transition(State.VERIFIED, Event.BEGIN_APPLY)
    with pytest.raises(IllegalTransition):
        transition(State.APPLIED, Event.MARK_SKIPPED)
    with pytest.raises(IllegalTransition):
        transition(State.APPLYING, Event.BEGIN_ROLLBACK)  # an in-flight step is reconciled first


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.sampled_from(list(Event)), min_size=1, max_size=25))
def test_ledger_follows_the_state_machine(tmp_path: Path, events: list[Event]) -> None:
    """Random command sequences: the ledger always equals the model; illegal events write nothing."""
    db = tmp_path / f"p{abs(hash(tuple(events)))}.db"
    url = f"sqlite:///{db}"
    ledger = Ledger(url, "prop")
    model = State.PENDING
    try:
        for ev in events:
            before = _event_rows(db)
            try:
                expected = transition(model, ev)
            except IllegalTransition:
                with pytest.raises(IllegalTransition):
                    ledger.transition("s1", ev, run_id=None)
                assert _event_rows(db) == before  # nothing written
                continue
            got = ledger.transition("s1", ev, run_id=None, outputs={"k": 1} if ev == Event.APPLY_OK else None)
            assert got == expected
            model = expected
            assert _event_rows(db) == before + 1
        reader = LedgerReader(url, "prop")
        try:
            row = reader.states().get("s1")
            assert (row.state if row else "pending") == model.value
            # an attempt is open exactly while in flight
            if row:
                assert (row.attempt_id is not None) == (model in (State.APPLYING, State.VERIFYING, State.ROLLING_BACK))
            if model == State.ROLLED_BACK:
                assert "s1" not in reader.outputs()
            assert reader.verify_chain().ok
        finally:
            reader.close()
    finally:
        ledger.close()
        db.unlink(missing_ok=True)


def _event_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM bpm_events").fetchone()[0])


def test_ledger_refuses_newer_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    Ledger(url, "e").close()
    with sqlite3.connect(tmp_path / "x.db") as conn:
        conn.execute("UPDATE bpm_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError) as info:
        Ledger(url, "e")
    assert "newer bpmigrate" in info.value.what and info.value.exit_code == 4


def test_ledger_is_wal_and_redacts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    ledger = Ledger(url, "e")
    ledger.transition("s", Event.BEGIN_APPLY, run_id=None)
    ledger.transition(
        "s", Event.APPLY_FAIL, run_id=None, error="connect failed: postgresql://u:topsecretpw@h/db password=alsosecret"
    )
    ledger.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("w.db"))
    assert b"topsecretpw" not in raw and b"alsosecret" not in raw
    with sqlite3.connect(tmp_path / "w.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_0_1_0_ledger_opens_and_migrates(tmp_path: Path) -> None:
    """The ledger written by the last release (schema 1) opens, migrates to the current schema in one transaction,
    keeps its hash chain, and can record a caller identity afterwards."""
    import shutil

    from migrate import ledger_schema

    db = tmp_path / "sandbox.db"
    shutil.copy(Path(__file__).parent / "fixtures" / "ledger-0.1.0-sandbox.db", db)
    before = _event_rows(db)
    ledger = Ledger(f"sqlite:///{db}", "sandbox")
    try:
        run_id = ledger.start_run("bpmigrate verify")
        ledger.record_caller(run_id, {"arn": "arn:aws:iam::123456789012:user/alice", "account": "123456789012"})
    finally:
        ledger.close()
    reader = LedgerReader(f"sqlite:///{db}", "sandbox")
    try:
        assert reader.schema_version() == ledger_schema.SCHEMA_VERSION == 2
        chain = reader.verify_chain()
        assert chain.ok and chain.events == before + 3, chain.problem
        migrated = [e for e in reader.events() if e.kind == "ledger_schema_migrated"]
        assert [(e.data["from"], e.data["to"]) for e in migrated] == [(1, 2)]
        assert reader.run_callers() == {run_id: "arn:aws:iam::123456789012:user/alice"}
    finally:
        reader.close()
    with sqlite3.connect(db) as conn:  # the runs recorded by 0.1.0 keep no caller: they predate the column
        assert conn.execute("SELECT count(*) FROM bpm_runs WHERE caller_arn IS NULL AND id < ?", (run_id,)).fetchone()[0] > 0
    Ledger(f"sqlite:///{db}", "sandbox").close()  # opening again migrates nothing more
    assert _event_rows(db) == before + 3


def test_operator_is_never_a_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    from migrate.ledger import operator_name

    for var in ("USER", "LOGNAME", "LNAME", "USERNAME", "BPMIGRATE_OPERATOR"):
        monkeypatch.delenv(var, raising=False)
    assert operator_name() == pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("BPMIGRATE_OPERATOR", "oncall-sre")
    assert operator_name() == "oncall-sre"
