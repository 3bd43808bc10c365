"""Step ``data-switch``: The controlled data switch: maintenance on, replication caught up, sequences set, data-validate's checks,"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from migrate.errors import FenceRefused, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

if TYPE_CHECKING:
    from migrate.adapters.pgsync import PgSync
from .._sync import MB, AppConfig, Maintenance, _dms, _dms_fence, _enabled, _endpoints, _pg, _pgsync, _write_marks


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
        mode = str(ctx.setting("validate", "verify"))
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
