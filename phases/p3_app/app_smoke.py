"""Step ``app-smoke``: Smoke and health checks over HTTP against the service endpoints."""

from __future__ import annotations

from typing import Any

from migrate.errors import AdapterError, ConfigError, StepFailed
from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import PHASE, endpoints, http, namespace


class AppSmoke(Step):
    """Smoke and health checks over HTTP against the service endpoints.

    For every endpoint in `[steps.app-smoke] endpoints = {service = "http://..."}` it requires GET
    `<endpoint><health_path>` (default /health) to answer 2xx; extra `checks = [{name, url|service+path, method,
    json, expect_status, expect_contains}]` run too. Results are recorded as outputs; a failed check fails the step.
    """

    id = "app-smoke"
    phase = PHASE
    depends_on = ("k8s-deploy",)
    reversibility = Reversibility.REVERSIBLE

    def skip_reason(self, ctx: StepContext) -> str | None:
        if endpoints(ctx):
            return None
        return (
            "no service endpoints configured: set [steps.app-smoke] endpoints = "
            f'{{ api-gateway = "https://api.{ctx.env.domain}" }} in migrate.toml'
        )

    def checks(self, ctx: StepContext) -> list[dict[str, Any]]:
        eps = endpoints(ctx)
        default_path = str(ctx.setting("health_path", "/health"))
        paths = ctx.setting("health_paths", {}) or {}
        out: list[dict[str, Any]] = [
            {
                "name": f"{svc} health",
                "url": f"{url}{paths.get(svc, default_path)}",
                "method": "GET",
                "expect_status": 200,
            }
            for svc, url in eps.items()
        ]
        for i, extra in enumerate(ctx.setting("checks", []) or []):
            url = extra.get("url") or f"{eps.get(str(extra.get('service')), '')}{extra.get('path', '/')}"
            if "://" not in url:
                raise ConfigError(
                    f"[steps.app-smoke] checks[{i}] has no usable url",
                    f"service {extra.get('service')!r} has no endpoint and no url was given",
                    'give url = "http://..." or a service named in endpoints',
                )
            out.append(
                {
                    "name": str(extra.get("name") or f"check {i + 1}"),
                    "url": url,
                    "method": str(extra.get("method", "GET")).upper(),
                    "json": extra.get("json"),
                    "expect_status": int(extra.get("expect_status", 200)),
                    "expect_contains": extra.get("expect_contains"),
                }
            )
        return out

    def run(self, ctx: StepContext, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        adapter = http(ctx, [c["url"] for c in checks])
        timeout = float(ctx.setting("timeout", 10))
        results = []
        for check in checks:
            entry: dict[str, Any] = {"name": check["name"], "url": check["url"], "method": check["method"]}
            try:
                resp = adapter.request(check["method"], check["url"], timeout=timeout, json_body=check.get("json"))
            except AdapterError as exc:
                entry.update(ok=False, status=None, error=exc.what)
            else:
                ok = resp.status == check["expect_status"]
                if ok and check.get("expect_contains"):
                    ok = str(check["expect_contains"]) in resp.body
                entry.update(ok=ok, status=resp.status, elapsed_ms=resp.elapsed_ms)
                if not ok:
                    entry["error"] = f"HTTP {resp.status} (expected {check['expect_status']}): {resp.body[:120]}"
            results.append(entry)
            ctx.log(
                f"smoke {'ok  ' if entry['ok'] else 'FAIL'} {check['method']} {check['url']}: {entry.get('status')}"
            )
        return results

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        checks = self.checks(ctx)
        http(ctx, [c["url"] for c in checks])  # refuses non-configured targets at plan time already
        return PlanResult(
            changes=[Change("run", f"{c['method']} {c['url']}", c["name"]) for c in checks],
            data={"checks": [{k: v for k, v in c.items() if k != "json"} for c in checks]},
        )

    def apply(self, ctx: StepContext) -> Outputs:
        checks = self.checks(ctx)
        ctx.intent("http-smoke", checks=[c["name"] for c in checks])
        results = self.run(ctx, checks)
        failed = [r for r in results if not r["ok"]]
        if failed:
            raise StepFailed(
                f"{len(failed)} of {len(results)} smoke check(s) failed: " + ", ".join(r["name"] for r in failed),
                "; ".join(f"{r['name']}: {r.get('error')}" for r in failed),
                f"check the pods (kubectl -n {namespace(ctx)} get pods) and logs, then re-run "
                f"`bpmigrate apply --step app-smoke --env {ctx.env_name}`",
            )
        return {"checks": results, "passed": len(results), "endpoints": endpoints(ctx)}

    def verify(self, ctx: StepContext) -> list[Check]:
        health = [c for c in self.checks(ctx) if c["name"].endswith(" health")]
        return [
            Check(r["name"], bool(r["ok"]), r.get("status"), 200, str(r.get("error", "")))
            for r in self.run(ctx, health)
        ]

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("app-smoke changes nothing: nothing to roll back")
