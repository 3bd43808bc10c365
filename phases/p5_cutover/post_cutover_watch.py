"""Step ``post-cutover-watch``: Post-cutover watch: probe the new stack for ``window_s`` seconds (default 1 h) after 100 %; results recorded."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from migrate.errors import VerifyFailed
from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import PHASE, Clock, iso, step_settings


class PostCutoverWatch(Step):
    """Post-cutover watch: probe the new stack for ``window_s`` seconds (default 1 h) after 100 %; results recorded.

    Rounds of probes (``probe_urls``, default those of dns-cutover) every ``interval_s``; outputs give per-URL
    totals, error rate, p95/p99 and availability (share of successful requests). ``perf-review`` reads them.
    The step fails when availability < ``min_availability`` (default 0.999) or p95 > ``max_p95_ms``: then consider
    ``bpmigrate rollback --phase cutover`` while dns-cutover is inside its bake time.

    Read-only: rollback is a no-op.
    """

    id = "post-cutover-watch"
    title = "Post-cutover watch (probes for a window)"
    phase = PHASE
    depends_on = ("dns-cutover",)
    reversibility = Reversibility.REVERSIBLE
    clock: ClassVar[Clock] = Clock()

    def skip_reason(self, ctx: StepContext) -> str | None:
        if "dns-cutover" not in ctx.upstream and not ctx.setting("probe_urls"):
            return "dns-cutover has not moved traffic in this environment: nothing to watch"
        return None

    def _urls(self, ctx: StepContext) -> list[str]:
        urls = ctx.setting("probe_urls")
        if urls:
            return [str(u) for u in urls]
        return [
            str(u)
            for u in step_settings(ctx, "dns-cutover").get("probe_urls", [f"https://api.{ctx.env.domain}/health"])
        ]

    def plan(self, ctx: StepContext) -> PlanResult:
        window = float(ctx.setting("window_s", 3600))
        return PlanResult(changes=[Change("run", "watch", f"probe {', '.join(self._urls(ctx))} for {window:g}s")])

    def apply(self, ctx: StepContext) -> Outputs:
        http = ctx.adapters.http()
        window = float(ctx.setting("window_s", 3600))
        interval = float(ctx.setting("interval_s", 30))
        requests = int(ctx.setting("probe_requests", 20))
        start = self.clock.now()
        totals: dict[str, dict[str, Any]] = {}
        rounds = 0
        while True:
            rounds += 1
            for url in self._urls(ctx):
                stats = http.probe(
                    url,
                    requests=requests,
                    concurrency=int(ctx.setting("probe_concurrency", 4)),
                    timeout=float(ctx.setting("probe_timeout_s", 5)),
                )
                t = totals.setdefault(url, {"count": 0, "errors": 0, "p95_ms": 0.0, "p99_ms": 0.0, "rounds": 0})
                t["count"] += int(stats.count)
                t["errors"] += int(stats.errors)
                t["p95_ms"] = max(float(t["p95_ms"]), float(stats.p95_ms))
                t["p99_ms"] = max(float(t["p99_ms"]), float(stats.p99_ms))
                t["rounds"] += 1
            remaining = start + window - self.clock.now()
            if remaining <= 0:
                break
            self.clock.sleep(min(interval, remaining))
        count = sum(int(t["count"]) for t in totals.values())
        errors = sum(int(t["errors"]) for t in totals.values())
        for t in totals.values():
            t["error_rate"] = round(t["errors"] / t["count"], 5) if t["count"] else 0.0
        availability = round(1 - errors / count, 6) if count else 0.0
        worst_p95 = max((float(t["p95_ms"]) for t in totals.values()), default=0.0)
        out: dict[str, Any] = {
            "started_at": iso(start),
            "finished_at": iso(self.clock.now()),
            "window_s": window,
            "rounds": rounds,
            "requests": count,
            "errors": errors,
            "availability": availability,
            "p95_ms": worst_p95,
            "per_url": totals,
        }
        ctx.checkpoints.put("result", out)
        min_avail = float(ctx.setting("min_availability", 0.999))
        max_p95 = float(ctx.setting("max_p95_ms", 200))
        if availability < min_avail or worst_p95 > max_p95:
            raise VerifyFailed(
                f"post-cutover watch: availability {availability:.4%} (min {min_avail:.3%}), p95 {out['p95_ms']:.1f} ms (max {max_p95:g})",
                json.dumps(totals, default=str),
                f"investigate the new stack; while inside the bake time: `bpmigrate rollback --phase cutover --env {ctx.env_name}`",
            )
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        result = ctx.checkpoints.get("result") or ctx.upstream.get(self.id) or {}
        min_avail = float(ctx.setting("min_availability", 0.999))
        avail = result.get("availability")
        return [
            Check(
                "availability during the watch window",
                avail is not None and float(avail) >= min_avail,
                avail,
                f">= {min_avail}",
            )
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Nothing to undo: the watch only reads."""
