"""Read-only access to the ledger, fast enough for ``bpmigrate status`` (≤ 0.25 s).

For SQLite it uses the stdlib ``sqlite3`` module in read-only mode (no SQLAlchemy import, never blocks writers);
for other URLs it runs the same SQL through SQLAlchemy. It never writes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.errors import LedgerError

GENESIS = "0" * 64


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL ledgers (``postgresql://`` would pick psycopg2, which is not installed)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass
class StepRow:
    step_id: str
    state: str
    updated_at: float
    attempt_id: int | None
    definition_checksum: str | None
    reason: str | None
    skip_kind: str | None
    applied_at: float | None


@dataclass
class AttemptRow:
    id: int
    run_id: int
    step_id: str
    action: str
    operator: str
    host: str
    started_at: float
    ended_at: float | None
    status: str
    error: str | None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclass
class EventRow:
    id: int
    ts: float
    run_id: int | None
    step_id: str | None
    kind: str
    operator: str
    host: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass
class PlanRow:
    step_id: str
    fingerprint: str
    complete: bool
    summary: dict[str, Any]
    created_at: float
    consumed_at: float | None


@dataclass
class ChainReport:
    ok: bool
    events: int
    problem: str = ""
    event_id: int | None = None


class LedgerReader:
    def __init__(self, url: str, env: str) -> None:
        self.url = url
        self.env = env
        self._sqlite: sqlite3.Connection | None = None
        self._sa: Any = None
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///") :])
            self.exists = path.exists()
            if self.exists:
                try:
                    self._sqlite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
                    self._sqlite.execute("PRAGMA query_only=1")
                except sqlite3.Error as exc:
                    raise _corrupt(url, env, exc) from None
        else:
            from sqlalchemy import create_engine

            self._sa = create_engine(normalize_url(url), future=True)
            self.exists = True

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        params = {"env": self.env, **(params or {})}
        if self._sqlite is not None:
            try:
                return list(self._sqlite.execute(sql, params).fetchall())
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise _corrupt(self.url, self.env, exc) from None
            except sqlite3.DatabaseError as exc:
                raise _corrupt(self.url, self.env, exc) from None
        if self._sa is not None:
            from sqlalchemy import text
            from sqlalchemy.exc import SQLAlchemyError

            try:
                with self._sa.connect() as conn:
                    return [tuple(r) for r in conn.execute(text(sql), params).fetchall()]
            except SQLAlchemyError as exc:
                if "does not exist" in str(exc):
                    return []
                raise _corrupt(self.url, self.env, exc) from None
        return []

    # -- queries -----------------------------------------------------------------------------------------------
    def schema_version(self) -> int | None:
        rows = self._rows("SELECT value FROM bpm_meta WHERE key = 'schema_version'")
        return int(rows[0][0]) if rows else None

    def states(self) -> dict[str, StepRow]:
        rows = self._rows(
            "SELECT step_id, state, updated_at, attempt_id, definition_checksum, reason, skip_kind, applied_at "
            "FROM bpm_step_state WHERE env = :env"
        )
        return {r[0]: StepRow(*r) for r in rows}

    def outputs(self) -> dict[str, dict[str, Any]]:
        rows = self._rows("SELECT step_id, data FROM bpm_outputs WHERE env = :env")
        return {r[0]: json.loads(r[1]) for r in rows}

    def plans(self) -> dict[str, PlanRow]:
        rows = self._rows(
            "SELECT step_id, fingerprint, complete, summary, created_at, consumed_at FROM bpm_plans WHERE env = :env"
        )
        return {r[0]: PlanRow(r[0], r[1], bool(r[2]), json.loads(r[3]), r[4], r[5]) for r in rows}

    def lock(self) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT holder, host, pid, command, acquired_at, heartbeat_at, expires_at FROM bpm_locks WHERE env = :env"
        )
        if not rows:
            return None
        r = rows[0]
        return {
            "holder": r[0],
            "host": r[1],
            "pid": r[2],
            "command": r[3],
            "acquired_at": r[4],
            "heartbeat_at": r[5],
            "expires_at": r[6],
            "expired": time.time() > r[6],
        }

    def attempts(self, step_id: str | None = None, limit: int = 1000) -> list[AttemptRow]:
        where = "env = :env" + (" AND step_id = :step" if step_id else "")
        rows = self._rows(
            "SELECT id, run_id, step_id, action, operator, host, started_at, ended_at, status, error, metrics "
            f"FROM bpm_attempts WHERE {where} ORDER BY id DESC LIMIT :limit",
            {"step": step_id, "limit": limit},
        )
        return [
            AttemptRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], json.loads(r[10]) if r[10] else {})
            for r in rows
        ]

    def events(self, step_id: str | None = None, limit: int | None = None) -> list[EventRow]:
        where = "env = :env" + (" AND step_id = :step" if step_id else "")
        lim = f" LIMIT {int(limit)}" if limit else ""
        rows = self._rows(
            f"SELECT id, ts, run_id, step_id, kind, operator, host, data, prev_hash, hash FROM bpm_events WHERE {where} "
            f"ORDER BY id DESC{lim}",
            {"step": step_id},
        )
        return [EventRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), r[8], r[9]) for r in reversed(rows)]

    def registered_children(self) -> list[dict[str, Any]]:
        """Children registered as long-lived (``Ledger.register_child``) and not released since: pid, start_ticks,
        purpose, step_id."""
        rows = self._rows(
            "SELECT step_id, kind, data FROM bpm_events WHERE env = :env AND kind IN ('child_registered', "
            "'child_released') ORDER BY id"
        )
        live: dict[int, dict[str, Any]] = {}
        for step_id, kind, data in rows:
            doc = json.loads(data)
            if kind == "child_registered":
                live[int(doc["pid"])] = {**doc, "step_id": step_id}
            else:
                live.pop(int(doc.get("pid", -1)), None)
        return list(live.values())

    def progress(self) -> dict[int, dict[str, Any]]:
        """The latest progress report of each attempt that reported one: attempt id -> snapshot (+ step_id, updated_at)."""
        rows = self._rows("SELECT attempt_id, step_id, data, updated_at FROM bpm_progress WHERE env = :env")
        return {int(r[0]): {**json.loads(r[2]), "step_id": r[1], "updated_at": r[3]} for r in rows}

    def intents(self, attempt_id: int) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT action, data, ts FROM bpm_intents WHERE env = :env AND attempt_id = :a ORDER BY id", {"a": attempt_id}
        )
        return [{"action": r[0], "data": json.loads(r[1]), "ts": r[2]} for r in rows]

    def checkpoints(self, step_id: str) -> dict[str, dict[str, Any]]:
        rows = self._rows("SELECT key, data FROM bpm_checkpoints WHERE env = :env AND step_id = :s", {"s": step_id})
        return {r[0]: json.loads(r[1]) for r in rows}

    def artifacts(self, step_id: str | None = None) -> list[dict[str, Any]]:
        where = "env = :env" + (" AND step_id = :s" if step_id else "")
        rows = self._rows(
            f"SELECT step_id, kind, path, sha256, size, created_at FROM bpm_artifacts WHERE {where} ORDER BY id",
            {"s": step_id},
        )
        return [dict(zip(("step_id", "kind", "path", "sha256", "size", "created_at"), r, strict=True)) for r in rows]

    def applied_order(self) -> list[str]:
        """Step ids ordered by when they were last applied (oldest first), for reverse-order rollback."""
        rows = self._rows(
            "SELECT step_id, applied_at FROM bpm_step_state WHERE env = :env AND applied_at IS NOT NULL ORDER BY applied_at"
        )
        return [r[0] for r in rows]

    def run_callers(self) -> dict[int, str]:
        """run id → the AWS caller identity ARN recorded for it (ledger schema ≥ 2; runs against AWS only)."""
        if (self.schema_version() or 0) < 2:
            return {}
        rows = self._rows("SELECT id, caller_arn FROM bpm_runs WHERE env = :env AND caller_arn IS NOT NULL")
        return {int(r[0]): str(r[1]) for r in rows}

    def approved_steps(self) -> set[str]:
        """The steps whose manual gate was approved (any approval counts, as for ``apply``)."""
        rows = self._rows("SELECT DISTINCT step_id FROM bpm_events WHERE env = :env AND kind = 'gate_approved'")
        return {r[0] for r in rows if r[0]}

    def approvals(self, step_id: str) -> list[EventRow]:
        return [e for e in self.events(step_id) if e.kind == "gate_approved"]

    def verify_chain(self) -> ChainReport:
        from migrate.ledger import event_hash

        rows = self._rows(
            "SELECT id, ts, run_id, step_id, kind, data, prev_hash, hash FROM bpm_events WHERE env = :env ORDER BY id"
        )
        prev = GENESIS
        for r in rows:
            event_id, ts, run_id, step_id, kind, data, prev_hash, digest = r
            if prev_hash != prev:
                return ChainReport(False, len(rows), f"event {event_id} does not follow its predecessor (a row was removed or reordered)", event_id)
            if event_hash(prev_hash, ts, self.env, run_id, step_id, kind, data) != digest:
                return ChainReport(False, len(rows), f"event {event_id} ({kind}) was modified after it was written", event_id)
            prev = digest
        head = self._rows("SELECT value FROM bpm_meta WHERE key = 'chain_head'")
        if head and head[0][0] != prev:
            return ChainReport(False, len(rows), "the newest events were removed (the chain head does not match)", None)
        return ChainReport(True, len(rows))

    def problems(self) -> list[str]:
        """What `bpmigrate ledger check` reports: structural damage, a missing schema version, a broken hash chain."""
        found = list(self.integrity())
        if self.schema_version() is None:
            found.append("no schema version: not a bpmigrate ledger, or truncated")
        chain = self.verify_chain()
        if not chain.ok:
            found.append(f"hash chain: {chain.problem}")
        return found

    def integrity(self) -> list[str]:
        """Structural problems of the ledger file (for `bpmigrate ledger check`)."""
        problems: list[str] = []
        if self._sqlite is not None:
            try:
                result = self._sqlite.execute("PRAGMA integrity_check").fetchall()
                if result and result[0][0] != "ok":
                    problems.extend(str(r[0]) for r in result[:10])
            except sqlite3.DatabaseError as exc:
                problems.append(str(exc))
        return problems

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._sa is not None:
            self._sa.dispose()


def _corrupt(url: str, env: str, exc: BaseException) -> LedgerError:
    from migrate.redact import redact

    hint = f"bpmigrate --env {env} ledger check"
    if "/ledger-backups/" not in url:  # the ledger itself: name the newest good backup and the restore command
        from migrate.ledger_backup import restore_hint

        hint = restore_hint(url, env)
    return LedgerError(
        f"cannot read the ledger {redact(url)}: {exc}",
        "the file is corrupt, truncated, or not a bpmigrate ledger",
        hint,
    )
