"""Near-zero-downtime data cutover: continuous sync (PostgreSQL logical replication, Redis catch-up) and a
lag-gated switch.

* ``pg-sync`` (phase 2, after ``rds-restore``): publication + exported-snapshot slot on the source, a snapshot copy
  into the target tables restored by rds-restore (truncated first), then a subscription (``copy_data = false``)
  starting at the slot: no gap, no duplicate. ``driver = "aws-dms"`` uses AWS DMS instead (full-load-and-cdc).
* ``redis-sync`` (phase 2, after ``redis-migrate``): a follower process keeps the target current from keyspace
  notifications (writes, deletes, expirations) after a reconcile pass.
* ``data-switch`` (phase 5, before ``dns-cutover``): maintenance on → replication caught up to the fence LSN →
  Redis follower fenced → sequences carried → data-validate's checks → stream detached → app config pointed at the
  target → maintenance off. The write-downtime window is measured and recorded. A failed gate lifts maintenance with
  the app still on the source. Rollback is refused (``FenceRefused``) once the app has written to the target.

Steps talk to adapters only (``migrate.adapters.pgsync``, ``redis_sync``, ``aws_dms``, ``kube``, ``http``).
"""

from __future__ import annotations

import string
import time
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError, ConfigError, FenceRefused, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

if TYPE_CHECKING:
    from migrate.adapters.pgsync import PgSync
    from migrate.adapters.postgres import PostgresAdapter, TableInfo

MB = 1 << 20


# -- helpers -----------------------------------------------------------------------------------------------------
def _pg(ctx: StepContext, role: str) -> PostgresAdapter:
    from phases.p2_data import pg

    return pg(ctx, role)


def _target_unknown(ctx: StepContext, kind: str) -> str | None:
    from phases.p2_data import _target_address_known

    return _target_address_known(ctx, kind)


def _enabled(ctx: StepContext) -> bool:
    return bool(ctx.setting("enabled", True))


def _pgsync(ctx: StepContext, name: str | None = None) -> PgSync:
    from migrate.adapters.pgsync import PgSync, sync_name

    source, target = _pg(ctx, "source"), _pg(ctx, "target")
    if (source.host, source.port, source.dbname) == (target.host, target.port, target.dbname):
        raise ConfigError(
            f"postgres.source and postgres.target are the same database ({source.endpoint})",
            "replicating a database into itself would loop",
            "fix postgres.target in migrate.toml",
        )
    return PgSync(source, target, name or sync_name(ctx.env_name, source.dbname, ctx.setting("name")))


def _migrated_tables(source: PostgresAdapter) -> list[TableInfo]:
    return source.tables()


# -- pg-sync ---------------------------------------------------------------------------------------------------------
class PgSyncStep(Step):
    """Keep the target PostgreSQL current with native logical replication until data-switch.

    Publication on the source for every migrated table; a replication slot created with an exported snapshot; the
    target tables (schema from rds-restore) truncated and copied as of that snapshot; then a subscription with
    copy_data = false that streams from the slot — the copy and the stream join without gap or duplicate.
    A run killed after the copy resumes from its slot; one killed during the copy drops the slot and copies again.
    Rollback drops subscription, slot and publication (never leaves a slot that would fill the source's disk).
    Settings: enabled, driver ("logical" | "aws-dms"), workers, chunk_rows, chunk_mb, replica_identity_full,
    publisher_host/publisher_port (the source as the target server reaches it), max_lag_bytes, max_drift_rows.
    """

    id = "pg-sync"
    phase = 2
    depends_on = ("rds-restore",)
    reversibility = Reversibility.COMPENSABLE
    destructive = True  # the target tables are truncated and re-copied under the slot's snapshot

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
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        if self._driver(ctx) == "aws-dms":
            return _dms_plan(ctx)
        from phases.p2_data import extension_findings

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
        from phases.p2_data import extension_findings

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


# -- aws-dms driver (same step, driver = "aws-dms") -------------------------------------------------------------------
def _dms(ctx: StepContext) -> Any:
    from migrate.adapters.aws_dms import DmsDriver, DmsNames

    source, target = ctx.env.postgres.get("source"), ctx.env.postgres.get("target")
    if source is None or target is None:
        raise ConfigError(
            "the aws-dms driver needs postgres.source and postgres.target",
            "DMS endpoints are built from them",
            f"add them under [environments.{ctx.env_name}.postgres] in migrate.toml",
        )
    tgt = _pg(ctx, "target")
    names = DmsNames.for_env(ctx.env_name, str(ctx.setting("name", "") or ""))
    return DmsDriver(
        ctx.adapters.aws(),
        names,
        source={"host": source.host, "port": source.port, "dbname": source.dbname, "user": source.user},
        target={"host": tgt.host, "port": tgt.port, "dbname": tgt.dbname, "user": tgt.user},
        instance_class=str(ctx.setting("dms_instance_class", "dms.r6i.large")),
        storage_gb=int(ctx.setting("dms_storage_gb", 100)),
        source_password_env=ctx.env.postgres["source"].password_env,
        target_password_env=ctx.env.postgres["target"].password_env,
        subnet_group=ctx.setting("dms_subnet_group") or None,
        security_group_ids=[str(x) for x in ctx.setting("dms_security_group_ids", []) or []],
    )


