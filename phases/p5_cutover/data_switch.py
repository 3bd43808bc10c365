"""Step ``data-switch``: one writer at every instant — fence every stack, let replication catch up, point every
stack at the target, start the reverse stream, release."""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import Field

from migrate.errors import Blocked, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from .._cutover_data import drain_reverse, redis_forward_fence, switch, timed, undo_switch
from .._sync import _dms_fence, _enabled, _pg, _pgsync, redis_reverse_fence, redis_reverse_stop, validate_at_fence
from .._writers import AppConfig, Writers, point_stacks_back

UNFENCED_ENVS = ("staging", "production")


class DataSwitch(Step):
    """One writer at every instant: fence the writers, wait for replication, point every stack at the target.

    1. Every stack that can write is fenced (``fences``: ``compose`` = docker compose stop on the old host,
       ``http`` = the app's maintenance URLs, ``process`` = a local process's config file (the sandbox),
       ``scale`` = Kubernetes Deployments to 0). From here nothing writes anywhere.
    2. Gates: the subscription confirmed every source change up to the fence LSN; the Redis follower applied every
       event before its fence; sequences carried; data-validate's checks (``validate = "full"``: + checksums).
       A failed gate releases the fences with every stack still on the source and the stream still running.
    3. The switch (checkpointed as ``gated``: a killed run resumes here, writers still fenced): the forward stream
       is detached, the REVERSE stream is started (publication + slot on the target, subscription on the source;
       a Redis follower target → source), every stack is pointed at the target (compose env override, repoint URL,
       config file; the ConfigMap with ``app_config``), the fences are released. Write downtime is measured.

    Rollback (while the watch window lasts): fence every stack, wait until the reverse stream confirmed the
    target's fence LSN (lag 0) and the Redis follower its fence, carry sequences back, detach the reverse stream,
    point every stack at the source, release — no acknowledged write is lost. In staging/production a switch
    with no fence on the old stack is refused (exit 3).
    """

    id = "data-switch"
    phase = 5
    depends_on = ("pg-sync", "redis-sync", "data-validate")
    reversibility = Reversibility.COMPENSABLE
    causes_downtime = True  # the write-downtime window of the cutover
    gate = None
    timeout = 3600.0

    class Settings(StepSettings):
        enabled: bool = Field(True, description="false = no continuous sync to switch (stop-the-world restore used)")
        fences: list[dict[str, Any]] = Field(
            default_factory=list,
            description='writer stacks: {name, kind = "compose"|"http"|"process"|"scale", ...} (see the README)',
        )
        maintenance: dict[str, Any] = Field(
            default_factory=lambda: {"kind": "none"}, description="one more fence (older single-hook form)"
        )
        data_env: dict[str, str] = Field(
            default_factory=dict,
            description="templates of the env the stacks get (DATABASE_URL, REDIS_URL) over ${pg_host} ${pg_port} "
            "${pg_dbname} ${pg_user} ${redis_host} ${redis_port} ${redis_scheme}; other ${VAR} left for Compose",
        )
        catchup_timeout_s: float = Field(60, gt=0, description="replication must reach the fence within this")
        validation: str = Field(
            "verify", alias="validate", pattern="^(verify|full)$", description="verify | full (+ chunk checksums)"
        )
        app_config: dict[str, Any] = Field(default_factory=dict, description="{configmap, namespace, data} to patch")
        slot_drop_timeout_s: float = Field(30, gt=0, description="wait for the forward slot to be dropped")
        reverse: bool = Field(True, description="start the reverse stream (target -> source) at the switch")
        reverse_publisher_host: str = Field("", description="the target as the SOURCE server reaches it")
        reverse_publisher_port: int = Field(0, ge=0, description="its port (0 = the target's port)")
        name: str | None = Field(None, description="the stream's name (default bpm_<env>_<db>)")
        dms_instance_class: str = Field("dms.r6i.large", description="aws-dms driver only")
        dms_storage_gb: int = Field(100, description="aws-dms driver only")
        dms_subnet_group: str | None = Field(None, description="aws-dms driver only")
        dms_security_group_ids: list[str] = Field(default_factory=list, description="aws-dms driver only")
        force_past_fence: bool = Field(False, description="(tests) as --force-past-fence")

    def skip_reason(self, ctx: StepContext) -> str | None:
        if not _enabled(ctx):
            return "data-switch is off ([steps.data-switch] enabled = false)"
        reason = Writers(ctx).unavailable()
        if reason:
            return f"fence kind 'scale' needs a cluster: {reason}"
        if not self._pg_on(ctx) and not self._redis_on(ctx):
            return "no continuous sync is running (pg-sync and redis-sync not applied): nothing to switch"
        return None

    @staticmethod
    def _pg_on(ctx: StepContext) -> bool:  # driver is recorded by both the logical and the aws-dms paths
        out = ctx.upstream.get("pg-sync", {})
        return bool(out.get("subscription") or out.get("driver"))

    @staticmethod
    def _redis_on(ctx: StepContext) -> bool:
        return bool(ctx.upstream.get("redis-sync", {}).get("workdir"))

    def _refuse_unfenced(self, ctx: StepContext, writers: Writers) -> Finding | None:
        if ctx.env_name not in UNFENCED_ENVS or writers.fences_old_stack():
            return None
        return Finding(
            "block",
            f"no fence stops the old stack's writers in {ctx.env_name} (fences: {writers.describe()}): after the "
            "switch it would keep writing to the source that nothing replicates any more",
            f'add to [environments.{ctx.env_name}.steps.data-switch] fences = [{{ name = "compose", kind = '
            '"compose", compose_file = "/srv/betterprompts/docker-compose.yml", services = ["api-gateway"] }]',
        )

    def plan(self, ctx: StepContext) -> PlanResult:
        writers = Writers(ctx)
        result = PlanResult(data={"fences": writers.describe()})
        refused = self._refuse_unfenced(ctx, writers)
        if refused:
            result.findings.append(refused)
        done = ctx.checkpoints.get("switched")
        if done:
            result.in_place.append(f"switched at {done.get('at')}: every stack uses the target")
            return result
        result.changes.append(Change("run", "fence every writer", writers.describe()))
        if not writers.fences:
            result.findings.append(
                Finding(
                    "warn",
                    "no fence: nothing stops the app's writes during the switch",
                    'set [steps.data-switch] fences = [{ name = "old", kind = "compose" | "http" | "process", ... }]',
                )
            )
        pg_out = ctx.upstream.get("pg-sync", {})
        if pg_out.get("subscription"):
            sync = _pgsync(ctx, pg_out.get("name"))
            lag = sync.lag()
            result.changes += [
                Change("run", "wait for replication to reach the fence LSN", f"current lag {lag.bytes} bytes"),
                Change("update", "target sequences", "setval from the source values"),
                Change("run", "data-validate checks", ctx.typed(self.Settings).validation),
                Change("delete", f"subscription, slot and publication {sync.name}"),
            ]
            if ctx.typed(self.Settings).reverse:
                result.changes.append(Change("create", f"reverse stream {sync.reverse().name} (target -> source)"))
        if self._redis_on(ctx):
            result.changes.append(Change("run", "fence and stop the Redis follower; start one target -> source"))
        result.changes.append(Change("update", "every stack's data endpoints", "-> target"))
        cfg = AppConfig(ctx)
        if cfg.reachable():
            result.changes.append(Change("update", f"ConfigMap {cfg.namespace}/{cfg.name}", ", ".join(cfg.templates)))
        result.changes.append(Change("run", "release the fences"))
        return result

    # -- apply ---------------------------------------------------------------------------------------------------
    def apply(self, ctx: StepContext) -> Outputs:
        s = ctx.typed(self.Settings)
        writers = Writers(ctx)
        refused = self._refuse_unfenced(ctx, writers)
        if refused:
            raise Blocked(f"data-switch refused: {refused.message}", "one writer at every instant", refused.fix)
        done = ctx.checkpoints.get("switched")
        if done:  # a run killed/failed after the switch point: only the release may be missing
            if not ctx.checkpoints.get("released"):
                ctx.checkpoints.put("resumed", {"at": time.time()})
            return self._release(ctx, writers, dict(done.get("outputs") or {}))
        gated = ctx.checkpoints.get("gated")
        if gated is None:
            out = self._fence_and_gate(ctx, s, writers)
            ctx.checkpoints.put("gated", out)
        else:
            out = dict(gated)
            ctx.log("data-switch: resuming after the gates (writers are still fenced)")
            writers.on()  # idempotent: a fence released by hand is taken again
        try:
            switch(ctx, s, writers, out, redis=self._redis_on(ctx))
        except Exception as exc:
            ctx.log(f"data-switch failed while switching ({exc}); every stack back on the source")
            undo_switch(ctx, s, writers, redis=self._redis_on(ctx))
            ctx.checkpoints.clear()
            raise StepFailed(
                f"data-switch failed while switching: {exc}",
                "every stack was pointed back at the source and released (nothing wrote while fenced); the "
                "forward stream may have been detached",
                f"re-run `bpmigrate apply --step pg-sync --env {ctx.env_name}` (copies again if needed), then "
                f"`bpmigrate apply --step data-switch --env {ctx.env_name}`",
            ) from exc
        ctx.checkpoints.put("switched", {"at": out["switched_at"], "outputs": out})
        return self._release(ctx, writers, out)

    def _fence_and_gate(self, ctx: StepContext, s: Any, writers: Writers) -> dict[str, Any]:
        pg_out = ctx.upstream.get("pg-sync", {})
        sync = _pgsync(ctx, pg_out.get("name")) if pg_out.get("subscription") else None
        dms = pg_out.get("driver") == "aws-dms"
        out: dict[str, Any] = {"fences": writers.describe(), "maintenance_started_at": time.time()}
        ctx.checkpoints.put("fencing", {"at": out["maintenance_started_at"]})
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=2)
        try:
            writers.on()
            timings["maintenance_on_s"] = time.monotonic() - t0
            sequences = None
            if sync is not None:
                out["fence_lsn"] = fence = sync.fence_lsn()
                timings["catchup_s"] = sync.wait_confirmed(fence, s.catchup_timeout_s, poll=0.01)
                ctx.intent("set-sequences", target=sync.target.endpoint)
                sequences = pool.submit(sync.carry_sequences)  # beside the validation: both only read the source
            if dms:
                with timed(timings, "catchup_s"):
                    out["dms"] = _dms_fence(ctx, s.catchup_timeout_s)
                ctx.intent("set-sequences", target=_pg(ctx, "target").endpoint)
                out["sequences_set"] = _pgsync(ctx).carry_sequences()
            if self._redis_on(ctx):
                with timed(timings, "redis_fence_s"):
                    out["redis_fence"] = redis_forward_fence(ctx, s.catchup_timeout_s)
            if sync is not None or dms:
                with timed(timings, "validate_s"):
                    validate_at_fence(ctx, s.validation, sync or _pgsync(ctx))
            if sequences is not None:
                out["sequences_set"] = sequences.result()
        except Exception as exc:
            errors = writers.off_quietly()
            downtime = time.monotonic() - t0
            ctx.metrics(write_downtime_s=downtime, gate_failed=1.0)
            ctx.checkpoints.clear()
            raise StepFailed(
                f"data-switch gate failed: {exc}",
                f"writes resumed on the source after {downtime:.2f}s of maintenance; replication keeps running"
                + (f"; releasing failed for {errors}" if errors else ""),
                f"fix the cause, check `bpmigrate verify --step pg-sync --env {ctx.env_name}`, then re-run "
                f"`bpmigrate apply --step data-switch --env {ctx.env_name}`",
            ) from exc
        finally:
            pool.shutdown(wait=True)
        out["timings"] = timings
        return out

    def _release(self, ctx: StepContext, writers: Writers, out: dict[str, Any]) -> Outputs:
        if not ctx.checkpoints.get("released"):
            with timed(out.setdefault("timings", {}), "maintenance_off_s"):
                writers.off()
            downtime = time.time() - float(out["maintenance_started_at"])
            out["write_downtime_s"] = round(downtime, 3)
            out["timings"] = {k: round(float(v), 3) for k, v in out["timings"].items()}
            if ctx.checkpoints.get("resumed"):
                out["write_downtime_interrupted"] = True  # includes the time until this re-run
            ctx.metrics(write_downtime_s=downtime)
            ctx.checkpoints.put("switched", {"at": out["switched_at"], "outputs": out})
            ctx.checkpoints.put("released", {"at": time.time()})
            ctx.log(f"data-switch: write downtime {downtime:.2f}s ({out['timings']})")
        return out

    # -- verify / rollback -------------------------------------------------------------------------------------
    def verify(self, ctx: StepContext) -> list[Check]:
        out = ctx.upstream.get(self.id, {}) or dict((ctx.checkpoints.get("switched") or {}).get("outputs") or {})
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
                Check("forward stream detached", sync.subscription_info() is None, sync.subscription_info(), None)
            )
            if out.get("reverse"):
                info = sync.reverse().subscription_info()
                checks.append(
                    Check(
                        "reverse stream (target -> source) running",
                        bool(info and info["enabled"]),
                        info,
                        "an enabled subscription on the source",
                    )
                )
        checks += Writers(ctx).point_checks("target")
        cfg = AppConfig(ctx)
        if out.get("configmap") and cfg.reachable():
            checks.append(cfg.check(dict(out.get("endpoints") or {})))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Lossless while the reverse stream runs: fence, wait reverse lag 0, point every stack at the source."""
        s = ctx.typed(self.Settings)
        out = ctx.upstream.get(self.id, {}) or dict((ctx.checkpoints.get("switched") or {}).get("outputs") or {})
        if not out.get("switched_at"):
            if ctx.checkpoints.get("gated") or ctx.checkpoints.get("fencing"):
                ctx.log("data-switch stopped before the switch point: every stack back on the source, released")
                undo_switch(ctx, s, Writers(ctx), redis=self._redis_on(ctx))
            ctx.checkpoints.clear()
            return
        writers = Writers(ctx)
        pg_out = ctx.upstream.get("pg-sync", {})
        rev = _pgsync(ctx, pg_out.get("name")).reverse() if pg_out.get("subscription") else None
        if rev is not None and out.get("reverse") and rev.subscription_info() is None:
            force = bool(ctx.force_past_fence or s.force_past_fence)
            if not force:
                from migrate.errors import FenceRefused

                raise FenceRefused(
                    "data-switch cannot roll back losslessly: the reverse stream (target -> source) is gone",
                    "writes made on the target since the switch would not reach the source",
                    f"bpmigrate rollback --step data-switch --env {ctx.env_name} --force-past-fence",
                )
        t0 = time.monotonic()
        writers.on()
        if rev is not None and rev.subscription_info() is not None:
            drain_reverse(ctx, rev, s)
        if self._redis_on(ctx) and out.get("redis_reverse"):
            redis_reverse_fence(ctx, s.catchup_timeout_s)
            redis_reverse_stop(ctx)
        point_stacks_back(ctx, writers, out)
        writers.off()
        ctx.metrics(rollback_write_downtime_s=time.monotonic() - t0)
        ctx.checkpoints.clear()
        ctx.log(
            f"data-switch rolled back in {time.monotonic() - t0:.2f}s: every stack writes to the source again; "
            "re-apply pg-sync/redis-sync before switching again"
        )

    def summary(self, outputs: Mapping[str, Any]) -> str:
        if outputs.get("write_downtime_s") is None:
            return ""
        parts = [f"write downtime {float(outputs['write_downtime_s']):.2f} s", f"fences: {outputs.get('fences')}"]
        if outputs.get("reverse"):
            parts.append(f"reverse stream {outputs['reverse'].get('name')}")
        return " · ".join(parts)
