"""Step ``pre-cutover-check``: Pre-cutover checklist: the guide's validation list, run as checks right before DNS moves."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from migrate.errors import BpmError, VerifyFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import (
    PHASE,
    Clock,
    app_namespaces,
    data_steps,
    iso,
    kube_unreachable,
    parse_ts,
    rerun_data_verification,
    rerun_verify,
    step_class,
)


class PreCutoverCheck(Step):
    """Pre-cutover checklist: the guide's validation list, run as checks right before DNS moves.

    * data-phase verification still green — every phase-2 step's ``verify`` is RE-RUN now against the live
      databases (row counts, checksums), not read from the ledger;
    * services healthy — each ``health_urls`` entry answers 2xx/3xx; with a cluster, every Deployment in the app
      namespaces has all replicas available;
    * smoke tests pass — the ``app-smoke`` step's checks are re-run, and each ``smoke_urls`` entry (GET) answers
      with the expected status;
    * load-test gate recorded within ``load_test_max_age_h`` hours (default 24) — from the ``load-test`` step's
      recorded timestamp, and that gate passed.

    Read-only: apply records the checklist result; rollback is a no-op.
    """

    id = "pre-cutover-check"
    title = "Pre-cutover checklist (re-run data verification, health, smoke, load gate)"
    phase = PHASE
    # the data steps are listed so their outputs (read by their verify) are recorded before this re-runs them
    depends_on = ("data-validate", "redis-verify", "app-smoke", "load-test", "security-hardening")
    reversibility = Reversibility.REVERSIBLE
    clock: ClassVar[Clock] = Clock()

    def skip_reason(self, ctx: StepContext) -> str | None:
        """Sandbox only: no service can be observed (no cluster, no health_urls, app-smoke not recorded)."""
        if (
            ctx.is_sandbox
            and not ctx.setting("health_urls")
            and "app-smoke" not in ctx.upstream
            and kube_unreachable(ctx)
        ):
            return (
                "no services to check in this sandbox (no Kubernetes cluster, no [steps.pre-cutover-check] health_urls, "
                "app-smoke not recorded)"
            )
        return None

    def checks(self, ctx: StepContext) -> list[Check]:
        checks = rerun_data_verification(ctx)
        checks.extend(self._health(ctx))
        checks.extend(self._smoke(ctx))
        checks.append(self._load_gate(ctx))
        return checks

    def _health(self, ctx: StepContext) -> list[Check]:
        http = ctx.adapters.http()
        checks: list[Check] = []
        for url in ctx.setting("health_urls", []):
            try:
                resp = http.get(str(url), timeout=float(ctx.setting("timeout_s", 5)))
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

    def _smoke(self, ctx: StepContext) -> list[Check]:
        http = ctx.adapters.http()
        checks = []
        for item in ctx.setting("smoke_urls", []):
            url, expect = (item, 200) if isinstance(item, str) else (str(item["url"]), int(item.get("status", 200)))
            try:
                resp = http.get(url, timeout=float(ctx.setting("timeout_s", 5)))
                checks.append(Check(f"smoke: {url}", resp.status == expect, resp.status, expect))
            except BpmError as exc:
                checks.append(Check(f"smoke: {url}", False, str(exc).splitlines()[0], expect))
        smoke_cls = step_class("phases.p3_app", "app-smoke")
        if smoke_cls is not None and ("app-smoke" in ctx.upstream or not checks):
            checks.append(rerun_verify(ctx, smoke_cls))
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

    def _load_gate(self, ctx: StepContext) -> Check:
        max_age_h = float(ctx.setting("load_test_max_age_h", 24))
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
        result = PlanResult(
            changes=[Change("run", "pre-cutover checklist", "data verify, health, smoke, load-test gate")]
        )
        if not data_steps():
            result.findings.append(Finding("block", "no phase-2 steps found to re-verify", "add phases/p2_data.py"))
        return result

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
                "fix the failing items, then `bpmigrate apply --step pre-cutover-check` again",
            )
        return {"checked_at": iso(self.clock.now()), "checks": summary, "passed": True}

    def verify(self, ctx: StepContext) -> list[Check]:
        return self.checks(ctx)

    def rollback(self, ctx: StepContext) -> None:
        """Nothing to undo: the checklist only reads."""
