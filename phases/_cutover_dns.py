"""The weighted Route53 record pair of the DNS cutover, as mechanics: where it lives (the zone), what it points at
today, its TTL lowered and waited out, weight shifts waited INSYNC. ``dns-cutover`` decides the stages, the gates
and when to revert; ``post-cutover-watch`` reverts the pair dns-cutover recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from migrate.errors import StepFailed
from migrate.step import StepContext

if TYPE_CHECKING:
    from migrate.adapters.aws_route53 import RecordSet, Route53Adapter, WeightedPair


def recorded_pair(cut: Mapping[str, Any]) -> WeightedPair:
    """The pair from dns-cutover's recorded outputs (to revert it from a later step)."""
    from migrate.adapters.aws_route53 import WeightedPair

    return WeightedPair(
        cut["record"],
        cut.get("record_type", "CNAME"),
        cut["old_target"],
        cut["new_target"],
        cut.get("old_set_id", "old-stack"),
        cut.get("new_set_id", "new-stack"),
        int(cut.get("low_ttl", 60)),
        cut.get("new_alias_zone_id"),
        cut.get("health_check_id"),
    )


class WeightedRecord:
    """The cutover's record as dns-cutover's settings name it (``record_name``, ``record_type``, ``old_set_id``,
    ``new_set_id``, ``low_ttl``, ``new_target``, ``new_alias_zone_id``, ``insync_timeout_s``/``insync_poll_s``)."""

    def __init__(self, ctx: StepContext, cfg: Any) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.r53: Route53Adapter = ctx.adapters.get("aws_route53")

    def zone(self) -> str | None:
        return self.cfg.hosted_zone_id or self.r53.find_zone(self.cfg.record_name)

    def create_zone(self) -> str:
        ctx, zone = self.ctx, self.cfg.zone_name
        ctx.intent("route53-create-zone", zone=zone)
        return self.r53.create_zone(zone, caller_reference=f"bpmigrate-{ctx.env_name}-{zone}")

    def health_check(self, url: str) -> str:
        """A Route53 health check on ``url`` (idempotent per env and record); its id."""
        self.ctx.intent("route53-health-check", url=url)
        ref = f"bpmigrate-{self.ctx.env_name}-{self.cfg.record_name}"
        return self.r53.ensure_health_check(url, caller_reference=ref)

    def forget_stages(self) -> None:
        """Clear the step's checkpoints but the TTL's and the health check's (both outlive a rollback: the TTL stays
        low, the health check stays attached)."""
        kept = {key: self.ctx.checkpoints.get(key) for key in ("ttl", "health-check")}
        self.ctx.checkpoints.clear()
        for key, value in kept.items():
            if value is not None:
                self.ctx.checkpoints.put(key, value)

    def record_sets(self, zone_id: str) -> list[RecordSet]:
        return self.r53.record_sets(zone_id, self.cfg.record_name, self.cfg.record_type)

    def by_set_id(self, zone_id: str) -> dict[str | None, RecordSet]:
        return {r.set_id: r for r in self.record_sets(zone_id)}

    def current_ttl(self, zone_id: str | None) -> int:
        """The longest TTL the record is served with now (what resolvers may still cache); 0 without a zone."""
        return max((r.ttl or 0 for r in self.record_sets(zone_id)), default=0) if zone_id else 0

    def old_target(self, zone_id: str) -> str | None:
        """The ``old_target`` setting, else the current value of the plain record or the old stack's weighted one."""
        if self.cfg.old_target:
            return str(self.cfg.old_target)
        for rec in self.record_sets(zone_id):
            if rec.set_id in (None, self.cfg.old_set_id) and rec.values:
                return rec.values[0]
        return None

    def pair(self, old_target: str, health_check_id: str | None) -> WeightedPair:
        from migrate.adapters.aws_route53 import WeightedPair

        cfg = self.cfg
        return WeightedPair(
            cfg.record_name,
            cfg.record_type,
            old_target,
            str(cfg.new_target),
            cfg.old_set_id,
            cfg.new_set_id,
            cfg.low_ttl,
            cfg.new_alias_zone_id,
            health_check_id,
        )

    def shift(
        self, zone_id: str, pair: WeightedPair, weight: int, *, comment: str = "", deletes: Sequence[RecordSet] = ()
    ) -> dict[str, Any]:
        """``weight`` % to the new stack in one batch, waited INSYNC (the change as evidence)."""
        return self.r53.shift(
            zone_id,
            pair,
            weight,
            deletes=deletes,
            comment=comment,
            timeout_s=self.cfg.insync_timeout_s,
            poll_s=self.cfg.insync_poll_s,
        )

    def all_to_old(self, zone_id: str) -> bool:
        """Weights old=100/new=0 (the old record's current value as the old target) unless already so; False when
        there is no old weighted record to send traffic back to (nothing to undo)."""
        ctx, cfg = self.ctx, self.cfg
        records = self.by_set_id(zone_id)
        old, new = records.get(cfg.old_set_id), records.get(cfg.new_set_id)
        if old is None or not old.values:
            ctx.log("dns-cutover rollback: no weighted records found; nothing to undo")
            return False
        if not (old.weight == 100 and (new is None or not new.weight)):
            weights = {cfg.new_set_id: 0, cfg.old_set_id: 100}
            ctx.intent("route53-rollback", zone_id=zone_id, record=cfg.record_name, weights=weights)
            pair = self.pair(old.values[0], new.health_check_id if new else None)
            change = self.shift(zone_id, pair, 0, comment="bpmigrate dns-cutover: ROLLBACK to old stack")
            ctx.log(f"dns-cutover rollback: 100 % to {cfg.old_set_id} ({old.values[0]}), change {change['change_id']}")
        return True

    def lower_ttl(self, zone_id: str, health_check_id: str | None, clock: Any) -> tuple[dict[str, Any], WeightedPair]:
        """Lower the TTL to ``low_ttl`` (plain records replaced by the weighted pair at its current weight) and wait
        the old TTL out. Checkpointed (``ttl``) before and after each part: a resumed run neither lowers twice nor
        waits again what it already waited. Returns the checkpoint and the pair."""
        ctx, cfg = self.ctx, self.cfg
        ttl_cp = ctx.checkpoints.get("ttl")
        if ttl_cp is None:
            old_target = self.old_target(zone_id)
            if old_target is None:
                raise StepFailed(
                    f"no current record {cfg.record_name} and no old_target setting",
                    "the cutover needs to know where traffic goes today",
                    'set [steps.dns-cutover] old_target = "<compose host>"',
                )
            ttl_cp = {"old_ttl": self.current_ttl(zone_id), "old_target": old_target}
            ttl_cp |= {"zone_id": zone_id, "lowered_at": None, "waited": False}
            ctx.checkpoints.put("ttl", ttl_cp)
        pair = self.pair(str(ttl_cp["old_target"]), health_check_id)
        if ttl_cp.get("lowered_at") is None:
            simple = [r for r in self.record_sets(zone_id) if not r.is_weighted]
            current = int(self.r53.weights(zone_id, cfg.record_name, cfg.record_type).get(cfg.new_set_id, 0))
            ctx.intent("route53-lower-ttl", zone_id=zone_id, record=cfg.record_name, new_ttl=cfg.low_ttl)
            change = self.shift(zone_id, pair, current, deletes=simple, comment="bpmigrate dns-cutover: lower TTL")
            ttl_cp = {**ttl_cp, "lowered_at": clock.now(), "change": change}
            ctx.checkpoints.put("ttl", ttl_cp)
        if not ttl_cp.get("waited"):
            remaining = float(ttl_cp["lowered_at"]) + float(ttl_cp["old_ttl"]) - clock.now()
            if remaining > 0:
                ctx.log(f"dns-cutover: waiting {remaining:.0f}s for the old TTL ({ttl_cp['old_ttl']}s) to expire")
                clock.sleep(remaining)
            ttl_cp = {**ttl_cp, "waited": True}
            ctx.checkpoints.put("ttl", ttl_cp)
        return ttl_cp, pair
