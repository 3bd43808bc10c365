"""Step ``redis-migrate``: Copy every key of the source Redis DBs to the target, keeping TTLs and types."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from migrate.errors import ConfigError
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import RedisMapping, _redis_count_checks, _target_address_known, rds, redis_routes, route_map

if TYPE_CHECKING:
    from migrate.adapters.redis import RedisAdapter
    from migrate.adapters.redis_copy import DbRoute


class RedisMigrate(Step):
    """Copy every key of the source Redis DBs to the target, keeping TTLs and types.

    Batched MIGRATE COPY REPLACE (the source pushes straight to the target) where possible, pipelined
    DUMP/PTTL/RESTORE REPLACE otherwise (TLS, cluster mode, prefix mapping); on a Redis Cluster the RESTOREs are
    routed by hash slot, each primary getting its keys in one pipeline. Cluster mode has only DB 0: DB n is mapped
    to a key prefix (setting db_prefix; the mapping is recorded for redis-verify, redis-sync and the app).
    Resumable from the last SCAN cursor of each DB.
    """

    id = "redis-migrate"
    phase = 2
    depends_on = ("elasticache",)
    reversibility = Reversibility.COMPENSABLE
    destructive = True  # REPLACE overwrites target keys of the same name

    class Settings(RedisMapping):
        method: Literal["auto", "migrate", "dump"] = Field(
            "auto", description="auto: MIGRATE unless TLS, cluster mode or a prefix mapping; else DUMP/RESTORE"
        )
        batch: int = Field(1000, ge=1, le=5000, description="keys per SCAN/MIGRATE batch")
        server_side: bool = Field(True, description="run SCAN+MIGRATE as a Lua script on the source")
        timeout_ms: int = Field(10_000, ge=100, description="MIGRATE timeout per batch")
        migrate_host: str | None = Field(None, description="the target as the SOURCE server reaches it, if different")
        migrate_port: int | None = Field(None, ge=1, le=65535, description="its port, if different")

    def plan(self, ctx: StepContext) -> PlanResult:
        from migrate.adapters.redis_copy import choose_method

        s = ctx.typed(self.Settings)
        source = rds(ctx, "source")
        space = source.keyspace()
        result = PlanResult(data={"dbs": source.dbs})
        missing = _target_address_known(ctx, "redis")
        target_cfg = ctx.adapters.redis("target")
        routes_ = redis_routes(ctx, source, target_cfg)
        if target_cfg.cluster_mode:
            extra = [r for r in routes_ if r.source_db != 0 and space.get(r.source_db, 0)]
            result.findings.append(
                Finding(
                    "warn",
                    "the target is in cluster mode (only DB 0): " + "; ".join(r.describe() for r in routes_),
                    "applications must read DB n's keys with the prefix shown; set [steps.redis-migrate] db_prefix "
                    "to choose the prefixes"
                    if extra
                    else "",
                )
            )
        done = ctx.checkpoints.all()
        for r in routes_:
            n = space.get(r.source_db, 0)
            method, why = choose_method(s.method, target_cfg, r)
            cp = done.get(f"db{r.source_db}")
            if cp and cp.get("done"):
                result.in_place.append(f"{r.describe()}: copied ({cp.get('keys')} keys)")
                continue
            detail = f"{n} keys by {method} ({why})"
            if cp:
                detail += f"; resumes at SCAN cursor {cp.get('cursor')}"
            result.changes.append(Change("create", f"keys of {r.describe()}", detail))
        if missing:
            result.unknown.append(missing)
        else:
            target = rds(ctx, "target")
            result.in_place.append(f"target {target.endpoint}: {target.topology()}")
            tspace = target.keyspace()
            if any(tspace.values()):
                result.findings.append(
                    Finding(
                        "warn",
                        f"the target already holds keys {tspace}: same-named keys will be overwritten (REPLACE)",
                        "",
                    )
                )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        from migrate.adapters.redis_copy import choose_method, copy_db

        s = ctx.typed(self.Settings)
        source, target = rds(ctx, "source"), rds(ctx, "target")
        _refuse_same_server(source, target, "the copy would overwrite the source")
        target.ping()
        routes_ = redis_routes(ctx, source, target)
        space = source.keyspace()
        done = ctx.checkpoints.all()
        out: dict[str, Any] = {"dbs": {}, "method": {}, "target_topology": target.topology()}
        total = sum(space.get(r.source_db, 0) for r in routes_)
        started = time.monotonic()
        keys_total = 0
        with ctx.progress("redis keys", total=float(max(total, 1)), unit="keys") as bar:
            for r in routes_:
                cp = done.get(f"db{r.source_db}") or {}
                if cp.get("done"):
                    bar.advance(int(cp.get("keys", 0)))
                    out["dbs"][str(r.source_db)] = cp.get("keys", 0)
                    continue
                method, why = choose_method(s.method, target, r)
                ctx.intent("redis-copy", route=r.describe(), method=method, cursor=cp.get("cursor", 0))
                ctx.log(f"redis-migrate {r.describe()}: {method} ({why})")
                state = {"keys": int(cp.get("keys", 0)), "last": 0.0}
                if state["keys"]:
                    bar.advance(state["keys"])

                def on_batch(cursor: int, n: int, r: DbRoute = r, state: dict[str, Any] = state) -> None:
                    state["keys"] += n
                    bar.advance(n)
                    now = time.monotonic()
                    if cursor != 0 and now - state["last"] >= 0.5:
                        ctx.checkpoints.put(f"db{r.source_db}", {"cursor": cursor, "keys": state["keys"]})
                        state["last"] = now

                res = copy_db(
                    source,
                    target,
                    r,
                    method=method,
                    batch=s.batch,
                    start_cursor=int(cp.get("cursor", 0)),
                    migrate_host=s.migrate_host or None,
                    migrate_port=s.migrate_port or None,
                    timeout_ms=s.timeout_ms,
                    on_batch=on_batch,
                    server_side=s.server_side,
                )
                if res.fell_back:
                    ctx.log(res.fell_back)
                ctx.checkpoints.put(f"db{r.source_db}", {"done": True, "keys": state["keys"]})
                out["dbs"][str(r.source_db)] = state["keys"]
                out["method"][str(r.source_db)] = res.method
                keys_total += res.keys
        seconds = time.monotonic() - started
        out["keys_copied_this_run"] = keys_total
        out["seconds"] = round(seconds, 2)
        out["keys_per_s"] = round(keys_total / seconds) if seconds > 0 else None
        out["routes"] = [r.describe() for r in routes_]
        out["route_map"] = route_map(routes_)
        ctx.metrics(keys=float(keys_total), seconds=seconds)
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        return _redis_count_checks(ctx)

    def rollback(self, ctx: StepContext) -> None:
        from migrate.adapters.redis_copy import delete_copied

        source, target = rds(ctx, "source"), rds(ctx, "target")
        _refuse_same_server(source, target, "rollback deletes keys on the target")
        for r in redis_routes(ctx, source, target):
            ctx.intent("redis-delete-copied", route=r.describe())
            n = delete_copied(source, target, r)
            ctx.log(f"deleted {n} key(s) of {r.describe()} on the target")
        ctx.checkpoints.clear()

    def summary(self, outputs: Mapping[str, Any]) -> str:
        keys = sum(int(v or 0) for v in (outputs.get("dbs") or {}).values())
        methods = sorted({str(m) for m in (outputs.get("method") or {}).values()})
        parts = [f"{keys:,} keys", f"{len(outputs.get('dbs') or {})} DBs"]
        if outputs.get("target_topology"):
            parts.append(f"→ {outputs['target_topology']}")
        if methods:
            parts.append("/".join(methods))
        if outputs.get("keys_per_s"):
            parts.append(f"{int(outputs['keys_per_s']):,} keys/s")
        return " · ".join(parts)


def _refuse_same_server(source: RedisAdapter, target: RedisAdapter, why: str) -> None:
    if (source.host, source.port) == (target.host, target.port):
        raise ConfigError(
            f"redis.source and redis.target are the same server ({source.endpoint})",
            why,
            "fix redis.target in migrate.toml",
        )
