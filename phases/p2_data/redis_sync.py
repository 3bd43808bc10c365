"""Step ``redis-sync``: keep the target Redis current after redis-migrate until data-switch (a follower process)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.errors import AdapterError
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from .._sync import _enabled, _follower_dir, _redis_pair, _target_unknown
from ._common import RedisMapping, route_map


class RedisSyncStep(Step):
    """Keep the target Redis current after redis-migrate until data-switch: a follower process subscribed to the
    source's keyspace notifications (notify-keyspace-events, set by this step and restored on rollback) re-copies
    every key written, and deletes on the target every key deleted, evicted or expired on the source. It reconciles
    once after subscribing (so nothing changed between redis-migrate and the subscription is missed).
    Lag = age of the oldest change not yet applied. Rollback stops the follower and restores the setting.
    On a Redis Cluster target the follower's RESTOREs and UNLINKs are routed by hash slot; keys land under the
    DB/prefix mapping redis-migrate recorded.
    """

    id = "redis-sync"
    phase = 2
    depends_on = ("redis-migrate",)
    reversibility = Reversibility.COMPENSABLE

    class Settings(RedisMapping):
        enabled: bool = Field(True, description="false: skip continuous Redis sync")
        notify_flags: str = Field("KEA", description="notify-keyspace-events set on the source (restored later)")
        ready_timeout_s: float = Field(600, gt=0, description="the follower's first reconcile pass must end in this")
        max_lag_ms: float = Field(5000, gt=0, description="verify fails above this follower lag")

    def skip_reason(self, ctx: StepContext) -> str | None:
        if not _enabled(ctx):
            return "continuous Redis sync is off ([steps.redis-sync] enabled = false)"
        return None

    def plan(self, ctx: StepContext) -> PlanResult:
        from migrate.adapters.redis_sync import follower_status

        s = ctx.typed(self.Settings)
        source = ctx.adapters.redis("source")
        result = PlanResult()
        missing = _target_unknown(ctx, "redis")
        if missing:
            result.unknown.append(missing)
        status = follower_status(_follower_dir(ctx))
        if status.get("alive"):
            result.in_place.append(f"follower pid {status['pid']} running (lag {status.get('lag_ms')} ms)")
            return result
        flags = s.notify_flags
        try:
            current = source.config_get("notify-keyspace-events")
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
                f"{current!r} -> {flags!r} (restored on rollback)",
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

        s = ctx.typed(self.Settings)
        source, target, routes_ = _redis_pair(ctx)
        workdir = _follower_dir(ctx)
        status = follower_status(workdir)
        previous = recorded_previous(workdir)
        if not status.get("alive"):
            flags = s.notify_flags
            if previous is None:  # first start: remember the value to restore (a crashed follower's spec keeps it)
                previous = source.config_get("notify-keyspace-events")
            spec = FollowerSpec.build(source, target, routes_, notify_flags=flags, notify_previous=previous)
            ctx.intent("start-follower", workdir=str(workdir), flags=flags, previous=previous)
            pid = start_follower(workdir, spec)
            ctx.register_child(pid, "redis-sync follower (runs until data-switch; adopted by later runs)")
        ready = wait_ready(workdir, timeout=s.ready_timeout_s)
        return {
            "pid": ready["pid"],
            "target_topology": target.topology(),
            "route_map": route_map(routes_),
            "workdir": str(workdir),
            "notify_previous": previous if previous is not None else ready.get("notify_previous"),
            "reconciled_keys": ready.get("reconciled_keys"),
            "lag_ms": ready.get("lag_ms"),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.redis_sync import follower_status

        status = follower_status(_follower_dir(ctx))
        max_lag = ctx.typed(self.Settings).max_lag_ms
        current = ctx.adapters.redis("source").config_get("notify-keyspace-events")
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

    def summary(self, outputs: Mapping[str, Any]) -> str:
        parts = [f"follower pid {outputs.get('pid')}"]
        if outputs.get("reconciled_keys") is not None:
            parts.append(f"{int(outputs['reconciled_keys']):,} keys reconciled")
        if outputs.get("lag_ms") is not None:
            parts.append(f"lag {outputs['lag_ms']} ms")
        if outputs.get("target_topology"):
            parts.append(str(outputs["target_topology"]))
        return " · ".join(parts)
