"""Step ``redis-migrate``: Copy every key of the source Redis DBs to the target, keeping TTLs and types."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from migrate.errors import ConfigError
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

if TYPE_CHECKING:
    from migrate.adapters.redis_copy import DbRoute
from ._common import _redis_count_checks, _target_address_known, rds, redis_routes


class RedisMigrate(Step):
    """Copy every key of the source Redis DBs to the target, keeping TTLs and types.

    Batched MIGRATE COPY REPLACE (the source pushes straight to the target) where possible, pipelined
    DUMP/PTTL/RESTORE REPLACE otherwise (TLS, cluster mode, prefix mapping). Cluster mode has only DB 0: DB n is
    mapped to a key prefix (setting db_prefix). Resumable from the last SCAN cursor of each DB.
    """

    id = "redis-migrate"
    phase = 2
    depends_on = ("elasticache",)
    reversibility = Reversibility.COMPENSABLE
    destructive = True  # REPLACE overwrites target keys of the same name

    def plan(self, ctx: StepContext) -> PlanResult:
        from migrate.adapters.redis_copy import choose_method

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
            method, why = choose_method(str(ctx.setting("method", "auto")), target_cfg, r)
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

        source, target = rds(ctx, "source"), rds(ctx, "target")
        if (source.host, source.port) == (target.host, target.port):
            raise ConfigError(
                f"redis.source and redis.target are the same server ({source.endpoint})",
                "the copy would overwrite the source",
                "fix redis.target in migrate.toml",
            )
        target.ping()
        routes_ = redis_routes(ctx, source, target)
        space = source.keyspace()
        done = ctx.checkpoints.all()
        batch = int(ctx.setting("batch", 1000))
        out: dict[str, Any] = {"dbs": {}, "method": {}}
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
                method, why = choose_method(str(ctx.setting("method", "auto")), target, r)
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
                    batch=batch,
                    start_cursor=int(cp.get("cursor", 0)),
                    migrate_host=ctx.setting("migrate_host") or None,
                    migrate_port=ctx.setting("migrate_port") or None,
                    timeout_ms=int(ctx.setting("timeout_ms", 10_000)),
                    on_batch=on_batch,
                    server_side=bool(ctx.setting("server_side", True)),
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
        ctx.metrics(keys=float(keys_total), seconds=seconds)
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        return _redis_count_checks(ctx)

    def rollback(self, ctx: StepContext) -> None:
        from migrate.adapters.redis_copy import delete_copied

        source, target = rds(ctx, "source"), rds(ctx, "target")
        if (source.host, source.port) == (target.host, target.port):
            raise ConfigError(
                f"redis.source and redis.target are the same server ({source.endpoint})",
                "rollback deletes keys on the target",
                "fix redis.target in migrate.toml",
            )
        for r in redis_routes(ctx, source, target):
            ctx.intent("redis-delete-copied", route=r.describe())
            n = delete_copied(source, target, r)
            ctx.log(f"deleted {n} key(s) of {r.describe()} on the target")
        ctx.checkpoints.clear()
