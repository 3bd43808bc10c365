"""Step ``load-test``: the API load gate (Locust, open model): the target rate is reached and p95 / error rate hold."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from migrate.errors import ConfigError
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from .. import _load
from ._common import PHASE, http

if TYPE_CHECKING:
    from migrate.adapters.load import Gate, LoadAdapter, LoadResult, LoadSpec

WORKER_TEMPLATE = "k8s/load/locust-workers.yaml"


class LoadTest(Step):
    """API load gate: the target request rate held for a set time, open model, on Locust.

    Locust (a master and N worker processes, or workers as a Kubernetes Job with runner = "kubernetes") sends the
    request mix (default: the BetterPrompts API's enhance and classify paths, and /health) at target_rps for
    duration_s, whatever the latency; latency counts from each request's intended send time, so a stall shows in
    p95/p99. The gate fails when the achieved rate is below 95 % of the target, when the generator fell behind its
    schedule (reported as the generator's saturation, not the service's), or when p95 / error rate reach the
    thresholds. Rate and thresholds default to [targets] (10,000 req/s, p95 < 200 ms, errors < 0.1 %). The summary,
    Locust's stats and its HTML report are recorded as artifacts. Verify re-reads the recorded gate and probes
    /health briefly.
    """

    id = "load-test"
    phase = PHASE
    depends_on = ("app-smoke",)
    reversibility = Reversibility.REVERSIBLE

    class Settings(_load.GateSettings):
        runner: Literal["local", "kubernetes"] = Field(
            "local", description="where the Locust workers run: local processes, or a Job in the cluster"
        )
        hosts: list[str] = Field(
            default_factory=list, description="base URLs to load (default: app-smoke's api-gateway endpoint)"
        )
        target_rps: float | None = Field(None, gt=0, description="arrival rate to hold (default: [targets] rps)")
        requests: list[dict[str, Any]] = Field(
            default_factory=lambda: [dict(r) for r in _load.DEFAULT_API_MIX],
            description="request mix: [{name, method, path, json, weight, headers}]",
        )
        master_host: str = Field("", description="kubernetes runner: address of this machine the worker pods reach")
        master_port: int = Field(5557, description="kubernetes runner: port the Locust master listens on")
        image: str = Field("locustio/locust:2.47.0", description="kubernetes runner: worker image")
        namespace: str = Field("", description="kubernetes runner: namespace of the worker Job (default: env's)")

    # -- decisions -------------------------------------------------------------------------------------------------
    def hosts(self, ctx: StepContext) -> list[str]:
        s = ctx.typed(self.Settings)
        if s.hosts:
            return [h.rstrip("/") for h in s.hosts]
        eps = ctx.output("app-smoke", "endpoints", {}) or {}
        base = eps.get("api-gateway") if isinstance(eps, Mapping) else None
        return [str(base).rstrip("/")] if base else []

    def skip_reason(self, ctx: StepContext) -> str | None:
        if self.hosts(ctx):
            return None
        return (
            "no load-test endpoint configured: set [steps.load-test] hosts = "
            f'["https://api.{ctx.env.domain}"] in migrate.toml (or apply app-smoke with an api-gateway endpoint)'
        )

    def spec(self, ctx: StepContext) -> LoadSpec:
        from migrate.adapters.load import requests_from_settings

        s = ctx.typed(self.Settings)
        requests = requests_from_settings(s.requests, auth_header_env=s.auth_header_env)
        target_rps = s.target_rps if s.target_rps is not None else ctx.targets.rps
        return _load.spec_from(s, self.hosts(ctx), requests, target_rps, label="load-test")

    def thresholds(self, ctx: StepContext) -> Gate:
        return _load.gate_from(ctx, ctx.typed(self.Settings), ctx.targets.api_p95_ms)

    def params(self, ctx: StepContext) -> dict[str, Any]:
        from migrate.adapters.load import auto_workers

        s = ctx.typed(self.Settings)
        spec, gate = self.spec(ctx), self.thresholds(ctx)
        return {
            "label": spec.label,
            "runner": s.runner,
            "hosts": spec.hosts,
            "requests": [f"{r.method} {r.path} x{r.weight}" for r in spec.requests],
            "target_rps": spec.target_rps,
            "duration_s": spec.duration_s,
            "workers": spec.workers
            or auto_workers(spec.target_rps, cores=None if s.runner == "kubernetes" else _cores()),
            "timeout_s": spec.timeout_s,
            "p95_ms_max": gate.p95_ms,
            "error_rate_max": gate.max_error_rate,
            "min_rate_fraction": gate.min_rate_fraction,
        }

    # -- the contract ----------------------------------------------------------------------------------------------
    def plan(self, ctx: StepContext) -> PlanResult:
        p = self.params(ctx)
        _load.load_adapter(ctx, p["hosts"]).check_spec(self.spec(ctx))  # refuses targets that are not configured
        return PlanResult(
            changes=[
                Change(
                    "run",
                    f"load {', '.join(p['hosts'])}",
                    f"{p['target_rps']:,.6g} req/s x {p['duration_s']:g} s on {p['workers']} {p['runner']} Locust "
                    f"worker(s); gate: >= {p['min_rate_fraction'] * 100:g} % of the rate, p95 < {p['p95_ms_max']:g} "
                    f"ms, errors < {p['error_rate_max'] * 100:g} %",
                )
            ],
            unknown=["achieved rate, latency and error rate (measured by apply)"],
            findings=self._runner_findings(ctx),
            data={"params": p},
        )

    def _runner_findings(self, ctx: StepContext) -> list[Finding]:
        """The kubernetes runner cannot start without the address its worker pods reach this machine at."""
        s = ctx.typed(self.Settings)
        if s.runner != "kubernetes" or s.master_host:
            return []
        return [
            Finding(
                "block",
                'runner = "kubernetes" needs master_host: the address of this machine the worker pods reach',
                'set [environments.<env>.steps.load-test] master_host = "10.0.1.23" (or runner = "local")',
            )
        ]

    def apply(self, ctx: StepContext) -> Outputs:
        s = ctx.typed(self.Settings)
        spec, gate, p = self.spec(ctx), self.thresholds(ctx), self.params(ctx)
        adapter = _load.load_adapter(ctx, spec.hosts)
        ctx.intent("locust-load", hosts=spec.hosts, target_rps=spec.target_rps, duration_s=spec.duration_s)
        if s.runner == "kubernetes":
            result = self._run_in_cluster(ctx, adapter, spec)
        else:
            result = _load.run_load(ctx, adapter, spec)
        fix = (
            "add workers when the generator saturated; otherwise find the slow/failing service (HPA, pod logs, "
            f"RDS/ElastiCache metrics), fix it, then re-run `bpmigrate apply --step load-test --env {ctx.env_name}`"
        )
        return _load.judge(ctx, result, gate, p, failed="load-test gate failed: ", fix=fix)

    def verify(self, ctx: StepContext) -> list[Check]:
        gate = self.thresholds(ctx)
        recorded = ctx.upstream.get(self.id, {})
        stats = recorded.get("stats") or {}
        checks = [
            Check(
                "recorded load gate passed",
                bool(recorded.get("passed"))
                and float(stats.get("achieved_rps", 0))
                >= gate.min_rate_fraction * float(stats.get("target_rps", 1e18)),
                _load.one_line(recorded) or "nothing recorded",
                "passed at >= 95 % of the target rate",
            )
        ]
        n = ctx.typed(self.Settings).verify_requests
        hosts = self.hosts(ctx)
        if n > 0 and hosts:
            from migrate.adapters.load import resolve_headers

            url = f"{hosts[0]}/health"
            auth = (
                {"Authorization": "${" + env_var + "}"} if (env_var := ctx.typed(self.Settings).auth_header_env) else {}
            )
            fresh = http(ctx, [url]).probe(
                url,
                requests=n,
                concurrency=min(4, n),
                timeout=ctx.typed(self.Settings).timeout_s,
                headers=resolve_headers(auth),
            )
            checks.append(Check("probe p95", fresh.p95_ms < gate.p95_ms, fresh.p95_ms, f"< {gate.p95_ms:g} ms"))
            checks.append(Check("probe errors", fresh.errors == 0, fresh.errors, "0", f"GET {url} x{n}, closed loop"))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("load-test changes nothing: nothing to roll back")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return _load.one_line(outputs)

    # -- kubernetes runner -----------------------------------------------------------------------------------------
    def _run_in_cluster(self, ctx: StepContext, adapter: LoadAdapter, spec: LoadSpec) -> LoadResult:
        s = ctx.typed(self.Settings)
        if not s.master_host:
            raise ConfigError(
                'runner = "kubernetes" needs master_host',
                "the worker pods connect to the Locust master, which runs on this machine",
                f'set [environments.{ctx.env_name}.steps.load-test] master_host = "<address pods reach>"',
            )
        kube = ctx.adapters.kube()
        run = adapter.start(spec, ctx.artifacts_dir(), local_workers=False, bind_host="0.0.0.0", port=s.master_port)
        docs = adapter.worker_job_docs(
            run,
            template=ctx.templates_dir / WORKER_TEMPLATE,
            namespace=s.namespace or ctx.env.kube.namespace,
            image=s.image,
            master_host=s.master_host,
        )
        try:
            ctx.intent("locust-workers-job", refs=kube.apply(docs))
            run.wait(timeout=max(0.0, run.deadline - time.monotonic()))
        finally:
            result = run.stop()
            for doc in reversed(docs):
                meta = doc["metadata"]
                kube.delete(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
        return result


def _cores() -> int:
    return os.cpu_count() or 1
