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

import time
from typing import TYPE_CHECKING, Any

from migrate.errors import ConfigError, StepFailed
from migrate.step import Change, Check, Outputs, PlanResult, StepContext

if TYPE_CHECKING:
    from migrate.adapters.pgsync import PgSync
    from migrate.adapters.postgres import PostgresAdapter, TableInfo


MB = 1 << 20


def _pg(ctx: StepContext, role: str) -> PostgresAdapter:
    from .p2_data._common import pg

    return pg(ctx, role)


def _target_unknown(ctx: StepContext, kind: str) -> str | None:
    from .p2_data._common import _target_address_known

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
    """The tables logical replication can carry (unlogged ones cannot be published: pg-sync's plan names them)."""
    return [t for t in source.tables() if not t.unlogged]


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


def _redis_pair(ctx: StepContext) -> tuple[Any, Any, Any]:
    from .p2_data._common import rds, redis_routes

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


REVERSE_FOLLOWER_DIR = "redis-sync-reverse"


def redis_forward_stop(ctx: StepContext) -> None:
    """Stop the source -> target follower and restore the source's notify-keyspace-events (idempotent)."""
    from migrate.adapters.redis_sync import forget, recorded_previous, restore_notify, stop_follower

    workdir = ctx.state_dir / ctx.env_name / "redis-sync"
    previous = recorded_previous(workdir)
    if previous is None:
        previous = ctx.upstream.get("redis-sync", {}).get("notify_previous")
    ctx.intent("stop-follower", workdir=str(workdir))
    stop_follower(workdir)
    if previous is not None:
        restore_notify(ctx.adapters.redis("source"), str(previous))
    forget(workdir)


def _reverse_routes(routes: Any) -> list[Any] | None:
    from migrate.adapters.redis_copy import reverse_routes

    # a cluster's prefixed keys go back to their source DB without the prefix (the follower subscribes per primary)
    return reverse_routes(routes)


def redis_reverse_start(ctx: StepContext) -> dict[str, Any]:
    """A follower target -> source (writers fenced: both sides equal, its reconcile pass copies nothing new)."""
    from migrate.adapters.redis_sync import FollowerSpec, start_follower, wait_ready

    source, target, routes = _redis_pair(ctx)
    back = _reverse_routes(routes)
    if back is None:
        ctx.log("no Redis reverse follower: the target holds prefixed keys (cluster mode); Redis is not carried back")
        return {"started": False, "reason": "prefixed routes (cluster mode)"}
    workdir = ctx.state_dir / ctx.env_name / REVERSE_FOLLOWER_DIR
    spec = FollowerSpec.build(target, source, back, notify_previous=target.config_get("notify-keyspace-events"))
    ctx.intent("start-reverse-follower", workdir=str(workdir))
    start_follower(workdir, spec)
    ready = wait_ready(workdir, timeout=120.0)
    return {"started": True, "workdir": str(workdir), "pid": ready.get("pid")}


def redis_reverse_fence(ctx: StepContext, timeout: float) -> dict[str, Any]:
    from migrate.adapters.redis_sync import fence_follower

    return fence_follower(ctx.adapters.redis("target"), ctx.state_dir / ctx.env_name / REVERSE_FOLLOWER_DIR, timeout)


def redis_reverse_stop(ctx: StepContext) -> bool:
    from migrate.adapters.redis_sync import forget, recorded_previous, restore_notify, stop_follower

    workdir = ctx.state_dir / ctx.env_name / REVERSE_FOLLOWER_DIR
    previous = recorded_previous(workdir)
    ctx.intent("stop-reverse-follower", workdir=str(workdir))
    stopped = stop_follower(workdir)
    if previous is not None:
        restore_notify(ctx.adapters.redis("target"), previous)
    forget(workdir)
    return stopped


def reverse_status(ctx: StepContext, pg_sync_outputs: dict[str, Any]) -> dict[str, Any]:
    """The reverse stream now: {"pg": subscription info or None, "lag_bytes", "redis": follower alive}."""
    from migrate.adapters.redis_sync import follower_status

    out: dict[str, Any] = {"pg": None, "lag_bytes": None}
    if pg_sync_outputs.get("subscription"):
        rev = _pgsync(ctx, pg_sync_outputs.get("name")).reverse()
        out["pg"] = rev.subscription_info()
        out["lag_bytes"] = rev.lag().bytes
        out["name"] = rev.name
    out["redis"] = bool(follower_status(ctx.state_dir / ctx.env_name / REVERSE_FOLLOWER_DIR).get("alive"))
    return out


def validate_at_fence(ctx: StepContext, mode: str, sync: Any) -> None:
    """With the writers fenced and the stream caught up: data-validate's proof re-run (exact counts are exact
    now), and with ``mode = "full"`` the per-chunk checksums of both sides."""
    failed = [c for c in ctx.reverify("data-validate") if not c.ok]
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
                f"checksum mismatch: {bad[0].chunk.describe()}", f"{len(bad)} chunk(s) differ", "see the chunk"
            )
