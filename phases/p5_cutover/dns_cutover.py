"""Step ``dns-cutover``: weighted Route53 records move api.<domain> from the old stack to the new one, stage by stage,
each stage decided on a sample of requests; a breach reverts by itself."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from migrate.errors import ConfigError, FenceRefused, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from .._cutover_dns import WeightedRecord
from .._traffic import SamplingSettings, soak, write_evidence
from ._common import PHASE, Clock, iso

if TYPE_CHECKING:
    from migrate.adapters.aws_route53 import WeightedPair


class DnsCutover(Step):
    """DNS cutover: weighted Route53 records move api.<domain> from the old stack to the new one, in stages.

    Both stacks write to one database by now (``data-switch`` ran before): DNS only moves requests.

    1. A Route53 health check on the new endpoint (``health_check_url``, default the first ``direct_urls``) is
       created and attached to the new weighted record: Route53 stops answering with a new stack it sees failing.
    2. The TTL is lowered to ``low_ttl`` and the old TTL waited out (checkpointed: a resumed run waits what is left).
    3. Stage by stage (``stages``, default 10 → 50 → 100 % new): shift the weights, wait INSYNC, then soak
       ``soak_s`` while samples run — each of at least ``min_sample`` requests (default 1,000, from the load
       generator), against the new stack directly (``direct_urls``) AND through the record (``record_urls``). A
       stage passes only on samples that meet the SLO (``max_error_rate``, ``max_p95_ms``) AND the size.
    4. A breach REVERTS the weights to 100 % old at once, records the evidence (checkpoint ``revert``, artifact)
       and fails the step; re-running resumes at the stage reached.

    After it returns the revert stays armed: ``post-cutover-watch`` samples for its window and reverts by itself
    on a breach. Rollback (refused after ``bake_time_s`` at 100 % unless ``--force-past-fence``) sends all traffic
    back to the old stack; the old record stays (weight 0) until phase 6.
    """

    id = "dns-cutover"
    title = "Weighted Route53 cutover, decided on samples, with automatic revert"
    procedures = (
        (
            "DNS rollback to the old stack",
            "bpmigrate --env <env> rollback --phase cutover --yes",
            "or only DNS: `rollback --step dns-cutover`; refused after the bake time unless `--force-past-fence`",
        ),
    )
    phase = PHASE
    depends_on = ("pre-cutover-check", "db-rollback-point", "ingress", "data-switch")
    reversibility = Reversibility.COMPENSABLE
    timeout = None
    clock: ClassVar[Clock] = Clock()

    class Settings(SamplingSettings):  # + sample_with, sample_rps, probe_concurrency, probe_timeout_s, max_*
        record_name: str = Field("", description="the weighted record (default api.<domain>)")
        hosted_zone_id: str | None = Field(None, description="default: the zone that contains record_name")
        zone_name: str = Field("", description="zone to create when create_zone (default: the domain)")
        create_zone: bool | None = Field(None, description="create the zone when absent (default: sandbox only)")
        record_type: str = Field("CNAME", description="CNAME, or A with IP targets")
        old_target: str | None = Field(None, description="default: the current value of the record")
        new_target: str | None = Field(None, description="default: the ingress step's alb_dns_name/alb_hostname")
        new_alias_zone_id: str | None = Field(None, description="alias the new record to the ALB (its zone id)")
        old_set_id: str = Field("old-stack", description="SetIdentifier of the old stack's record")
        new_set_id: str = Field("new-stack", description="SetIdentifier of the new stack's record")
        low_ttl: int = Field(60, ge=1, description="TTL during the cutover")
        stages: list[int] = Field(default_factory=lambda: [10, 50, 100], description="% to the new stack, in order")
        soak_s: float = Field(300, ge=0, description="hold each stage this long while samples run")
        probe_interval_s: float = Field(15, ge=0, description="pause between sample rounds")
        direct_urls: list[str] = Field(default_factory=list, description="the new stack directly (not via DNS)")
        record_urls: list[str] = Field(default_factory=list, description="through the record (default its /health)")
        probe_urls: list[str] = Field(default_factory=list, description="older name of direct_urls")
        min_sample: int = Field(1000, ge=1, description="requests per URL a stage's decision needs")
        health_check: bool = Field(True, description="attach a Route53 health check to the new record")
        health_check_url: str = Field("", description="default: the first direct URL")
        insync_timeout_s: float = Field(600, gt=0, description="Route53 GetChange polling deadline")
        insync_poll_s: float = Field(5, gt=0, description="GetChange polling interval")
        bake_time_s: float = Field(86400, ge=0, description="after this long at 100 %, rollback needs the force flag")
        force_past_fence: bool = Field(False, description="(tests) as --force-past-fence")

    # -- settings ------------------------------------------------------------------------------------------------
    def cfg(self, ctx: StepContext) -> Any:
        s = ctx.typed(self.Settings)
        record = (s.record_name or f"api.{ctx.env.domain}").rstrip(".").lower()
        ingress = ctx.upstream.get("ingress", {})
        updates: dict[str, Any] = {
            "record_name": record,
            "zone_name": (s.zone_name or ctx.env.domain).rstrip(".").lower(),
            "create_zone": ctx.is_sandbox if s.create_zone is None else s.create_zone,
            "new_target": s.new_target or ingress.get("alb_dns_name") or ingress.get("alb_hostname"),
            "direct_urls": list(s.direct_urls or s.probe_urls),
            "record_urls": list(s.record_urls or [f"https://{record}/health"]),
        }
        return s.model_copy(update=updates)

    def problems(self, cfg: Any) -> list[Finding]:
        out = []
        if not cfg.direct_urls:
            out.append(
                Finding(
                    "block",
                    "no direct_urls: the new stack would only be sampled through the record, where at 10 % most "
                    "requests reach the OLD stack",
                    "set [steps.dns-cutover] direct_urls = an endpoint reaching only the new stack (the ALB's name)",
                )
            )
        if not cfg.stages or cfg.stages != sorted(set(cfg.stages)) or cfg.stages[-1] != 100 or cfg.stages[0] < 1:
            out.append(Finding("block", f"stages {cfg.stages} must increase and end at 100", "stages = [10, 50, 100]"))
        if not cfg.new_target:
            out.append(
                Finding(
                    "block",
                    "no new target for the cutover (the ALB DNS name)",
                    "apply the ingress step (alb_dns_name output) or set [steps.dns-cutover] new_target",
                )
            )
        return out

    # -- evidence --------------------------------------------------------------------------------------------------
    def _round(self, ctx: StepContext, cfg: Any, weight: int, requests: int | None = None) -> list[dict[str, Any]]:
        """Direct and through-the-record samples of ``requests`` (default ``min_sample``) each, judged."""
        targets = [("direct", u) for u in cfg.direct_urls] + [("record", u) for u in cfg.record_urls]
        n = requests or cfg.min_sample
        results: list[dict[str, Any]] = cfg.judged_round(ctx, targets, n, label=f"dns-{weight}")
        return results

    # -- the contract --------------------------------------------------------------------------------------------------
    def plan(self, ctx: StepContext) -> PlanResult:
        cfg = self.cfg(ctx)
        result = PlanResult(findings=self.problems(cfg))
        for url in [*cfg.direct_urls, *cfg.record_urls]:
            try:
                ctx.adapters.http().check_target(url)
            except Exception as exc:  # noqa: BLE001 - shown as a finding
                result.findings.append(Finding("block", f"sample URL not allowed: {url}", str(exc).splitlines()[0]))
        result.data.update({"record": cfg.record_name, "stages": cfg.stages, "new_target": cfg.new_target})
        if result.blocking:
            return result  # nothing to look up before the settings are complete
        rec = WeightedRecord(ctx, cfg)
        zone_id = rec.zone()
        if zone_id is None:
            if cfg.create_zone:
                result.changes.append(Change("create", f"HostedZone/{cfg.zone_name}"))
            else:
                result.findings.append(
                    Finding("block", f"no Route53 hosted zone contains {cfg.record_name}", "set hosted_zone_id")
                )
        elif rec.old_target(zone_id) is None:
            result.findings.append(
                Finding("block", f"no current record {cfg.record_name} and no old_target", 'set old_target = "<host>"')
            )
        if cfg.health_check and not ctx.checkpoints.get("health-check"):
            url = cfg.health_check_url or (cfg.direct_urls or [""])[0]
            result.changes.append(Change("create", "Route53 health check on the new endpoint", url))
        ttl_cp = ctx.checkpoints.get("ttl") or {}
        if ttl_cp.get("waited"):
            result.in_place.append(f"TTL lowered to {cfg.low_ttl}s and the old TTL waited out")
        else:
            old_ttl = ttl_cp.get("old_ttl", rec.current_ttl(zone_id))
            result.changes.append(
                Change("update", f"{cfg.record_name} TTL", f"{old_ttl}s -> {cfg.low_ttl}s, then wait {old_ttl}s")
            )
        for weight in cfg.stages:
            state = ctx.checkpoints.get(f"stage-{weight}") or {}
            if state.get("passed"):
                result.in_place.append(f"stage {weight}% reached and soaked")
            else:
                detail = f"soak {cfg.soak_s:g}s, >= {cfg.min_sample} requests per URL ({cfg.sample_with})"
                result.changes.append(Change("update", f"{cfg.record_name} {weight}% new", detail))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        cfg = self.cfg(ctx)
        blocking = [f for f in self.problems(cfg) if f.level == "block"]
        if blocking:
            raise ConfigError(f"dns-cutover cannot start: {blocking[0].message}", "", blocking[0].fix)
        rec = WeightedRecord(ctx, cfg)
        zone_id = rec.zone()
        if zone_id is None:
            if not cfg.create_zone:
                raise StepFailed(
                    f"no Route53 hosted zone contains {cfg.record_name}",
                    "the zone must exist before the cutover",
                    "create it in the foundation phase, or set [steps.dns-cutover] hosted_zone_id",
                )
            zone_id = rec.create_zone()
        hc = ctx.checkpoints.get("health-check") or {}
        if cfg.health_check and not hc:
            hc = {"id": rec.health_check(cfg.health_check_url or cfg.direct_urls[0])}
            ctx.checkpoints.put("health-check", hc)
        # 1. lower the TTL, wait out the old one (checkpointed before and after: resumable without waiting twice)
        ttl_cp, pair = rec.lower_ttl(zone_id, hc.get("id"), self.clock)
        # 2. stage by stage; each stage is decided on samples; a breach reverts
        evidence: dict[str, Any] = {}
        for weight in cfg.stages:
            state = ctx.checkpoints.get(f"stage-{weight}")
            if state and state.get("passed"):
                evidence[str(weight)] = state
                continue
            ctx.intent(
                "route53-shift-weight",
                zone_id=zone_id,
                record=cfg.record_name,
                weights={cfg.new_set_id: weight, cfg.old_set_id: 100 - weight},
            )
            change = rec.shift(zone_id, pair, weight)
            applied_at = self.clock.now()
            ctx.checkpoints.put(f"stage-{weight}", {"weight": weight, "applied_at": applied_at, "passed": False})
            # sample rounds until the soak time is over (at least one); stop at the first breach
            sampled = partial(self._round, ctx, cfg, weight)
            probes = soak(ctx, self.clock, cfg.soak_s, cfg.probe_interval_s, sampled, f"dns-cutover {weight}%")
            state = {"weight": weight, "applied_at": applied_at, "change": change, "probes": probes}
            state["passed"] = probes["ok"]
            if not probes["ok"]:
                self._revert(ctx, rec, zone_id, pair, weight, state, evidence)
            state["passed_at"] = self.clock.now()
            ctx.checkpoints.put(f"stage-{weight}", state)
            evidence[str(weight)] = state
            ctx.log(
                f"dns-cutover: stage {weight}% held {probes['soak_s']:g}s on {probes['requests']} requests; worst "
                f"p95 {probes['worst_p95_ms']:.1f} ms, worst error rate {probes['worst_error_rate']:.4f}"
            )
        completed_at = float(evidence[str(cfg.stages[-1])]["passed_at"])
        return {
            "zone_id": zone_id,
            "record": cfg.record_name,
            "record_type": cfg.record_type,
            "old_target": pair.old_target,
            "new_target": pair.new_target,
            "old_set_id": cfg.old_set_id,
            "new_set_id": cfg.new_set_id,
            "new_alias_zone_id": cfg.new_alias_zone_id,
            "health_check_id": hc.get("id"),
            "old_ttl": ttl_cp["old_ttl"],
            "low_ttl": cfg.low_ttl,
            "direct_urls": cfg.direct_urls,
            "record_urls": cfg.record_urls,
            "stages": evidence,
            "completed_at": iso(completed_at),
            "completed_ts": completed_at,
            "bake_time_s": cfg.bake_time_s,
            "one_way_after": iso(completed_at + cfg.bake_time_s),
        }

    def _revert(
        self,
        ctx: StepContext,
        rec: WeightedRecord,
        zone_id: str,
        pair: WeightedPair,
        weight: int,
        state: dict[str, Any],
        evidence: dict[str, Any],
    ) -> None:
        cfg = rec.cfg
        ctx.intent("route53-revert", zone_id=zone_id, record=cfg.record_name, failed_stage=weight)
        state["reverted"] = rec.shift(zone_id, pair, 0, comment=f"bpmigrate dns-cutover: REVERT at {weight}%")
        ctx.checkpoints.put(f"stage-{weight}", state)
        record = {"failed_stage": weight, "at": iso(self.clock.now()), "stages": {**evidence, str(weight): state}}
        ctx.checkpoints.put("revert", record)
        path = write_evidence(ctx, "cutover-evidence", f"cutover-revert-{int(self.clock.now())}", record)
        probes = state["probes"]
        raise StepFailed(
            f"dns-cutover: samples failed at stage {weight}% — traffic REVERTED to the old stack (100 % {cfg.old_set_id})",
            f"{probes['breach']}; rounds={probes['rounds']}, worst p95={probes['worst_p95_ms']:.1f} ms, worst error "
            f"rate={probes['worst_error_rate']:.4f}; evidence: {path}",
            f"fix the new stack, then `bpmigrate apply --step dns-cutover --env {ctx.env_name}` (resumes at stage {weight}%)",
        )

    def verify(self, ctx: StepContext) -> list[Check]:
        cfg = self.cfg(ctx)
        rec = WeightedRecord(ctx, cfg)
        zone_id = rec.zone()
        if zone_id is None:
            return [Check("hosted zone exists", False, None, cfg.zone_name)]
        records = rec.by_set_id(zone_id)
        new, old = records.get(cfg.new_set_id), records.get(cfg.old_set_id)
        checks = [
            Check(f"{cfg.new_set_id} weight", new is not None and new.weight == 100, new and new.weight, 100),
            Check(
                f"{cfg.old_set_id} record kept at weight 0", old is not None and old.weight == 0, old and old.weight, 0
            ),
        ]
        if cfg.health_check:
            hc = (ctx.checkpoints.get("health-check") or {}).get("id")
            attached = new is not None and new.health_check_id is not None and new.health_check_id == hc
            checks.append(
                Check("new record carries the Route53 health check", attached, new and new.health_check_id, hc)
            )
        results = self._round(ctx, cfg, 100, requests=min(cfg.min_sample, 100))
        checks.append(
            Check(
                "new stack within SLO (direct and through the record)",
                all(r["ok"] for r in results),
                [{k: r.get(k) for k in ("via", "url", "count", "error_rate", "p95_ms")} for r in results],
                f"error rate <= {cfg.max_error_rate}, p95 <= {cfg.max_p95_ms} ms",
            )
        )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Send all traffic back to the old stack (weights old=100, new=0). Refused after the bake-time fence."""
        cfg = self.cfg(ctx)
        done = ctx.checkpoints.get("stage-100") or {}
        fence = float(done["passed_at"]) + cfg.bake_time_s if done.get("passed_at") is not None else None
        if fence is not None and self.clock.now() >= fence and not (ctx.force_past_fence or cfg.force_past_fence):
            raise FenceRefused(
                f"dns-cutover passed its one-way fence at {iso(fence)} (bake time {cfg.bake_time_s:g}s after 100 %)",
                "after the bake time the old stack may be decommissioned; sending traffic back could reach nothing",
                f"bpmigrate rollback --step dns-cutover --env {ctx.env_name} --force-past-fence",
            )
        rec = WeightedRecord(ctx, cfg)
        zone_id = rec.zone()
        if zone_id is not None and rec.all_to_old(zone_id):
            rec.forget_stages()

    def summary(self, outputs: Mapping[str, Any]) -> str:
        stages = outputs.get("stages") or {}
        if not stages:
            return ""
        n = sum(int((s.get("probes") or {}).get("requests") or 0) for s in stages.values())
        return f"{outputs.get('record')} → {outputs.get('new_target')} · stages {'/'.join(sorted(stages, key=int))} % · {n:,} requests sampled"