def _dms_plan(ctx: StepContext) -> PlanResult:
    driver = _dms(ctx)
    result = PlanResult(data={"driver": "aws-dms", "names": driver.names.as_dict()})
    for kind, name, exists in driver.inventory():
        if exists:
            result.in_place.append(f"DMS {kind} {name}")
        else:
            result.changes.append(Change("create", f"DMS {kind} {name}"))
    return result


def _dms_apply(ctx: StepContext) -> Outputs:
    driver = _dms(ctx)
    ctx.intent("dms-ensure", **driver.names.as_dict())
    out = driver.ensure(timeout=float(ctx.setting("dms_timeout_s", 1800)))
    return {"driver": "aws-dms", **out}


def _dms_verify(ctx: StepContext) -> list[Check]:
    driver = _dms(ctx)
    status = driver.status()
    return [
        Check("DMS task running", status["status"] == "running", observed=status["status"], expected="running"),
        Check(
            "DMS full load finished",
            status["full_load_progress"] == 100,
            observed=status["full_load_progress"],
            expected=100,
        ),
        Check(
            "DMS validation state",
            status["validation_state"] not in ("Failed", "Mismatched records", "Error"),
            observed=status["validation_state"],
            expected="Validated / Pending records",
        ),
        Check("DMS validation enabled", bool(status["validation_enabled"]), observed=status["validation_enabled"]),
    ]


def _dms_fence(ctx: StepContext, timeout: float) -> dict[str, Any]:
    """Writes are stopped: wait until DMS's CDC made every table's row count equal, and validation is not failing."""
    driver = _dms(ctx)
    status = driver.status()
    if status["status"] != "running":
        raise StepFailed(
            f"the DMS task is {status['status']}, not running",
            "CDC is not replicating",
            "bpmigrate apply --step pg-sync",
        )
    sync = _pgsync(ctx)
    tables = _migrated_tables(sync.source)
    deadline = time.monotonic() + timeout
    while True:
        drift = {k: v for k, v in sync.row_count_drift(tables).items() if v[0] != v[1]}
        if not drift:
            break
        if time.monotonic() >= deadline:
            raise StepFailed(
                f"DMS did not catch up within {timeout:g}s: row counts differ for {', '.join(sorted(drift)[:5])}",
                f"source vs target rows: {dict(list(drift.items())[:5])}",
                "check the DMS task's CDC latency in the console; raise catchup_timeout_s if it is only slow",
            )
        time.sleep(0.5)
    status = driver.status()
    if status["validation_state"] in ("Failed", "Mismatched records", "Error"):
        raise StepFailed(
            f"DMS validation state is {status['validation_state']}", "DMS found differing rows", "see the DMS console"
        )
    return {"status": status["status"], "validation_state": status["validation_state"]}


def _dms_rollback(ctx: StepContext) -> None:
    driver = _dms(ctx)
    ctx.intent("dms-teardown", **driver.names.as_dict())
    for what in driver.teardown(timeout=float(ctx.setting("dms_timeout_s", 1800))):
        ctx.log(f"deleted DMS {what}")


# -- redis-sync --------------------------------------------------------------------------------------------------
def _redis_pair(ctx: StepContext) -> tuple[Any, Any, Any]:
    from phases.p2_data import rds, redis_routes

    source, target = rds(ctx, "source"), rds(ctx, "target")
    if (source.host, source.port) == (target.host, target.port):
        raise ConfigError(
            f"redis.source and redis.target are the same server ({source.endpoint})",
            "the follower would copy keys onto themselves",
            "fix redis.target in migrate.toml",
        )
    return source, target, redis_routes(ctx, source, target)


def _follower_dir(ctx: StepContext) -> Any:
    path = ctx.state_dir / ctx.env_name / "redis-sync"
    path.mkdir(parents=True, exist_ok=True)
    return path


