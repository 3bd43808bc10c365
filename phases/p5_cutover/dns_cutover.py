"""Step ``dns-cutover``: DNS cutover: weighted Route53 records move api.<domain> from the Compose host to the new ALB, in stages."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar

from migrate.errors import BpmError, ConfigError, FenceRefused, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

if TYPE_CHECKING:
    from migrate.adapters.aws_route53 import RecordSet, Route53Adapter
from ._common import PHASE, Clock, CutoverSettings, iso, stats_dict


class DnsCutover(Step):
    """DNS cutover: weighted Route53 records move api.<domain> from the Compose host to the new ALB, in stages.

    1. Lower the TTL of the record to ``low_ttl`` (default 60 s) and wait out the OLD TTL, so that resolvers drop
       the long-cached answer. The old TTL and the time it was lowered are checkpointed: a resumed run only waits
       what is left.
    2. Shift the weights stage by stage (``stages``, default 10 → 50 → 100 % to the new stack; SetIdentifiers
       ``old-stack`` / ``new-stack``). After each change, poll Route53 ``GetChange`` until INSYNC (bounded by
       ``insync_timeout_s``), then soak for ``soak_s`` seconds while probes run against ``probe_urls`` every
       ``probe_interval_s``: error rate ≤ ``max_error_rate`` and p95 ≤ ``max_p95_ms``.
    3. A failing probe REVERTS the weights to 100 % old stack at once, records the evidence (probe statistics per
       stage: checkpoint ``revert``, an artifact JSON file, the step's failure message) and fails the step. Fix the
       new stack and re-run ``bpmigrate apply --step dns-cutover``: it continues from the stage it reached.

    The old infrastructure keeps running; its record stays (weight 0) until phase 6.

    Reversibility: compensable, with a time fence. Until ``bake_time_s`` (default 24 h) after 100 % was reached,
    ``bpmigrate rollback --phase cutover`` (or ``--step dns-cutover``) sends all traffic back to the old stack.
    After that the outputs' ``one_way_after`` has passed and rollback refuses unless ``--force-past-fence``
    (by then the old stack may hold stale data).
    """

    id = "dns-cutover"
    title = "Weighted Route53 cutover to the ALB with automatic revert"
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

    # -- helpers -----------------------------------------------------------------------------------------------------
    def r53(self, ctx: StepContext) -> Route53Adapter:
        return ctx.adapters.get("aws_route53")  # type: ignore[no-any-return]

    def zone(self, ctx: StepContext, cfg: CutoverSettings) -> str | None:
        return cfg.zone_id or self.r53(ctx).find_zone(cfg.record_name)

    def _records(self, ctx: StepContext, cfg: CutoverSettings, zone_id: str) -> list[RecordSet]:
        return self.r53(ctx).record_sets(zone_id, cfg.record_name, cfg.record_type)

    def _weighted(self, cfg: CutoverSettings, new_weight: int, ttl: int, old_target: str) -> list[RecordSet]:
        from migrate.adapters.aws_route53 import RecordSet

        old = RecordSet(cfg.record_name, cfg.record_type, ttl, (old_target,), cfg.old_set_id, 100 - new_weight)
        if cfg.new_alias_zone_id:
            new = RecordSet(
                cfg.record_name,
                cfg.record_type,
                None,
                (),
                cfg.new_set_id,
                new_weight,
                (cfg.new_alias_zone_id, str(cfg.new_target)),
            )
        else:
            new = RecordSet(cfg.record_name, cfg.record_type, ttl, (str(cfg.new_target),), cfg.new_set_id, new_weight)
        return [old, new]

    def _old_target(self, cfg: CutoverSettings, records: list[RecordSet]) -> str | None:
        if cfg.old_target:
            return cfg.old_target
        for rec in records:
            if (rec.set_id in (None, cfg.old_set_id)) and rec.values:
                return rec.values[0]
        return None

    def _shift(
        self,
        ctx: StepContext,
        cfg: CutoverSettings,
        zone_id: str,
        new_weight: int,
        old_target: str,
        deletes: list[RecordSet] | None = None,
        comment: str = "",
    ) -> dict[str, Any]:
        r53 = self.r53(ctx)
        change_id = r53.change(
            zone_id,
            upserts=self._weighted(cfg, new_weight, cfg.low_ttl, old_target),
            deletes=deletes or [],
            comment=comment or f"bpmigrate dns-cutover {new_weight}% new",
        )
        synced = r53.wait_insync(change_id, timeout_s=cfg.insync_timeout_s, poll_s=cfg.insync_poll_s)
        return {
            "change_id": change_id,
            "status": synced.status,
            "polls": synced.polls,
            "waited_s": round(synced.waited_s, 3),
        }

    def _probe_round(self, ctx: StepContext, cfg: CutoverSettings) -> tuple[bool, list[dict[str, Any]]]:
        http = ctx.adapters.http()
        results = []
        ok = True
        for url in cfg.probe_urls:
            try:
                stats = http.probe(
                    url, requests=cfg.probe_requests, concurrency=cfg.probe_concurrency, timeout=cfg.probe_timeout_s
                )
                entry = {"url": url, **stats_dict(stats)}
                bad = []
                if float(stats.error_rate) > cfg.max_error_rate:
                    bad.append(f"error rate {stats.error_rate:.3f} > {cfg.max_error_rate:g}")
                if float(stats.p95_ms) > cfg.max_p95_ms:
                    bad.append(f"p95 {stats.p95_ms:.1f} ms > {cfg.max_p95_ms:g} ms")
            except BpmError as exc:  # a probe that cannot run is a failing probe: never shift traffic blind
                entry = {"url": url, "error": str(exc).splitlines()[0]}
                bad = [f"probe error: {entry['error']}"]
            entry["ok"] = not bad
            if bad:
                entry["breach"] = "; ".join(bad)
                ok = False
            results.append(entry)
        return ok, results

    def soak(self, ctx: StepContext, cfg: CutoverSettings, weight: int) -> dict[str, Any]:
        """Probe until the soak time is over (at least one round); stop at the first breach."""
        start = self.clock.now()
        rounds: list[list[dict[str, Any]]] = []
        ok = True
        while True:
            round_ok, results = self._probe_round(ctx, cfg)
            rounds.append(results)
            ctx.log(
                f"dns-cutover {weight}%: probe round {len(rounds)}: "
                + ", ".join(f"{r['url']} {'ok' if r['ok'] else r.get('breach')}" for r in results)
            )
            if not round_ok:
                ok = False
                break
            remaining = start + cfg.soak_s - self.clock.now()
            if remaining <= 0:
                break
            self.clock.sleep(min(cfg.probe_interval_s, remaining))
        flat = [r for rnd in rounds for r in rnd]
        return {
            "ok": ok,
            "rounds": len(rounds),
            "soak_s": round(self.clock.now() - start, 3),
            "worst_error_rate": max((float(r.get("error_rate") or 0) for r in flat), default=0.0),
            "worst_p95_ms": max((float(r.get("p95_ms") or 0) for r in flat), default=0.0),
            "requests": sum(int(r.get("count") or 0) for r in flat),
            "last_round": rounds[-1] if rounds else [],
            "breach": next((r["breach"] for r in flat if r.get("breach")), None),
        }

    def stage_state(self, ctx: StepContext, weight: int) -> dict[str, Any] | None:
        return ctx.checkpoints.get(f"stage-{weight}")

    def _fence(self, ctx: StepContext, cfg: CutoverSettings) -> float | None:
        done = ctx.checkpoints.get("stage-100")
        if done and done.get("passed") and done.get("passed_at") is not None:
            return float(done["passed_at"]) + cfg.bake_time_s
        return None

    def skip_reason(self, ctx: StepContext) -> str | None:
        """Sandbox only: nothing to cut over to when no ALB exists (the ingress step was skipped, no new_target)."""
        if ctx.is_sandbox and not CutoverSettings(ctx).new_target:
            return (
                "no new stack to cut over to: the ingress step recorded no alb_hostname (no cluster in this sandbox) "
                "and [steps.dns-cutover] new_target is unset"
            )
        return None

    # -- the contract --------------------------------------------------------------------------------------------------
    def plan(self, ctx: StepContext) -> PlanResult:
        cfg = CutoverSettings(ctx)
        result = PlanResult(findings=cfg.problems())
        http = ctx.adapters.http()
        for url in cfg.probe_urls:
            try:
                http.check_target(url)
            except BpmError as exc:
                result.findings.append(Finding("block", f"probe URL not allowed: {url}", exc.next_cmd))
        zone_id = self.zone(ctx, cfg)
        result.data.update(
            {
                "record": cfg.record_name,
                "stages": cfg.stages,
                "new_target": cfg.new_target,
                "low_ttl": cfg.low_ttl,
                "soak_s": cfg.soak_s,
            }
        )
        if zone_id is None:
            if cfg.create_zone:
                result.changes.append(Change("create", f"HostedZone/{cfg.zone_name}", "sandbox: no zone yet"))
            else:
                result.findings.append(
                    Finding(
                        "block",
                        f"no Route53 hosted zone contains {cfg.record_name}",
                        "create the zone (foundation phase) or set [steps.dns-cutover] hosted_zone_id",
                    )
                )
            result.unknown.append("current TTL and weights (no zone yet)")
            records: list[RecordSet] = []
        else:
            records = self._records(ctx, cfg, zone_id)
        old_target = self._old_target(cfg, records)
        if old_target is None and zone_id is not None:
            result.findings.append(
                Finding(
                    "block",
                    f"no current record {cfg.record_name} and no old_target setting",
                    'set [steps.dns-cutover] old_target = "<compose host>"',
                )
            )
        weights = {r.set_id: r.weight for r in records if r.set_id}
        old_ttl = max((r.ttl or 0 for r in records), default=0)
        ttl_cp = ctx.checkpoints.get("ttl")
        if ttl_cp and ttl_cp.get("waited"):
            result.in_place.append(f"TTL lowered to {cfg.low_ttl}s and old TTL waited out")
        else:
            wait = old_ttl if not ttl_cp else ttl_cp.get("old_ttl", old_ttl)
            result.changes.append(
                Change("update", f"{cfg.record_name} TTL", f"{old_ttl}s -> {cfg.low_ttl}s, then wait {wait}s")
            )
        for weight in cfg.stages:
            state = self.stage_state(ctx, weight)
            if state and state.get("passed"):
                result.in_place.append(f"stage {weight}% reached and soaked")
            else:
                result.changes.append(
                    Change(
                        "update",
                        f"{cfg.record_name} weights",
                        f"{cfg.new_set_id}={weight} {cfg.old_set_id}={100 - weight}; soak {cfg.soak_s:g}s",
                    )
                )
        result.data["current_weights"] = weights
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        cfg = CutoverSettings(ctx)
        blocking = [f for f in cfg.problems() if f.level == "block"]
        if blocking:
            raise ConfigError(f"dns-cutover cannot start: {blocking[0].message}", "", blocking[0].fix)
        r53 = self.r53(ctx)
        zone_id = self.zone(ctx, cfg)
        if zone_id is None:
            if not cfg.create_zone:
                raise StepFailed(
                    f"no Route53 hosted zone contains {cfg.record_name}",
                    "the zone must exist before the cutover",
                    "create it in the foundation phase, or set [steps.dns-cutover] hosted_zone_id",
                )
            ctx.intent("route53-create-zone", zone=cfg.zone_name)
            zone_id = r53.create_zone(cfg.zone_name, caller_reference=f"bpmigrate-{ctx.env_name}-{cfg.zone_name}")
        records = self._records(ctx, cfg, zone_id)

        # 1. lower the TTL, wait out the old one (checkpointed before and after: resumable without waiting twice)
        ttl_cp = ctx.checkpoints.get("ttl")
        if ttl_cp is None:
            old_target = self._old_target(cfg, records)
            if old_target is None:
                raise StepFailed(
                    f"no current record {cfg.record_name} and no old_target setting",
                    "the cutover needs to know where traffic goes today",
                    'set [steps.dns-cutover] old_target = "<compose host>"',
                )
            old_ttl = max((r.ttl or 0 for r in records), default=0)
            ttl_cp = {
                "old_ttl": old_ttl,
                "low_ttl": cfg.low_ttl,
                "old_target": old_target,
                "zone_id": zone_id,
                "lowered_at": None,
                "waited": False,
            }
            ctx.checkpoints.put("ttl", ttl_cp)
        old_target = str(ttl_cp["old_target"])
        if ttl_cp.get("lowered_at") is None:
            simple = [r for r in self._records(ctx, cfg, zone_id) if not r.is_weighted]
            weights = r53.weights(zone_id, cfg.record_name, cfg.record_type)
            current_new = int(weights.get(cfg.new_set_id, 0))
            ctx.intent(
                "route53-lower-ttl",
                zone_id=zone_id,
                record=cfg.record_name,
                old_ttl=ttl_cp["old_ttl"],
                new_ttl=cfg.low_ttl,
                convert_simple=bool(simple),
            )
            sync = self._shift(
                ctx,
                cfg,
                zone_id,
                current_new,
                old_target,
                deletes=simple,
                comment=f"bpmigrate dns-cutover: TTL {ttl_cp['old_ttl']} -> {cfg.low_ttl}",
            )
            ttl_cp = {**ttl_cp, "lowered_at": self.clock.now(), "change": sync}
            ctx.checkpoints.put("ttl", ttl_cp)
        if not ttl_cp.get("waited"):
            remaining = float(ttl_cp["lowered_at"]) + float(ttl_cp["old_ttl"]) - self.clock.now()
            if remaining > 0:
                ctx.log(f"dns-cutover: waiting {remaining:.0f}s for the old TTL ({ttl_cp['old_ttl']}s) to expire")
                self.clock.sleep(remaining)
            ttl_cp = {**ttl_cp, "waited": True, "waited_until": self.clock.now()}
            ctx.checkpoints.put("ttl", ttl_cp)

        # 2. shift the weights stage by stage; each stage soaks under probes; a breach reverts
        evidence: dict[str, Any] = {}
        for weight in cfg.stages:
            state = self.stage_state(ctx, weight)
            if state and state.get("passed"):
                evidence[str(weight)] = state
                continue
            ctx.intent(
                "route53-shift-weight",
                zone_id=zone_id,
                record=cfg.record_name,
                weights={cfg.new_set_id: weight, cfg.old_set_id: 100 - weight},
            )
            sync = self._shift(ctx, cfg, zone_id, weight, old_target)
            applied_at = self.clock.now()
            ctx.checkpoints.put(
                f"stage-{weight}", {"weight": weight, "applied_at": applied_at, "passed": False, "change": sync}
            )
            probes = self.soak(ctx, cfg, weight)
            state = {
                "weight": weight,
                "applied_at": applied_at,
                "change": sync,
                "probes": probes,
                "passed": probes["ok"],
            }
            if not probes["ok"]:
                self._revert(ctx, cfg, zone_id, old_target, weight, state, evidence)
            state["passed_at"] = self.clock.now()
            ctx.checkpoints.put(f"stage-{weight}", state)
            evidence[str(weight)] = state
            ctx.log(
                f"dns-cutover: stage {weight}% held for {probes['soak_s']:g}s; worst p95 "
                f"{probes['worst_p95_ms']:.1f} ms, worst error rate {probes['worst_error_rate']:.3f}"
            )

        completed_at = float(evidence[str(cfg.stages[-1])]["passed_at"])
        return {
            "zone_id": zone_id,
            "record": cfg.record_name,
            "record_type": cfg.record_type,
            "old_target": old_target,
            "new_target": cfg.new_target,
            "old_set_id": cfg.old_set_id,
            "new_set_id": cfg.new_set_id,
            "old_ttl": ttl_cp["old_ttl"],
            "low_ttl": cfg.low_ttl,
            "stages": evidence,
            "completed_at": iso(completed_at),
            "bake_time_s": cfg.bake_time_s,
            "one_way_after": iso(completed_at + cfg.bake_time_s),
        }

    def _revert(
        self,
        ctx: StepContext,
        cfg: CutoverSettings,
        zone_id: str,
        old_target: str,
        weight: int,
        state: dict[str, Any],
        evidence: dict[str, Any],
    ) -> None:
        ctx.intent(
            "route53-revert",
            zone_id=zone_id,
            record=cfg.record_name,
            failed_stage=weight,
            weights={cfg.new_set_id: 0, cfg.old_set_id: 100},
        )
        revert_sync = self._shift(
            ctx, cfg, zone_id, 0, old_target, comment=f"bpmigrate dns-cutover: REVERT at {weight}%"
        )
        state["reverted"] = revert_sync
        ctx.checkpoints.put(f"stage-{weight}", state)
        record = {"failed_stage": weight, "at": iso(self.clock.now()), "stages": {**evidence, str(weight): state}}
        ctx.checkpoints.put("revert", record)
        path = ctx.artifacts_dir() / f"cutover-revert-{int(self.clock.now())}.json"
        sha, size = ctx.adapters.get("archive").write_text(
            path, json.dumps(record, indent=2, sort_keys=True, default=str)
        )
        ctx.artifact("cutover-evidence", path, sha, size)
        probes = state["probes"]
        raise StepFailed(
            f"dns-cutover: probes failed at stage {weight}% — traffic REVERTED to the old stack (100 % {cfg.old_set_id})",
            f"{probes['breach']}; rounds={probes['rounds']}, worst p95={probes['worst_p95_ms']:.1f} ms, worst error "
            f"rate={probes['worst_error_rate']:.3f}; evidence: {path}",
            f"fix the new stack, then `bpmigrate apply --step dns-cutover --env {ctx.env_name}` (resumes at stage {weight}%)",
        )

    def verify(self, ctx: StepContext) -> list[Check]:
        cfg = CutoverSettings(ctx)
        zone_id = self.zone(ctx, cfg)
        if zone_id is None:
            return [Check("hosted zone exists", False, None, cfg.zone_name)]
        records = {r.set_id: r for r in self._records(ctx, cfg, zone_id)}
        new = records.get(cfg.new_set_id)
        old = records.get(cfg.old_set_id)
        checks = [
            Check(
                f"{cfg.new_set_id} weight",
                new is not None and new.weight == 100,
                None if new is None else new.weight,
                100,
            ),
            Check(
                f"{cfg.old_set_id} record kept (old stack still reachable by rollback)",
                old is not None,
                None if old is None else f"weight {old.weight}",
                "present, weight 0",
            ),
            Check(
                f"{cfg.old_set_id} weight", old is not None and old.weight == 0, None if old is None else old.weight, 0
            ),
        ]
        if new is not None and new.alias is None:
            checks.append(Check("TTL lowered", new.ttl == cfg.low_ttl, new.ttl, cfg.low_ttl))
        ok, results = self._probe_round(ctx, cfg)
        checks.append(
            Check(
                "new stack probes within SLO",
                ok,
                results,
                f"error rate <= {cfg.max_error_rate}, p95 <= {cfg.max_p95_ms} ms",
            )
        )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Send all traffic back to the old stack (weights old=100, new=0). Refused after the bake-time fence."""
        cfg = CutoverSettings(ctx)
        fence = self._fence(ctx, cfg)
        force = bool(getattr(ctx, "force_past_fence", False) or ctx.setting("force_past_fence", False))
        if fence is not None and self.clock.now() >= fence and not force:
            raise FenceRefused(
                f"dns-cutover passed its one-way fence at {iso(fence)} (bake time {cfg.bake_time_s:g}s after 100 %)",
                "after the bake time the old stack may hold stale data or be decommissioned; rolling DNS back could lose writes",
                f"bpmigrate rollback --step dns-cutover --env {ctx.env_name} --force-past-fence",
            )
        zone_id = self.zone(ctx, cfg)
        if zone_id is None:
            return
        records = {r.set_id: r for r in self._records(ctx, cfg, zone_id)}
        old = records.get(cfg.old_set_id)
        if old is None or not old.values:
            ctx.log("dns-cutover rollback: no weighted records found; nothing to undo")
            return
        new = records.get(cfg.new_set_id)
        if old.weight == 100 and (new is None or not new.weight):
            ctx.log("dns-cutover rollback: all traffic already on the old stack")
            self._clear_stages(ctx, cfg)
            return
        ctx.intent(
            "route53-rollback",
            zone_id=zone_id,
            record=cfg.record_name,
            weights={cfg.new_set_id: 0, cfg.old_set_id: 100},
        )
        sync = self._shift(ctx, cfg, zone_id, 0, old.values[0], comment="bpmigrate dns-cutover: ROLLBACK to old stack")
        ctx.log(
            f"dns-cutover rollback: 100 % to {cfg.old_set_id} ({old.values[0]}), change {sync['change_id']} {sync['status']}"
        )
        self._clear_stages(ctx, cfg)

    def _clear_stages(self, ctx: StepContext, cfg: CutoverSettings) -> None:
        ttl = ctx.checkpoints.get("ttl")
        ctx.checkpoints.clear()
        if ttl is not None:
            ctx.checkpoints.put("ttl", ttl)
