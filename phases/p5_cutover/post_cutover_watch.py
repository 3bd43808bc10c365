"""Step ``post-cutover-watch``: sample the new stack for the whole rollback window after 100 %; a breach sends the
traffic back to the old stack by itself. The window survives restarts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from migrate.errors import StepFailed
from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext

from .._cutover_dns import recorded_pair
from .._traffic import SamplingSettings, write_evidence
from ._common import PHASE, Clock, iso


class PostCutoverWatch(Step):
    """Post-cutover watch: the automatic-rollback window (default 72 h), sampled in rounds, resumable.

    The window starts when dns-cutover reached 100 % and is checkpointed (``window``: started/ends): a killed or
    restarted bpmigrate resumes the watch with ``apply`` and only watches what is left. Every ``interval_s`` a
    round samples each URL (``urls``, default dns-cutover's direct and record URLs) with ``sample_requests``
    requests; totals are checkpointed after every round. ``breach_rounds`` consecutive breaching rounds (error
    rate > ``max_error_rate`` or p95 > ``max_p95_ms``) REVERT the weighted record to 100 % old stack by themselves
    (both stacks share the target database: nothing to move), record the evidence and fail the step. The data way
    back is then ``bpmigrate rollback --step data-switch`` (lossless through the reverse stream).

    ``decommission`` refuses until this window ended clean. Read-only when nothing breaches; rollback is a no-op.
    """

    id = "post-cutover-watch"
    title = "Post-cutover watch: the automatic-rollback window"
    phase = PHASE
    depends_on = ("dns-cutover",)
    reversibility = Reversibility.REVERSIBLE
    timeout = None  # one apply watches the whole window (days): never cut it per attempt
    clock: ClassVar[Clock] = Clock()

    class Settings(SamplingSettings):  # probe_timeout_s from SamplingSettings
        window_s: float = Field(259200, ge=0, description="the automatic-rollback window (72 h)")
        interval_s: float = Field(30, ge=0, description="pause between rounds")
        urls: list[str] = Field(default_factory=list, description="default: dns-cutover's direct + record URLs")
        probe_urls: list[str] = Field(default_factory=list, description="older name of urls")
        sample_requests: int = Field(50, ge=1, description="requests per URL per round")
        # lighter rounds than a cutover stage's samples, and a breach counts against the round (not a revert)
        sample_with: str = Field("http", pattern="^(load|http)$", description="load generator or HTTP probe")
        sample_rps: float = Field(50, gt=0, description="arrival rate of a round (load generator)")
        probe_concurrency: int = Field(4, ge=1, description="concurrency of the HTTP probe")
        max_error_rate: float = Field(0.01, ge=0, description="a breach of this counts against the round")
        max_p95_ms: float = Field(200, gt=0, description="a breach of this counts against the round")
        min_availability: float = Field(0.999, ge=0, le=1, description="over the whole window")
        breach_rounds: int = Field(2, ge=1, description="consecutive breaching rounds that revert the traffic")
        auto_revert: bool = Field(True, description="revert the weighted record by itself on a breach")

    def skip_reason(self, ctx: StepContext) -> str | None:
        if not self._urls(ctx, ctx.typed(self.Settings)):
            return "dns-cutover has not moved traffic in this environment and no urls are set: nothing to watch"
        return None

    def _urls(self, ctx: StepContext, s: Any) -> list[str]:
        cut = ctx.upstream.get("dns-cutover", {})
        return list(s.urls or s.probe_urls or [*cut.get("direct_urls", []), *cut.get("record_urls", [])])

    def plan(self, ctx: StepContext) -> PlanResult:
        s = ctx.typed(self.Settings)
        window = ctx.checkpoints.get("window")
        left = max(0.0, float(window["ends_ts"]) - self.clock.now()) if window else s.window_s
        detail = f"sample {', '.join(self._urls(ctx, s))} every {s.interval_s:g}s; {left:,.0f}s of the window left"
        return PlanResult(changes=[Change("run", "watch (auto-revert armed)" if s.auto_revert else "watch", detail)])

    def apply(self, ctx: StepContext) -> Outputs:
        s = ctx.typed(self.Settings)
        urls = self._urls(ctx, s)
        window = ctx.checkpoints.get("window")
        if window is None:
            start = float(ctx.upstream.get("dns-cutover", {}).get("completed_ts") or self.clock.now())
            window = {"started_ts": start, "ends_ts": start + s.window_s, "window_s": s.window_s}
            ctx.checkpoints.put("window", window)
        else:
            left = float(window["ends_ts"]) - self.clock.now()
            ctx.log(f"post-cutover-watch: resuming the window ({max(0.0, left):,.0f}s left)")
        state = ctx.checkpoints.get("totals") or {"rounds": 0, "per_url": {}, "streak": 0}
        while True:
            results = s.judged_round(ctx, [("watch", u) for u in urls], s.sample_requests, label="watch")
            breaches = [f"{r['url']}: {r['breach']}" for r in results if not r["ok"]]
            for entry in (r for r in results if r["via"] != "alarms"):
                t = state["per_url"].setdefault(entry["url"], {"count": 0, "errors": 0, "p95_ms": 0.0, "p99_ms": 0.0})
                t["count"] += int(entry.get("count") or 0)
                t["errors"] += int(entry.get("errors") or 0) + (s.sample_requests if entry.get("error") else 0)
                t["p95_ms"] = max(float(t["p95_ms"]), float(entry.get("p95_ms") or 0))
                t["p99_ms"] = max(float(t["p99_ms"]), float(entry.get("p99_ms") or 0))
            state["rounds"] += 1
            state["streak"] = state["streak"] + 1 if breaches else 0
            state["last_breach"] = breaches or state.get("last_breach")
            ctx.checkpoints.put("totals", state)
            if breaches and state["streak"] >= s.breach_rounds:
                self._breach(ctx, s, window, state, breaches)
            remaining = float(window["ends_ts"]) - self.clock.now()
            if remaining <= 0:
                break
            self.clock.sleep(min(s.interval_s, remaining))
        out = self._result(window, state)
        if out["availability"] < s.min_availability:
            out["clean"] = False
            ctx.checkpoints.put("result", out)
            raise StepFailed(
                f"post-cutover watch: availability {out['availability']:.4%} < {s.min_availability:.3%} over the window",
                json.dumps(state["per_url"], default=str),
                f"investigate the new stack; `bpmigrate rollback --phase cutover --env {ctx.env_name}` is still lossless",
            )
        ctx.checkpoints.put("result", out)
        return out

    def _result(self, window: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
        per_url = state["per_url"]
        count = sum(int(t["count"]) for t in per_url.values())
        errors = sum(int(t["errors"]) for t in per_url.values())
        return {
            "started_at": iso(float(window["started_ts"])),
            "ends_at": iso(float(window["ends_ts"])),
            "ends_ts": float(window["ends_ts"]),
            "finished_at": iso(self.clock.now()),
            "window_s": window["window_s"],
            "rounds": state["rounds"],
            "requests": count,
            "errors": errors,
            "availability": round(1 - errors / count, 6) if count else 0.0,
            "p95_ms": max((float(t["p95_ms"]) for t in per_url.values()), default=0.0),
            "per_url": per_url,
            "clean": True,
        }

    def _breach(self, ctx: StepContext, s: Any, window: Any, state: dict[str, Any], breaches: list[str]) -> None:
        cut = ctx.upstream.get("dns-cutover", {})
        reverted = None
        if s.auto_revert and cut.get("zone_id"):
            pair = recorded_pair(cut)
            ctx.intent("route53-revert", zone_id=cut["zone_id"], record=cut["record"], reason=breaches[0])
            reverted = ctx.adapters.get("aws_route53").shift(
                cut["zone_id"], pair, 0, comment="bpmigrate post-cutover-watch: REVERT on breach"
            )
        out = self._result(window, state) | {"clean": False, "breach": breaches, "reverted": reverted}
        ctx.checkpoints.put("result", out)
        path = write_evidence(ctx, "watch-evidence", f"watch-breach-{int(self.clock.now())}", out)
        raise StepFailed(
            f"post-cutover watch: {state['streak']} breaching round(s) — "
            + ("traffic REVERTED to the old stack" if reverted else "auto_revert is off: traffic NOT moved"),
            f"{'; '.join(breaches[:3])}; evidence: {path}",
            f"both stacks still write to the target; for the data way back: bpmigrate rollback --step data-switch "
            f"--env {ctx.env_name}; or fix the new stack and re-run dns-cutover",
        )

    def verify(self, ctx: StepContext) -> list[Check]:
        s = ctx.typed(self.Settings)
        result = ctx.checkpoints.get("result") or ctx.upstream.get(self.id) or {}
        avail = result.get("availability")
        ended = result.get("ends_ts") is not None and float(result["ends_ts"]) <= self.clock.now()
        return [
            Check("watch window over", ended, result.get("ends_at"), "in the past"),
            Check(
                "window ended clean (no breach)", bool(result.get("clean")), result.get("breach") or "clean", "clean"
            ),
            Check(
                "availability over the window",
                avail is not None and float(avail) >= s.min_availability,
                avail,
                f">= {s.min_availability}",
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Nothing to undo: the watch only reads (a breach already moved the traffic back)."""
        ctx.checkpoints.clear()

    def summary(self, outputs: Mapping[str, Any]) -> str:
        if "availability" not in outputs:
            return ""
        state = "clean" if outputs.get("clean") else "BREACHED"
        return (
            f"{state} · availability {float(outputs['availability']):.3%} over {float(outputs['window_s']):,.0f}s · "
            f"{int(outputs.get('requests') or 0):,} requests"
        )