class RedisSyncStep(Step):
    """Keep the target Redis current after redis-migrate until data-switch: a follower process subscribed to the
    source's keyspace notifications (notify-keyspace-events, set by this step and restored on rollback) re-copies
    every key written, and deletes on the target every key deleted, evicted or expired on the source. It reconciles
    once after subscribing (so nothing changed between redis-migrate and the subscription is missed).
    Lag = age of the oldest change not yet applied. Rollback stops the follower and restores the setting.
    """

    id = "redis-sync"
    phase = 2
    depends_on = ("redis-migrate",)
    reversibility = Reversibility.COMPENSABLE

    def skip_reason(self, ctx: StepContext) -> str | None:
        if not _enabled(ctx):
            return "continuous Redis sync is off ([steps.redis-sync] enabled = false)"
        return None

    def plan(self, ctx: StepContext) -> PlanResult:
        from migrate.adapters.redis_sync import follower_status

        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        source = ctx.adapters.redis("source")
        result = PlanResult()
        missing = _target_unknown(ctx, "redis")
        if missing:
            result.unknown.append(missing)
        status = follower_status(_follower_dir(ctx))
        if status.get("alive"):
            result.in_place.append(f"follower pid {status['pid']} running (lag {status.get('lag_ms')} ms)")
            return result
        flags = str(ctx.setting("notify_flags", "KEA"))
        try:
            current = source.call(lambda: source.client(0).config_get("notify-keyspace-events"), "CONFIG GET")
        except AdapterError as exc:
            result.findings.append(
                Finding(
                    "block",
                    f"cannot read notify-keyspace-events on the source ({exc.what})",
                    "the follower needs CONFIG GET/SET on the source Redis (not renamed or disabled): allow it, or set "
                    f"notify-keyspace-events {flags} in the source's redis.conf and restart it",
                )
            )
            return result
        result.changes.append(
            Change(
                "update",
                "source notify-keyspace-events",
                f"{current.get('notify-keyspace-events', '')!r} -> {flags!r} (restored on rollback)",
            )
        )
        result.changes.append(Change("create", "redis follower process", "reconcile pass, then keyspace events"))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        from migrate.adapters.redis_sync import (
            FollowerSpec,
            follower_status,
            recorded_previous,
            start_follower,
            wait_ready,
        )

        source, target, routes_ = _redis_pair(ctx)
        workdir = _follower_dir(ctx)
        status = follower_status(workdir)
        previous = recorded_previous(workdir)
        if not status.get("alive"):
            flags = str(ctx.setting("notify_flags", "KEA"))
            if previous is None:  # first start: remember the value to restore (a crashed follower's spec keeps it)
                current = source.call(lambda: source.client(0).config_get("notify-keyspace-events"), "CONFIG GET")
                previous = str(current.get("notify-keyspace-events", ""))
            spec = FollowerSpec.build(source, target, routes_, notify_flags=flags, notify_previous=previous)
            ctx.intent("start-follower", workdir=str(workdir), flags=flags, previous=previous)
            start_follower(workdir, spec)
        ready = wait_ready(workdir, timeout=float(ctx.setting("ready_timeout_s", 600)))
        return {
            "pid": ready["pid"],
            "workdir": str(workdir),
            "notify_previous": previous if previous is not None else ready.get("notify_previous"),
            "reconciled_keys": ready.get("reconciled_keys"),
            "lag_ms": ready.get("lag_ms"),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.redis_sync import follower_status

        status = follower_status(_follower_dir(ctx))
        max_lag = float(ctx.setting("max_lag_ms", 5000))
        source = ctx.adapters.redis("source")
        flags = source.call(lambda: source.client(0).config_get("notify-keyspace-events"), "CONFIG GET")
        current = str(flags.get("notify-keyspace-events", ""))
        return [
            Check("follower process alive", bool(status.get("alive")), observed=status.get("pid"), expected="running"),
            Check(
                "follower lag (ms)",
                status.get("lag_ms") is not None and float(status["lag_ms"]) <= max_lag,
                observed=status.get("lag_ms"),
                expected=f"<= {max_lag:g}",
            ),
            Check(
                "source publishes keyspace events (CONFIG GET)",
                "E" in current and ("A" in current or "g" in current),
                observed=current,
                expected="E + A",
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        from migrate.adapters.redis_sync import (
            follower_status,
            forget,
            recorded_previous,
            restore_notify,
            stop_follower,
        )

        workdir = _follower_dir(ctx)
        status = follower_status(workdir)
        previous = recorded_previous(workdir)
        if previous is None:
            previous = (ctx.upstream.get(self.id) or {}).get("notify_previous")
        ctx.intent("stop-follower", pid=status.get("pid"))
        stop_follower(workdir)
        if previous is not None:
            source = ctx.adapters.redis("source")
            ctx.intent("restore-notify", value=previous)
            restore_notify(source, str(previous))
        forget(workdir)


# -- data-switch -------------------------------------------------------------------------------------------------
class Maintenance:
    """The configurable read-only/maintenance hook: scale writers to 0 (kube), an HTTP flag, or none."""

    def __init__(self, ctx: StepContext) -> None:
        raw = dict(ctx.setting("maintenance", {}) or {})
        self.ctx = ctx
        self.kind = str(raw.get("kind", "none"))
        if self.kind not in ("none", "scale", "http"):
            raise ConfigError(
                f"[steps.data-switch] maintenance.kind = {self.kind!r} is not known",
                "the hook is scale (Deployments to 0 replicas), http (on_url/off_url) or none",
                'set maintenance = {kind = "scale", deployments = ["api-gateway"]} in migrate.toml',
            )
        self.deployments = [str(d) for d in raw.get("deployments", [])]
        self.namespace = str(raw.get("namespace") or ctx.env.kube.namespace)
        self.on_url = str(raw.get("on_url", ""))
        self.off_url = str(raw.get("off_url", ""))
        self.timeout = float(raw.get("timeout_s", 120))
        if self.kind == "http" and not (self.on_url and self.off_url):
            raise ConfigError(
                "maintenance kind http needs on_url and off_url",
                "the switch must be able to both enter and leave maintenance",
                'set maintenance = {kind = "http", on_url = "...", off_url = "..."} under [steps.data-switch]',
            )

    def unavailable(self) -> str | None:
        if self.kind == "scale":
            return self.ctx.adapters.kube().unreachable_reason()
        return None

    def _split(self, ref: str) -> tuple[str, str]:
        return (ref.split("/", 1)[0], ref.split("/", 1)[1]) if "/" in ref else (self.namespace, ref)

    def on(self, recorded: dict[str, Any] | None) -> dict[str, Any]:
        """Enter maintenance; returns what off() needs (previous replica counts), keeping an earlier record."""
        if self.kind == "http":
            self.ctx.intent("maintenance-on", url=self.on_url)
            resp = self.ctx.adapters.http().post(self.on_url, timeout=self.timeout)
            if not resp.ok:
                raise StepFailed(
                    f"maintenance on: POST {self.on_url} answered HTTP {resp.status}",
                    resp.body[:200],
                    "check the maintenance endpoint and re-run data-switch",
                )
            return {"kind": "http"}
        if self.kind == "scale":
            kube = self.ctx.adapters.kube()
            replicas: dict[str, int] = dict((recorded or {}).get("replicas") or {})
            for ref in self.deployments:
                ns, name = self._split(ref)
                obj = kube.get("apps/v1", "Deployment", name, ns)
                if obj is None:
                    raise StepFailed(
                        f"maintenance on: Deployment {ns}/{name} not found",
                        "the writers to stop are named in [steps.data-switch] maintenance.deployments",
                        "fix the list in migrate.toml and re-run",
                    )
                if ref not in replicas:
                    replicas[ref] = int((obj.get("spec") or {}).get("replicas", 1))
                    # durable before scaling: a run killed half-way still knows what to scale back to
                    self.ctx.checkpoints.put("maintenance", {"kind": "scale", "replicas": replicas})
                self.ctx.intent("scale-to-zero", deployment=f"{ns}/{name}", previous=replicas[ref])
                kube.scale("Deployment", name, ns, 0)
            deadline = time.monotonic() + self.timeout
            for ref in self.deployments:
                ns, name = self._split(ref)
                while True:
                    obj = kube.get("apps/v1", "Deployment", name, ns) or {}
                    if int((obj.get("status") or {}).get("replicas") or 0) == 0:
                        break
                    if time.monotonic() >= deadline:
                        raise StepFailed(
                            f"maintenance on: Deployment {ns}/{name} still has pods after {self.timeout:g}s",
                            "writers may still be running: the fence would not hold",
                            f"kubectl -n {ns} get pods; re-run data-switch",
                        )
                    time.sleep(0.2)
            return {"kind": "scale", "replicas": replicas}
        return {"kind": "none"}

    def off(self, recorded: dict[str, Any]) -> None:
        if self.kind == "http":
            self.ctx.intent("maintenance-off", url=self.off_url)
            resp = self.ctx.adapters.http().post(self.off_url, timeout=self.timeout)
            if not resp.ok:
                raise StepFailed(
                    f"maintenance off: POST {self.off_url} answered HTTP {resp.status}",
                    resp.body[:200],
                    f"lift maintenance by hand (POST {self.off_url}); the data switch itself is recorded",
                )
        elif self.kind == "scale":
            kube = self.ctx.adapters.kube()
            for ref, n in dict(recorded.get("replicas") or {}).items():
                ns, name = self._split(ref)
                self.ctx.intent("scale-back", deployment=f"{ns}/{name}", replicas=n)
                kube.scale("Deployment", name, ns, int(n))


def _endpoints(ctx: StepContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "target" in ctx.env.postgres:
        t = _pg(ctx, "target")
        out.update(pg_host=t.host, pg_port=t.port, pg_dbname=t.dbname)
    if "target" in ctx.env.redis:
        from phases.p2_data import rds

        r = rds(ctx, "target")
        out.update(redis_host=r.host, redis_port=r.port)
    return out


class AppConfig:
    """Points the app's ConfigMap at the target (values are templates over the target endpoints)."""

    def __init__(self, ctx: StepContext) -> None:
        raw = dict(ctx.setting("app_config", {}) or {})
        self.ctx = ctx
        self.name = str(raw.get("configmap", ""))
        self.namespace = str(raw.get("namespace") or ctx.env.kube.namespace)
        self.templates = {str(k): str(v) for k, v in dict(raw.get("data", {}) or {}).items()}

    def reachable(self) -> bool:
        return bool(self.name) and self.ctx.adapters.kube().unreachable_reason() is None

    def values(self, endpoints: dict[str, Any]) -> dict[str, str]:
        try:
            return {k: string.Template(v).substitute(endpoints) for k, v in self.templates.items()}
        except KeyError as exc:
            raise ConfigError(
                f"[steps.data-switch] app_config.data uses ${{{exc.args[0]}}}, which is not known",
                f"known names: {', '.join(sorted(endpoints))}",
                "fix the template in migrate.toml",
            ) from None

    def point(self, endpoints: dict[str, Any]) -> dict[str, str | None]:
        """Patch the ConfigMap; returns the previous values (None = key absent) for rollback."""
        kube = self.ctx.adapters.kube()
        current = kube.get("v1", "ConfigMap", self.name, self.namespace)
        if current is None:
            raise StepFailed(
                f"ConfigMap {self.namespace}/{self.name} not found",
                "data-switch points the app's existing configuration at the target",
                "fix [steps.data-switch] app_config.configmap (or deploy the app first) and re-run",
            )
        data = dict(current.get("data") or {})
        new = self.values(endpoints)
        previous = {k: data.get(k) for k in new}
        self.ctx.intent("patch-configmap", configmap=f"{self.namespace}/{self.name}", keys=sorted(new))
        kube.patch("v1", "ConfigMap", self.name, self.namespace, {"data": new})
        return previous

    def revert(self, previous: dict[str, str | None]) -> None:
        kube = self.ctx.adapters.kube()
        self.ctx.intent("revert-configmap", configmap=f"{self.namespace}/{self.name}", keys=sorted(previous))
        kube.patch("v1", "ConfigMap", self.name, self.namespace, {"data": dict(previous)})


def _write_marks(sync: PgSync, tables: list[str]) -> dict[str, Any]:
    """What tells whether the app wrote to the target after the switch: row change counters and sequences."""
    rows = sync.target.query(
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_user_tables "
        "WHERE schemaname || '.' || relname = ANY(%s)",
        [tables],
    )
    seqs = {s.qualified: s.last_value for s in sync.target.sequences()}
    return {"changes": int(rows[0][0]), "sequences": seqs}


class DataSwitch(Step):
    """The controlled data switch: maintenance on, replication caught up, sequences set, data-validate's checks,
    app config pointed at the target, maintenance off — with the write-downtime window measured.

    Gates (any failure lifts maintenance with the app still on the source and the stream still running): the
    subscription confirmed every source change up to the fence LSN taken after writes stopped; the Redis follower
    applied every event published before its fence; data-validate's checks (exact row counts + extensions; with
    validate = "full" the per-chunk checksums too). Then the stream is detached (subscription, slot, publication
    dropped), the app's ConfigMap is patched (or, without a cluster, the endpoints are recorded as outputs) and
    maintenance is lifted. One-way only once the app has written to the target: rollback then raises FenceRefused.
    Settings: maintenance = {kind = "scale", deployments = [...]} | {kind = "http", on_url, off_url} | {kind =
    "none"}; catchup_timeout_s; validate = "verify" | "full"; app_config = {configmap, namespace, data = {KEY =
    "${pg_host}"}}.
    """

    id = "data-switch"
    phase = 5
    depends_on = ("pg-sync", "redis-sync", "data-validate")
    reversibility = Reversibility.COMPENSABLE
    causes_downtime = True  # the write-downtime window of the cutover
    gate = None
    timeout = 3600.0

    def skip_reason(self, ctx: StepContext) -> str | None:
        if not _enabled(ctx):
            return "data-switch is off ([steps.data-switch] enabled = false)"
        hook = Maintenance(ctx)
        reason = hook.unavailable()
        if reason:
            return f"maintenance hook 'scale' needs a cluster: {reason}"
        pg_on = bool(
            ctx.upstream.get("pg-sync", {}).get("subscription") or ctx.upstream.get("pg-sync", {}).get("driver")
        )  # driver is recorded by both the logical and the aws-dms paths
        redis_on = bool(ctx.upstream.get("redis-sync", {}).get("workdir"))
        if not pg_on and not redis_on:
            return "no continuous sync is running (pg-sync and redis-sync not applied): nothing to switch"
        return None

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        hook = Maintenance(ctx)
        result = PlanResult(data={"maintenance": hook.kind})
        done = ctx.checkpoints.get("switched")
        if done:
            result.in_place.append(f"switched at {done.get('at')}: the app uses the target")
            return result
        result.changes.append(
            Change("run", f"maintenance on ({hook.kind})", ", ".join(hook.deployments) or hook.on_url)
        )
        if hook.kind == "none":
            result.findings.append(
                Finding(
                    "warn",
                    "no maintenance hook: nothing stops the app's writes during the switch",
                    'set [steps.data-switch] maintenance = {kind = "scale", deployments = [...]} or kind = "http"',
                )
            )
        pg_out = ctx.upstream.get("pg-sync", {})
        if pg_out.get("subscription"):
            sync = _pgsync(ctx, pg_out.get("name"))
            lag = sync.lag()
            result.changes.append(
                Change("run", "wait for replication to reach the fence LSN", f"current lag {lag.bytes} bytes")
            )
            result.changes.append(Change("update", "target sequences", "setval from the source values"))
            result.changes.append(Change("run", "data-validate checks", str(ctx.setting("validate", "verify"))))
            result.changes.append(Change("delete", f"subscription, slot and publication {sync.name}"))
        if ctx.upstream.get("redis-sync", {}).get("workdir"):
            result.changes.append(Change("run", "fence and stop the Redis follower"))
        cfg = AppConfig(ctx)
        if cfg.reachable():
            result.changes.append(Change("update", f"ConfigMap {cfg.namespace}/{cfg.name}", ", ".join(cfg.templates)))
        else:
            result.findings.append(
                Finding(
                    "info",
                    "no ConfigMap to patch (no cluster reachable or app_config not set): the target endpoints are "
                    "recorded as outputs; point the app at them by hand",
                )
            )
        result.changes.append(Change("run", "maintenance off"))
        return result

    # -- apply ---------------------------------------------------------------------------------------------------
    def apply(self, ctx: StepContext) -> Outputs:
        done = ctx.checkpoints.get("switched")
        hook = Maintenance(ctx)
        if done:  # a run killed/failed after the switch point: only maintenance may still need lifting
            outputs = dict(done.get("outputs") or {})
            if not ctx.checkpoints.get("maintenance-off"):
                hook.off(dict(ctx.checkpoints.get("maintenance") or {}))
                ctx.checkpoints.put("maintenance-off", {"at": time.time()})
                if "write_downtime_s" not in outputs and outputs.get("maintenance_started_at"):
                    downtime = time.time() - float(outputs["maintenance_started_at"])
                    outputs["write_downtime_s"] = round(downtime, 3)
                    outputs["write_downtime_interrupted"] = True  # includes the time until this re-run
                    ctx.metrics(write_downtime_s=downtime)
                ctx.checkpoints.put("switched", {"at": outputs.get("switched_at"), "outputs": outputs})
            return outputs
        pg_out = ctx.upstream.get("pg-sync", {})
        redis_out = ctx.upstream.get("redis-sync", {})
        sync = _pgsync(ctx, pg_out.get("name")) if pg_out.get("subscription") else None
        dms = pg_out.get("driver") == "aws-dms"
        tables = list(pg_out.get("tables") or [])
        started_wall = time.time()
        t0 = time.monotonic()
        try:
            recorded = hook.on(ctx.checkpoints.get("maintenance"))
        except Exception as exc:
            partial = dict(ctx.checkpoints.get("maintenance") or {"kind": hook.kind})
            ctx.log(f"entering maintenance failed ({exc}); undoing what was done")
            hook.off(partial)
            ctx.checkpoints.clear()
            raise StepFailed(
                f"data-switch could not enter maintenance: {exc}",
                "nothing was switched; the app keeps writing to the source",
                f"fix the maintenance hook ([steps.data-switch] maintenance) and re-run "
                f"`bpmigrate apply --step data-switch --env {ctx.env_name}`",
            ) from exc
        ctx.checkpoints.put("maintenance", recorded)
        timings: dict[str, float] = {"maintenance_on_s": time.monotonic() - t0}
        config_prev: dict[str, str | None] | None = None
        cfg = AppConfig(ctx)
        out: dict[str, Any] = {"maintenance": hook.kind, "maintenance_started_at": started_wall}
        try:
            if sync is not None:
                t = time.monotonic()
                fence = sync.fence_lsn()
                waited = sync.wait_confirmed(fence, float(ctx.setting("catchup_timeout_s", 60)))
                out["fence_lsn"] = fence
                timings["catchup_s"] = waited
                t = time.monotonic()
                ctx.intent("set-sequences", target=sync.target.endpoint)
                out["sequences_set"] = sync.carry_sequences()
                timings["sequences_s"] = time.monotonic() - t
            if dms:
                t = time.monotonic()
                out["dms"] = _dms_fence(ctx, float(ctx.setting("catchup_timeout_s", 60)))
                timings["catchup_s"] = time.monotonic() - t
                ctx.intent("set-sequences", target=_pg(ctx, "target").endpoint)
                out["sequences_set"] = _pgsync(ctx).carry_sequences()
            if redis_out.get("workdir"):
                from migrate.adapters.redis_sync import fence_follower

                t = time.monotonic()
                source = ctx.adapters.redis("source")
                out["redis_fence"] = fence_follower(
                    source, ctx.state_dir / ctx.env_name / "redis-sync", float(ctx.setting("catchup_timeout_s", 60))
                )
                timings["redis_fence_s"] = time.monotonic() - t
            if sync is not None or dms:
                t = time.monotonic()
                self._validate(ctx, sync or _pgsync(ctx))
                timings["validate_s"] = time.monotonic() - t
        except Exception as exc:
            ctx.log(f"data-switch gate failed ({exc}); lifting maintenance with the app on the source")
            hook.off(recorded)
            downtime = time.monotonic() - t0
            ctx.metrics(write_downtime_s=downtime, gate_failed=1.0)
            ctx.checkpoints.clear()
            raise StepFailed(
                f"data-switch gate failed: {exc}",
                f"writes resumed on the source after {downtime:.2f}s of maintenance; replication keeps running",
                f"fix the cause, check `bpmigrate verify --step pg-sync --env {ctx.env_name}`, then re-run "
                f"`bpmigrate apply --step data-switch --env {ctx.env_name}`",
            ) from exc
        # -- the switch point: from here the target is authoritative -------------------------------------------
        try:
            if sync is not None:
                t = time.monotonic()
                ctx.intent("detach-stream", name=sync.name)
                out["detached"] = sync.teardown(timeout=float(ctx.setting("slot_drop_timeout_s", 30)))
                timings["detach_s"] = time.monotonic() - t
                out["write_marks"] = _write_marks(sync, tables)
            if dms:
                ctx.intent("dms-stop-task")
                out["dms_stopped"] = _dms(ctx).stop(timeout=float(ctx.setting("catchup_timeout_s", 60)))
            if redis_out.get("workdir"):
                from migrate.adapters.redis_sync import forget, recorded_previous, restore_notify, stop_follower

                workdir = ctx.state_dir / ctx.env_name / "redis-sync"
                previous = recorded_previous(workdir)
                if previous is None:
                    previous = redis_out.get("notify_previous")
                ctx.intent("stop-follower", workdir=str(workdir))
                stop_follower(workdir)
                if previous is not None:
                    restore_notify(ctx.adapters.redis("source"), str(previous))
                forget(workdir)
            endpoints = _endpoints(ctx)
            out["endpoints"] = endpoints
            if cfg.reachable():
                t = time.monotonic()
                config_prev = cfg.point(endpoints)
                out["config_previous"] = config_prev
                out["configmap"] = f"{cfg.namespace}/{cfg.name}"
                timings["config_s"] = time.monotonic() - t
            else:
                out["configmap"] = None
                ctx.log(
                    "no ConfigMap patched (no cluster reachable or [steps.data-switch] app_config not set): "
                    f"point the app at {endpoints} by hand"
                )
            out["switched_at"] = time.time()
            ctx.checkpoints.put("switched", {"at": out["switched_at"], "outputs": dict(out)})
        except Exception as exc:
            ctx.log(f"data-switch failed after the gates ({exc}); reverting to the source")
            if config_prev is not None:
                cfg.revert(config_prev)
            hook.off(recorded)
            ctx.checkpoints.clear()
            raise StepFailed(
                f"data-switch failed while switching: {exc}",
                "the app still uses the source and writes resumed there; the stream may have been detached",
                f"re-run `bpmigrate apply --step pg-sync --env {ctx.env_name}` (copies again if needed), then "
                f"`bpmigrate apply --step data-switch --env {ctx.env_name}`",
            ) from exc
        t = time.monotonic()
        hook.off(recorded)
        timings["maintenance_off_s"] = time.monotonic() - t
        downtime = time.monotonic() - t0
        out["write_downtime_s"] = round(downtime, 3)
        out["timings"] = {k: round(v, 3) for k, v in timings.items()}
        ctx.metrics(write_downtime_s=downtime)
        ctx.checkpoints.put("switched", {"at": out["switched_at"], "outputs": out})
        ctx.checkpoints.put("maintenance-off", {"at": time.time()})
        ctx.log(f"data-switch: write downtime {downtime:.2f}s ({out['timings']})")
        return out

    def _validate(self, ctx: StepContext, sync: PgSync) -> None:
        from phases.p2_data import DataValidate

        mode = str(ctx.setting("validate", "verify"))
        failed = [c for c in DataValidate().verify(ctx) if not c.ok]
        if failed:
            c = failed[0]
            raise StepFailed(
                f"data-validate check failed: {c.name} (source {c.expected}, target {c.observed})",
                f"{len(failed)} check(s) failed",
                "see the check named",
            )
        if mode == "full":
            from migrate.adapters.postgres import validate_chunks, validation_chunks

            tables = sync.source.tables()
            chunks = validation_chunks(sync.source, tables, chunk_rows=1_000_000, chunk_bytes=128 * MB)
            bad = [v for v in validate_chunks(sync.source, sync.target, tables, chunks) if not v.ok]
            if bad:
                raise StepFailed(
                    f"checksum mismatch: {bad[0].chunk.describe()}",
                    f"{len(bad)} chunk(s) differ",
                    "see the chunk named",
                )

    # -- verify / rollback -------------------------------------------------------------------------------------
    def verify(self, ctx: StepContext) -> list[Check]:
        out = ctx.upstream.get(self.id, {})
        checks = [
            Check(
                "write downtime recorded",
                out.get("write_downtime_s") is not None,
                observed=out.get("write_downtime_s"),
                expected="seconds",
            )
        ]
        pg_out = ctx.upstream.get("pg-sync", {})
        if pg_out.get("subscription"):
            sync = _pgsync(ctx, pg_out.get("name"))
            checks.append(
                Check(
                    "stream detached: no subscription on the target",
                    sync.subscription_info() is None,
                    observed=sync.subscription_info(),
                    expected=None,
                )
            )
            checks.append(
                Check(
                    "no replication slot left on the source",
                    sync.slot_info() is None and not sync.orphaned_slots(),
                    observed=sync.slot_info() or sync.orphaned_slots() or "none",
                    expected="none",
                )
            )
        cfg = AppConfig(ctx)
        if out.get("configmap") and cfg.reachable():
            current = (ctx.adapters.kube().get("v1", "ConfigMap", cfg.name, cfg.namespace) or {}).get("data") or {}
            want = cfg.values(dict(out.get("endpoints") or {}))
            checks.append(
                Check(
                    "app ConfigMap points at the target",
                    all(current.get(k) == v for k, v in want.items()),
                    observed={k: current.get(k) for k in want},
                    expected=want,
                )
            )
        return checks

    def app_wrote_to_target(self, ctx: StepContext) -> bool:
        out = ctx.upstream.get(self.id, {}) or dict((ctx.checkpoints.get("switched") or {}).get("outputs") or {})
        marks = out.get("write_marks")
        pg_out = ctx.upstream.get("pg-sync", {})
        if not marks or not pg_out.get("subscription"):
            return False
        sync = _pgsync(ctx, pg_out.get("name"))
        now = _write_marks(sync, list(pg_out.get("tables") or []))
        return bool(now["changes"] > int(marks["changes"]) or now["sequences"] != marks["sequences"])

    def rollback(self, ctx: StepContext) -> None:
        out = ctx.upstream.get(self.id, {}) or dict((ctx.checkpoints.get("switched") or {}).get("outputs") or {})
        if not out.get("switched_at"):
            ctx.log("data-switch never reached the switch point: nothing to undo")
            ctx.checkpoints.clear()
            return
        force = bool(getattr(ctx, "force_past_fence", False) or ctx.setting("force_past_fence", False))
        if self.app_wrote_to_target(ctx) and not force:
            raise FenceRefused(
                "data-switch is past its one-way fence: the app has written to the target since the switch",
                "switching back to the source would lose those writes (nothing replicates target → source)",
                f"bpmigrate rollback --step data-switch --env {ctx.env_name} --force-past-fence",
            )
        prev = out.get("config_previous")
        cfg = AppConfig(ctx)
        if prev and cfg.reachable():
            cfg.revert(dict(prev))
        else:
            ctx.log(f"point the app back at the source by hand (it was switched to {out.get('endpoints')})")
        ctx.checkpoints.clear()
        ctx.log(
            "data-switch rolled back: the app uses the source again; re-apply pg-sync/redis-sync to resume streaming "
            "before switching again"
        )


__all__ = ["DataSwitch", "PgSyncStep", "RedisSyncStep"]
