"""Step ``pg-sync``: Keep the target PostgreSQL current with native logical replication until data-switch."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from migrate.errors import ConfigError, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from .._sync import (
    MB,
    _dms_apply,
    _dms_plan,
    _dms_rollback,
    _dms_verify,
    _enabled,
    _migrated_tables,
    _pg,
    _pgsync,
    _target_unknown,
)


class PgSyncStep(Step):
    """Keep the target PostgreSQL current with native logical replication until data-switch.

    Publication on the source for every migrated table; a replication slot created with an exported snapshot; the
    target tables (schema from rds-restore) truncated and copied as of that snapshot; then a subscription with
    copy_data = false that streams from the slot — the copy and the stream join without gap or duplicate.
    A run killed after the copy resumes from its slot; one killed during the copy drops the slot and copies again.
    Rollback drops subscription, slot and publication (never leaves a slot that would fill the source's disk).
    Not replicated: materialized views (data-switch refreshes them: ``migrate.adapters.pgcopy.refresh_matviews``),
    large objects, DDL.
    Settings: enabled, driver ("logical" | "aws-dms"), workers, chunk_rows, chunk_mb, replica_identity_full,
    publisher_host/publisher_port (the source as the target server reaches it), max_lag_bytes, max_drift_rows.
    """

    id = "pg-sync"
    phase = 2
    depends_on = ("rds-restore",)
    reversibility = Reversibility.COMPENSABLE
    destructive = True  # the target tables are truncated and re-copied under the slot's snapshot

    class Settings(StepSettings):
        enabled: bool = Field(True, description="false: skip continuous sync (rds-restore's copy is the data move)")
        driver: Literal["logical", "aws-dms"] = Field("logical", description="logical replication or AWS DMS")
        name: str | None = Field(None, description="slot/publication/subscription name (default bpm_<env>_<db>)")
        workers: int = Field(2, ge=1, description="snapshot-copy streams")
        chunk_mb: float = Field(64, gt=0, description="snapshot-copy chunk size")
        chunk_rows: int = Field(500_000, ge=1, description="...or this many rows per chunk")
        pause_between_chunks_s: float = Field(0.0, ge=0, description="throttle the snapshot copy")
        replica_identity_full: bool = Field(
            False, description="ALTER TABLE ... REPLICA IDENTITY FULL on key-less tables (undone on rollback)"
        )
        max_lag_bytes: int = Field(64 * MB, ge=0, description="verify fails above this replication lag")
        max_drift_rows: int = Field(10_000, ge=0, description="verify: |source rows - target rows| per table")
        publisher_host: str | None = Field(None, description="the source as the TARGET server reaches it")
        publisher_port: int | None = Field(None, description="its port (default: postgres.source's)")
        slot_drop_timeout_s: float = Field(30, gt=0, description="how long teardown waits for the slot to go")
        pause_before_subscribe_s: float = Field(0.0, ge=0, description="hold before subscribing (tests, demos)")
        worker_timeout_s: float = Field(30, gt=0, description="how long apply waits for the apply worker")
        dms_instance_class: str = Field("dms.r6i.large", description="aws-dms: replication instance class")
        dms_storage_gb: int = Field(100, ge=1, description="aws-dms: replication instance storage")
        dms_subnet_group: str | None = Field(None, description="aws-dms: replication subnet group")
        dms_security_group_ids: list[str] = Field(default_factory=list, description="aws-dms: security groups")
        dms_timeout_s: float = Field(1800, gt=0, description="aws-dms: task start/stop timeout")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        if outputs.get("driver") == "aws-dms":
            return "AWS DMS full-load-and-cdc task"
        if "subscription" not in outputs:
            return ""
        parts = [f"{len(outputs.get('tables') or [])} tables streaming"]
        if outputs.get("rows_copied") is not None:
            parts.append(f"{int(outputs['rows_copied']):,} rows copied")
        if outputs.get("lag_bytes") is not None:
            parts.append(f"lag {int(outputs['lag_bytes']):,} B")
        return " · ".join(parts)

    def skip_reason(self, ctx: StepContext) -> str | None:
        if not _enabled(ctx):
            return "continuous sync is off ([steps.pg-sync] enabled = false): the stop-the-world rds-restore is used"
        return None

    def _driver(self, ctx: StepContext) -> str:
        driver = str(ctx.setting("driver", "logical"))
        if driver not in ("logical", "aws-dms"):
            raise ConfigError(
                f"[steps.pg-sync] driver = {driver!r} is not known",
                "pg-sync replicates with PostgreSQL logical replication or AWS DMS",
                'set driver = "logical" or driver = "aws-dms" in migrate.toml',
            )
        return driver

    def plan(self, ctx: StepContext) -> PlanResult:
        if self._driver(ctx) == "aws-dms":
            return _dms_plan(ctx)
        from ._common import extension_findings, not_replicated_findings

        source = _pg(ctx, "source")
        tables = _migrated_tables(source)
        result = PlanResult(data={"tables": [t.qualified for t in tables], "driver": "logical"})
        missing = _target_unknown(ctx, "postgres")
        if missing:
            result.unknown.append(missing)
            result.changes.append(Change("create", "publication, slot, snapshot copy, subscription"))
            return result
        sync = _pgsync(ctx)
        for p in sync.prerequisites(tables):
            level = p.level
            if "REPLICA IDENTITY" in p.message and ctx.setting("replica_identity_full", False):
                level = "warn"
            result.findings.append(Finding(level, p.message, p.fix))
        result.findings += extension_findings(source, sync.target)
        result.findings += not_replicated_findings(source)
        present = {t.qualified for t in sync.target.tables()}
        absent = [t.qualified for t in tables if t.qualified not in present]
        if absent:
            result.findings.append(
                Finding(
                    "block",
                    f"tables missing on the target: {', '.join(absent[:5])}",
                    f"apply rds-restore first (it restores the schema): bpmigrate apply --step rds-restore --env {ctx.env_name}",
                )
            )
        for orphan in sync.orphaned_slots():
            if orphan["slot"] != sync.slot:
                result.findings.append(
                    Finding(
                        "warn",
                        f"orphaned replication slot {orphan['slot']} on the source retains {orphan['retained_bytes']} "
                        "bytes of WAL",
                        f"SELECT pg_drop_replication_slot('{orphan['slot']}'); on the source if nothing uses it",
                    )
                )
        sub = sync.subscription_info()
        if sub:
            lag = sync.lag()
            result.in_place.append(
                f"subscription {sync.subscription} streaming (enabled {sub['enabled']}, lag {lag.bytes} bytes)"
            )
            return result
        pub = sync.publication_tables()
        if pub is None:
            result.changes.append(Change("create", f"publication {sync.publication}", f"{len(tables)} tables"))
        elif sorted(pub) != sorted(t.qualified for t in tables):
            result.changes.append(Change("update", f"publication {sync.publication}", "set its table list"))
        state = sync.state()
        slot = sync.slot_info()
        if slot and state.get("copy") == "done" and state.get("slot") == sync.slot:
            result.in_place.append(f"slot {sync.slot} with a finished snapshot copy: resumes from the slot")
        else:
            if slot:
                result.findings.append(
                    Finding("info", f"slot {sync.slot} exists but its snapshot copy did not finish: it is recreated")
                )
            result.changes.append(
                Change("create", f"replication slot {sync.slot}", "logical, pgoutput, with an exported snapshot")
            )
            total_rows = sum(t.est_rows for t in tables)
            total_mb = sum(t.bytes for t in tables) / MB
            result.changes.append(
                Change(
                    "replace",
                    f"rows of {len(tables)} target tables",
                    f"TRUNCATE then snapshot COPY (~{total_rows} rows, {total_mb:.0f} MB)",
                )
            )
        result.changes.append(
            Change("create", f"subscription {sync.subscription}", "copy_data = false, create_slot = false")
        )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        if self._driver(ctx) == "aws-dms":
            return _dms_apply(ctx)
        from migrate.adapters.pgsync import CopyChunk, Problem

        from ._common import extension_findings

        sync = _pgsync(ctx)
        source, target = sync.source, sync.target
        tables = _migrated_tables(source)
        changed_identity: list[str] = []
        if ctx.setting("replica_identity_full", False):
            changed_identity = sync.tables_without_identity(tables)
            if changed_identity:
                ctx.intent("replica-identity-full", tables=changed_identity, source=source.endpoint)
                sync.set_replica_identity(changed_identity, full=True)
        blocking = [p for p in sync.prerequisites(tables) if p.level == "block"]
        blocking += [
            Problem(f.level, f.message, f.fix) for f in extension_findings(source, target) if f.level == "block"
        ]
        if blocking:
            first = blocking[0]
            raise StepFailed(
                f"pg-sync prerequisites missing: {first.message}",
                "; ".join(p.message for p in blocking[1:4]) or "logical replication cannot start",
                first.fix,
            )
        present = {t.qualified for t in target.tables()}
        absent = [t.qualified for t in tables if t.qualified not in present]
        if absent:
            raise StepFailed(
                f"tables missing on the target: {', '.join(absent[:5])}",
                "pg-sync copies into the schema restored by rds-restore",
                f"bpmigrate apply --step rds-restore --env {ctx.env_name}",
            )
        names = [t.qualified for t in tables]
        ctx.intent("publication", name=sync.publication, source=source.endpoint, tables=len(names))
        pub = sync.ensure_publication(names)
        ctx.log(f"publication {sync.publication}: {pub}")
        out: dict[str, Any] = {
            "driver": "logical",
            "name": sync.name,
            "publication": sync.publication,
            "slot": sync.slot,
            "subscription": sync.subscription,
            "tables": names,
            "replica_identity_full": changed_identity,
            "resumed_from_slot": False,
        }
        sub = sync.subscription_info()
        if sub is not None:
            if not sub["enabled"]:
                ctx.intent("enable-subscription", name=sync.subscription)
                sync.enable_subscription()
            ctx.log(f"subscription {sync.subscription} exists: streaming continues from slot {sync.slot}")
            out["resumed_from_slot"] = True
        else:
            sync.ensure_state()
            state = sync.state()
            slot = sync.slot_info()
            if slot and state.get("copy") == "done" and state.get("slot") == sync.slot:
                ctx.log(f"snapshot copy already done at {state.get('consistent_lsn')}: resuming from slot {sync.slot}")
                out["resumed_from_slot"] = True
                out["consistent_lsn"] = state.get("consistent_lsn")
                out["rows_copied"] = int(state.get("rows", "0"))
            else:
                if slot:
                    ctx.intent("drop-stale-slot", slot=sync.slot, source=source.endpoint)
                    ctx.log(f"slot {sync.slot} exists but its snapshot copy did not finish: dropping and copying again")
                    sync.drop_slot(timeout=float(ctx.setting("slot_drop_timeout_s", 30)))
                ctx.intent("create-slot", slot=sync.slot, source=source.endpoint)
                exported = sync.create_slot_exported()
                try:
                    sync.put_state(slot=sync.slot, consistent_lsn=exported.consistent_lsn, copy="running")
                    ctx.intent("snapshot-copy", target=target.endpoint, tables=len(tables), snapshot=exported.snapshot)
                    sync.truncate_target(tables)
                    chunks: list[CopyChunk] = sync.plan_copy(
                        tables,
                        chunk_rows=int(ctx.setting("chunk_rows", 500_000)),
                        chunk_bytes=int(float(ctx.setting("chunk_mb", 64)) * MB),
                    )
                    with ctx.progress(
                        f"snapshot copy {source.dbname} → {target.endpoint}", total=float(len(chunks)), unit="chunks"
                    ) as bar:
                        result = sync.copy_snapshot(
                            tables,
                            chunks,
                            exported.snapshot,
                            workers=int(ctx.setting("workers", 2)),
                            on_chunk=lambda c, r, b: bar.advance(1, rows=float(r), bytes=float(b)),
                            pause_s=float(ctx.setting("pause_between_chunks_s", 0.0)),
                        )
                    sync.carry_sequences()
                    sync.put_state(copy="done", rows=str(result.rows))
                finally:
                    exported.close()
                ctx.metrics(rows=float(result.rows), bytes=float(result.bytes), seconds=result.seconds)
                out.update(
                    consistent_lsn=exported.consistent_lsn,
                    rows_copied=result.rows,
                    bytes_copied=result.bytes,
                    copy_seconds=round(result.seconds, 2),
                )
            hold = float(ctx.setting("pause_before_subscribe_s", 0.0))
            if hold > 0:
                ctx.log(f"holding {hold:g}s before subscribing (setting pause_before_subscribe_s)")
                time.sleep(hold)
            ctx.intent("create-subscription", name=sync.subscription, target=target.endpoint, slot=sync.slot)
            sync.create_subscription(
                sync.publisher_conninfo(ctx.setting("publisher_host"), ctx.setting("publisher_port"))
            )
        if not sync.wait_worker(float(ctx.setting("worker_timeout_s", 30))):
            raise StepFailed(
                f"subscription {sync.subscription} on {target.endpoint} has no running apply worker",
                "the target could not connect to the source (publisher_host/port, pg_hba, password) or lacks "
                "max_logical_replication_workers",
                f"read the target server's log, fix the cause and re-run: bpmigrate apply --step pg-sync --env {ctx.env_name}",
            )
        lag = sync.lag()
        out["lag_bytes"] = lag.bytes
        out["lag_seconds"] = lag.seconds
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        recorded = ctx.upstream.get(self.id, {})
        if recorded.get("driver") == "aws-dms" or self._driver(ctx) == "aws-dms":
            return _dms_verify(ctx)
        sync = _pgsync(ctx, recorded.get("name"))
        checks: list[Check] = []
        sub = sync.subscription_info()
        checks.append(
            Check(
                "subscription enabled with a running apply worker (target pg_stat_subscription)",
                bool(sub and sub["enabled"] and sub["worker_pid"]),
                observed=sub,
                expected="enabled, worker pid set",
            )
        )
        slot = sync.slot_info()
        checks.append(
            Check(
                "replication slot exists and is active (source pg_replication_slots)",
                bool(slot and slot["active"]),
                observed=slot,
                expected="active",
            )
        )
        lag = sync.lag()
        max_lag = int(ctx.setting("max_lag_bytes", 64 * MB))
        checks.append(
            Check(
                "replication lag (bytes, seconds)",
                lag.bytes is not None and lag.bytes <= max_lag,
                observed={"bytes": lag.bytes, "seconds": lag.seconds},
                expected=f"<= {max_lag} bytes",
            )
        )
        tables = _migrated_tables(sync.source)
        published = sync.publication_tables() or []
        missing = sorted({t.qualified for t in tables} - set(published))
        checks.append(
            Check(
                "every source table is published",
                not missing,
                observed=missing or "all",
                expected="all",
                detail="a table created on the source after pg-sync is not replicated: re-apply pg-sync",
            )
        )
        tolerance = int(ctx.setting("max_drift_rows", 10_000))
        for name, (src, dst) in sync.row_count_drift(tables).items():
            checks.append(
                Check(
                    f"row-count drift {name}",
                    abs(src - dst) <= tolerance,
                    observed={"source": src, "target": dst, "drift": src - dst},
                    expected=f"|drift| <= {tolerance} while writes run (0 after data-switch's fence)",
                )
            )
        orphans = [o for o in sync.orphaned_slots() if o["slot"] != sync.slot or not sub]
        checks.append(
            Check(
                "no orphaned bpmigrate replication slot on the source",
                not orphans,
                observed=orphans or "none",
                expected="none",
                detail="an unused slot retains WAL until the source's disk fills: drop it",
            )
        )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        recorded = ctx.upstream.get(self.id, {})
        if recorded.get("driver") == "aws-dms" or self._driver(ctx) == "aws-dms":
            _dms_rollback(ctx)
            return
        sync = _pgsync(ctx, recorded.get("name"))
        ctx.intent("teardown", subscription=sync.subscription, slot=sync.slot, publication=sync.publication)
        dropped = sync.teardown(timeout=float(ctx.setting("slot_drop_timeout_s", 30)))
        changed = list(recorded.get("replica_identity_full") or [])
        if changed:
            ctx.intent("replica-identity-default", tables=changed, source=sync.source.endpoint)
            sync.set_replica_identity(changed, full=False)
        sync.clear_state()
        ctx.log(f"pg-sync rollback dropped: {', '.join(dropped) or 'nothing (already absent)'}")
        if sync.slot_info() is not None:
            raise StepFailed(
                f"replication slot {sync.slot} still exists on {sync.source.endpoint} after rollback",
                "a slot left behind retains WAL and fills the source's disk",
                f"SELECT pg_drop_replication_slot('{sync.slot}'); on the source, then re-run the rollback",
            )
