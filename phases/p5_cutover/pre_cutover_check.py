"""Step ``pre-cutover-check``: the guide's validation list as gates that fit a live source, run right before the switch."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from migrate.errors import BpmError, VerifyFailed
from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from .._alarms import alarm_check
from .._sync import _pgsync
from ._common import PHASE, Clock, app_namespaces, iso, kube_unreachable, parse_ts


def _summarize(name: str, checks: list[Check]) -> Check:
    failed = [c for c in checks if not c.ok]
    return Check(
        name,
        bool(checks) and not failed,
        f"{len(checks) - len(failed)}/{len(checks)} checks pass",
        "all checks pass",
        "; ".join(f"{c.name}: observed {c.observed}, expected {c.expected}" for c in failed[:10]),
    )


class PreCutoverCheck(Step):
    """Pre-cutover checklist, as gates that hold while the source still takes writes.

    * continuous sync healthy — ``pg-sync``'s and ``redis-sync``'s own proofs RE-RUN now (subscription enabled
      with a running worker, slot active, replication lag under ``max_lag_bytes``, follower alive and lag under
      its bound);
    * no drift on what replication confirmed — per table with an integer key: the rows up to the source's max key
      at a snapshot, counted on the target once the subscription confirmed that snapshot's LSN (re-measured up to
      ``drift_attempts`` times: a concurrent update of an old row moves both sides). Never exact counts of tables
      that are still being written; with no continuous sync (stop-the-world path) ``data-validate`` is re-run;
    * services healthy — each ``health_urls`` entry answers 2xx/3xx; with a cluster, every Deployment in the app
      namespaces has all replicas available; ``app-smoke``'s checks re-run, ``smoke_urls`` answer as expected;
    * load-test gate recorded within ``load_test_max_age_h`` hours and passed;
    * no SLO alarm of the ``observability`` step in ALARM.

    Read-only: apply records the checklist result; rollback is a no-op.
    """

    id = "pre-cutover-check"
    title = "Pre-cutover checklist (sync health, confirmed-range drift, health, smoke, load gate)"
    phase = PHASE
    depends_on = (
        "pg-sync",
        "redis-sync",
        "data-validate",
        "redis-verify",
        "app-smoke",
        "load-test",
        "security-hardening",
        "observability",  # its SLO alarms gate the cutover
    )
    reversibility = Reversibility.REVERSIBLE
    clock: ClassVar[Clock] = Clock()

    class Settings(StepSettings):
        health_urls: list[str] = Field(default_factory=list, description="each must answer 2xx/3xx")
        smoke_urls: list[Any] = Field(default_factory=list, description='"url" or {url, status}: extra GET checks')
        timeout_s: float = Field(5, gt=0, description="per HTTP request")
        load_test_max_age_h: float = Field(24, gt=0, description="the load-test gate must be this recent")
        namespaces: list[str] = Field(default_factory=list, description="app namespaces (default: kube.namespace)")
        drift_attempts: int = Field(3, ge=1, description="re-measure a confirmed-range difference this many times")
        drift_timeout_s: float = Field(60, gt=0, description="wait this long for the subscription to confirm")

    def checks(self, ctx: StepContext) -> list[Check]:
        s = ctx.typed(self.Settings)
        checks = self._data(ctx, s)
        checks.extend(self._health(ctx, s))
        checks.extend(self._smoke(ctx, s))
        checks.append(self._load_gate(ctx, s))
        checks.append(alarm_check(ctx))
        return checks

    def _data(self, ctx: StepContext, s: Any) -> list[Check]:
        pg_out = ctx.upstream.get("pg-sync", {})
        checks: list[Check] = []
        if pg_out.get("subscription") or pg_out.get("driver"):
            checks.append(_summarize("pg-sync: verify re-run (lag, subscription, slot)", ctx.reverify("pg-sync")))
        if ctx.upstream.get("redis-sync", {}).get("workdir"):
            checks.append(_summarize("redis-sync: verify re-run (follower, lag)", ctx.reverify("redis-sync")))
        if pg_out.get("subscription"):
            sync = _pgsync(ctx, pg_out.get("name"))
            try:
                drift = sync.confirmed_range_drift(
                    sync.source.tables(), timeout=s.drift_timeout_s, attempts=s.drift_attempts
                )
            except BpmError as exc:
                checks.append(Check("confirmed-range drift", False, str(exc).splitlines()[0], "measured"))
            else:
                for table, d in drift.items():
                    checks.append(
                        Check(
                            f"confirmed-range drift {table}",
                            bool(d["ok"]),
                            d,
                            f"target rows up to key {d['upto']} between the source's before and after "
                            f"(confirmed at {d['lsn']})",
                        )
                    )
        elif not pg_out.get("driver"):  # no stream: the stop-the-world copy is re-verified as it is
            checks.append(_summarize("data-validate: verify re-run", ctx.reverify("data-validate")))
        return checks

    def _health(self, ctx: StepContext, s: Any) -> list[Check]:
        http = ctx.adapters.http()
        checks: list[Check] = []
        for url in s.health_urls:
            try:
                resp = http.get(str(url), timeout=s.timeout_s)
                checks.append(Check(f"healthy: {url}", 200 <= resp.status < 400, resp.status, "2xx/3xx"))
            except BpmError as exc:
                checks.append(Check(f"healthy: {url}", False, str(exc).splitlines()[0], "2xx/3xx"))
        if not kube_unreachable(ctx):
            kube = ctx.adapters.kube()
            for ns in app_namespaces(ctx):
                for dep in kube.list("apps/v1", "Deployment", ns):
                    name = dep["metadata"]["name"]
                    want = int(dep.get("spec", {}).get("replicas", 1) or 0)
                    have = int((dep.get("status") or {}).get("availableReplicas", 0) or 0)
                    checks.append(Check(f"Deployment/{ns}/{name} available", have >= want, have, want))
        if not checks:
            checks.append(
                Check(
                    "services healthy",
                    False,
                    "nothing to check",
                    "health_urls set or a cluster reachable",
                    'set [steps.pre-cutover-check] health_urls = ["https://.../health"]',
                )
            )
        return checks

    def _smoke(self, ctx: StepContext, s: Any) -> list[Check]:
        http = ctx.adapters.http()
        checks = []
        for item in s.smoke_urls:
            url, expect = (item, 200) if isinstance(item, str) else (str(item["url"]), int(item.get("status", 200)))
            try:
                resp = http.get(url, timeout=s.timeout_s)
                checks.append(Check(f"smoke: {url}", resp.status == expect, resp.status, expect))
            except BpmError as exc:
                checks.append(Check(f"smoke: {url}", False, str(exc).splitlines()[0], expect))
        if "app-smoke" in ctx.upstream:
            checks.append(_summarize("app-smoke: verify re-run", ctx.reverify("app-smoke")))
        return checks

    def _load_gate_time(self, ctx: StepContext, outputs: Mapping[str, Any]) -> float | None:
        """When the recorded (passing) load-test gate ran: from its outputs, else from its JSON report's ``at``."""
        for key in ("finished_at", "recorded_at", "completed_at", "at", "timestamp", "ran_at"):
            ts = parse_ts(outputs.get(key))
            if ts is not None:
                return ts
        report = ctx.state_dir / ctx.env_name / "artifacts" / "load-test" / "load-test-report.json"
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("failures"):
            return None  # the last run failed: its time is not the recorded gate's
        return parse_ts(data.get("at"))

    def _load_gate(self, ctx: StepContext, s: Any) -> Check:
        max_age_h = s.load_test_max_age_h
        outputs = ctx.upstream.get("load-test", {})
        passed = outputs.get("passed", outputs.get("gate_passed", outputs.get("ok")))
        ts = self._load_gate_time(ctx, outputs) if outputs else None
        if ts is None:
            return Check(
                "load-test gate recorded",
                False,
                "no passing load-test recorded" if not outputs else "no timestamp recorded",
                f"passed, within {max_age_h:g} h",
                f"bpmigrate --env {ctx.env_name} apply --step load-test",
            )
        age_h = (self.clock.now() - ts) / 3600
        ok = age_h <= max_age_h and bool(passed)
        return Check(
            "load-test gate recorded",
            ok,
            f"{age_h:.1f} h ago, passed={passed}",
            f"passed, within {max_age_h:g} h",
            "" if ok else f"re-run the gate: bpmigrate --env {ctx.env_name} apply --step load-test",
        )

    def plan(self, ctx: StepContext) -> PlanResult:
        return PlanResult(
            changes=[
                Change("run", "pre-cutover checklist", "sync health, confirmed-range drift, health, smoke, load gate")
            ]
        )

    def apply(self, ctx: StepContext) -> Outputs:
        checks = self.checks(ctx)
        failed = [c for c in checks if not c.ok]
        summary = [
            {"name": c.name, "ok": c.ok, "observed": str(c.observed), "expected": str(c.expected)} for c in checks
        ]
        if failed:
            raise VerifyFailed(
                f"pre-cutover check: {len(failed)} of {len(checks)} checks failed",
                "\n".join(f"{c.name}: observed {c.observed}, expected {c.expected} {c.detail}".strip() for c in failed),
                f"fix the failing items, then `bpmigrate apply --step pre-cutover-check --env {ctx.env_name}` again",
            )
        return {"checked_at": iso(self.clock.now()), "checks": summary, "passed": True}

    def verify(self, ctx: StepContext) -> list[Check]:
        return self.checks(ctx)

    def rollback(self, ctx: StepContext) -> None:
        """Nothing to undo: the checklist only reads."""

    def summary(self, outputs: Mapping[str, Any]) -> str:
        checks = outputs.get("checks") or []
        if not checks:
            return ""
        return f"{sum(1 for c in checks if c.get('ok'))}/{len(checks)} checks pass · at {outputs.get('checked_at')}"
