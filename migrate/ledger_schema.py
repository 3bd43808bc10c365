"""Ledger tables (SQLAlchemy Core). Portable across SQLite (default) and PostgreSQL (shared team ledger).

JSON is stored as TEXT, timestamps as epoch seconds (float), so both backends behave the same.
When the schema changes: bump ``SCHEMA_VERSION``, change the table below, and add ``MIGRATIONS[old]`` that brings
a ledger written at version ``old`` to ``old + 1`` (it runs in the transaction that records the new version, so a
ledger is either fully migrated or not at all). Every released ledger must keep opening: tests open the 0.1.0
sandbox ledger in ``tests/fixtures``.

Versions: 1 (0.1.0) · 2: ``bpm_runs.caller_arn`` — the AWS identity (``sts get-caller-identity``) of a mutating run.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Column, Connection, Float, Index, Integer, MetaData, String, Table, Text, text

SCHEMA_VERSION = 2

metadata = MetaData()

meta = Table(
    "bpm_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "bpm_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("env", String(64), nullable=False),
    Column("command", Text, nullable=False),
    Column("operator", String(128), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("status", String(32), nullable=False, default="running"),
    Column("caller_arn", Text),  # v2: AWS caller identity of a run against AWS (None: no AWS account / unknown)
)

step_state = Table(
    "bpm_step_state",
    metadata,
    Column("env", String(64), primary_key=True),
    Column("step_id", String(128), primary_key=True),
    Column("state", String(32), nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("attempt_id", Integer),  # the open attempt while applying/verifying/rolling_back
    Column("definition_checksum", String(64)),  # of the step's code when last applied
    Column("reason", Text),  # why skipped / failed (short, redacted)
    Column("skip_kind", String(16)),  # auto | manual
    Column("applied_at", Float),
)

attempts = Table(
    "bpm_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False),
    Column("env", String(64), nullable=False),
    Column("step_id", String(128), nullable=False),
    Column("action", String(32), nullable=False),  # apply | verify | rollback
    Column("operator", String(128), nullable=False),
    Column("host", String(255), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("status", String(32), nullable=False, default="running"),
    Column("error", Text),
    Column("metrics", Text),  # JSON: bytes/rows/keys moved
    Index("ix_attempts_step", "env", "step_id"),
)

events = Table(
    "bpm_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("env", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("run_id", Integer),
    Column("step_id", String(128)),
    Column("kind", String(64), nullable=False),
    Column("operator", String(128), nullable=False),
    Column("host", String(255), nullable=False),
    Column("data", Text, nullable=False),  # JSON, redacted
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_events_step", "env", "step_id"),
)

outputs = Table(
    "bpm_outputs",
    metadata,
    Column("env", String(64), primary_key=True),
    Column("step_id", String(128), primary_key=True),
    Column("data", Text, nullable=False),  # JSON, redacted
    Column("updated_at", Float, nullable=False),
)

plans = Table(
    "bpm_plans",
    metadata,
    Column("env", String(64), primary_key=True),
    Column("step_id", String(128), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("complete", Integer, nullable=False),  # 1 when nothing was unknown at plan time
    Column("summary", Text, nullable=False),  # JSON of PlanResult.to_dict(), redacted
    Column("created_at", Float, nullable=False),
    Column("consumed_at", Float),
)

intents = Table(
    "bpm_intents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("env", String(64), nullable=False),
    Column("step_id", String(128), nullable=False),
    Column("attempt_id", Integer, nullable=False),
    Column("action", String(128), nullable=False),
    Column("data", Text, nullable=False),
    Column("ts", Float, nullable=False),
    Index("ix_intents_attempt", "attempt_id"),
)

artifacts = Table(
    "bpm_artifacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("env", String(64), nullable=False),
    Column("step_id", String(128), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

progress = Table(  # the latest progress report of an attempt (not audited: `status --watch` reads it)
    "bpm_progress",
    metadata,
    Column("attempt_id", Integer, primary_key=True),
    Column("env", String(64), nullable=False),
    Column("step_id", String(128), nullable=False),
    Column("data", Text, nullable=False),  # JSON: description, unit, total, completed, counters, started_at
    Column("updated_at", Float, nullable=False),
)

checkpoints = Table(
    "bpm_checkpoints",
    metadata,
    Column("env", String(64), primary_key=True),
    Column("step_id", String(128), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("data", Text, nullable=False),
    Column("ts", Float, nullable=False),
)

locks = Table(
    "bpm_locks",
    metadata,
    Column("env", String(64), primary_key=True),
    Column("token", String(64), nullable=False),
    Column("holder", String(128), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("command", Text, nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


# -- migrations of the ledger itself ------------------------------------------------------------------------------
def _v1_to_v2(conn: Connection) -> None:
    """0.1.0 → 2: runs record the AWS caller identity ARN (NULL for the runs recorded before)."""
    conn.execute(text("ALTER TABLE bpm_runs ADD COLUMN caller_arn TEXT"))


#: MIGRATIONS[n] upgrades a version-n ledger to n+1 (called inside the version-bump transaction)
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2}
