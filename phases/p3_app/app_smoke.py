"""Step ``app-smoke``: Smoke and health checks over HTTP against the service endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.errors import AdapterError, ConfigError, StepFailed
from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

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

    class Settings(StepSettings):
        endpoints: dict[str, str] = Field(default_factory=dict, description="service -> base URL")
        health_path: str = Field("/health", description="GET <endpoint><health_path> must answer 2xx")
        health_paths: dict[str, str] = Field(default_factory=dict, description="per-service health path")
        checks: list[dict[str, Any]] = Field(
            default_factory=list,
            description="extra checks: {name, url | service + path, method, json, expect_status, expect_contains}",
        )
        timeout: float = Field(10, gt=0, description="seconds per request")
        namespace: str | None = Field(None, description="shown in the fix command (default: kube.namespace)")

    def skip_reason(self, ctx: StepContext) -> str | None:
        if endpoints(ctx):
            return None
        return (
            "no service endpoints configured: set [steps.app-smoke] endpoints = "
            f'{{ api-gateway = "https://api.{ctx.env.domain}" }} in migrate.toml'
        )

    def checks(self, ctx: StepContext) -> list[dict[str, Any]]:
        eps = endpoints(ctx)
        s = ctx.typed(self.Settings)
        default_path, paths = s.health_path, s.health_paths
        out: list[dict[str, Any]] = [
            {
                "name": f"{svc} health",
                "url": f"{url}{paths.get(svc, default_path)}",
                "method": "GET",
                "expect_status": 200,
            }
            for svc, url in eps.items()
        ]
        for i, extra in enumerate(s.checks):
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
        timeout = ctx.typed(self.Settings).timeout
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

    def summary(self, outputs: Mapping[str, Any]) -> str:
        checks = outputs.get("checks") or []
        if not checks:
            return ""
        slowest = max((float(c.get("elapsed_ms") or 0) for c in checks), default=0.0)
        return f"{sum(1 for c in checks if c.get('ok'))}/{len(checks)} checks pass · slowest {slowest:.0f} ms"
