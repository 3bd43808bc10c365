"""Step ``redis-verify``: compare the Redis source and target — counts, a two-way key diff, values and TTLs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import RedisMapping, _redis_count_checks, _redis_counts, fail_on, rds, redis_routes

if TYPE_CHECKING:
    from migrate.adapters.redis import RedisAdapter


class RedisVerify(Step):
    """Verify the Redis copy: PING, key counts per source DB vs the target, a two-way key diff on a sample (or all
    keys: sample = 0), value and TTL comparison within a tolerance. Keys are read where redis-migrate wrote them
    (its recorded DB/prefix mapping); on a Redis Cluster counts are summed over the primaries and the sample is
    drawn from every primary."""

    id = "redis-verify"
    phase = 2
    depends_on = ("redis-migrate",)
    reversibility = Reversibility.REVERSIBLE  # read-only

    class Settings(RedisMapping):
        """How much is compared and how closely; ``db_prefix``/``db_map`` (inherited) may only repeat the mapping
        redis-migrate recorded, which is where the keys are read."""

        sample: int = Field(1000, ge=0, description="keys per DB compared both ways (0 = all keys)")
        ttl_tolerance_ms: int = Field(5000, ge=0, description="allowed TTL difference between source and target")

    def plan(self, ctx: StepContext) -> PlanResult:
        s = ctx.typed(self.Settings)
        return PlanResult(
            changes=[
                Change(
                    "run",
                    "compare Redis source and target",
                    f"counts, two-way key diff on {'all keys' if s.sample == 0 else f'{s.sample} keys per DB'}, "
                    f"values and TTLs (±{s.ttl_tolerance_ms} ms)",
                )
            ]
        )

    def apply(self, ctx: StepContext) -> Outputs:
        from migrate.adapters.redis_copy import target_owner

        s = ctx.typed(self.Settings)
        source, target = rds(ctx, "source"), rds(ctx, "target")
        problems: list[str] = []
        if not (source.ping() and target.ping()):
            problems.append("PING failed")
        routes_ = redis_routes(ctx, source, target)
        counts = _redis_counts(source, target, routes_)
        for r in routes_:
            n_src, n_dst = counts[r.source_db]
            if n_src != n_dst:
                problems.append(f"{r.describe()}: {n_src} keys on the source, {n_dst} on the target")
        sample, tolerance = s.sample, s.ttl_tolerance_ms
        compared = back = 0
        for r in routes_:
            keys = self._sample(source, r.source_db, sample)
            compared += len(keys)
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                tkeys = [r.target_key(k) for k in part]
                sv, tv = source.read_values(r.source_db, part), target.read_values(r.target_db, tkeys)
                st, tt = source.pttl_many(r.source_db, part), target.pttl_many(r.target_db, tkeys)
                for k, a, b, ta, tb in zip(part, sv, tv, st, tt, strict=True):
                    if a[0] == "none":
                        continue  # expired/deleted on the source meanwhile
                    if b[0] == "none":
                        problems.append(f"db {r.source_db}: key {k!r} missing on the target")
                    elif a != b:
                        problems.append(f"db {r.source_db}: key {k!r} differs ({a[0]} vs {b[0]})")
                    elif (ta < 0) != (tb < 0) or (ta >= 0 and abs(ta - tb) > tolerance):
                        problems.append(
                            f"db {r.source_db}: key {k!r} TTL {ta} ms on the source vs {tb} ms on the target"
                        )
            # the other direction: keys on the target (under this DB's mapping) must exist on the source
            drawn = self._sample(target, r.target_db, sample, r.prefix)
            tkeys = [k for k in drawn if target_owner(routes_, r.target_db, k) is r]
            orig = [k[len(r.prefix) :] for k in tkeys]
            back += len(orig)
            for k, present in zip(orig, source.exists_many(r.source_db, orig), strict=True):
                if not present:
                    problems.append(f"db {r.source_db}: key {k!r} on the target does not exist on the source")
        fix = (
            f"re-run `bpmigrate apply --step redis-migrate --env {ctx.env_name}` after rollback, "
            "or investigate the keys named"
        )
        fail_on(problems, self.id, "problem(s)", fix)
        return {
            "counts": {str(k): v[1] for k, v in counts.items()},
            "keys_compared": compared,
            "target_keys_checked": back,
            "target_topology": target.topology(),
        }

    @staticmethod
    def _sample(adapter: RedisAdapter, db: int, n: int, prefix: bytes = b"") -> list[bytes]:
        """n keys drawn at random (every primary of a cluster in proportion), or all (n = 0; only those under
        ``prefix``: a SCAN MATCH)."""
        if n <= 0:
            return [k for b in adapter.scan_all(db, match=adapter.glob(prefix) if prefix else None) for k in b]
        return adapter.random_keys(db, n)

    def verify(self, ctx: StepContext) -> list[Check]:
        source, target = rds(ctx, "source"), rds(ctx, "target")
        return [
            Check("PING source", source.ping(), observed=True, expected=True),
            Check("PING target", target.ping(), observed=True, expected=True),
            *_redis_count_checks(ctx),
        ]

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("redis-verify is read-only: nothing to roll back")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        keys = sum(int(v or 0) for v in (outputs.get("counts") or {}).values())
        parts = [f"{keys:,} keys equal in count", f"{int(outputs.get('keys_compared') or 0):,} compared"]
        if outputs.get("target_keys_checked") is not None:
            parts[-1] += f" + {int(outputs['target_keys_checked']):,} back"
        if outputs.get("target_topology"):
            parts.append(str(outputs["target_topology"]))
        return " · ".join(parts)
