"""Step ``ml-perf``: Inference latency gate: p95 < 500 ms and errors < 1 % at the configured concurrency."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from migrate.errors import ConfigError, StepFailed
from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, StepContext

from ._common import _kube, _Ml, _ml, serving, stats_table


class MlPerf(_Ml):
    """Inference latency gate: p95 < 500 ms and errors < 1 % at the configured concurrency.

    Thresholds: ``p95_ms`` (default 500) and ``max_error_rate`` (default 0.01). Measured by a closed-loop probe of
    the inference endpoint: TorchServe's POST /predictions/<model> (or ``url``), or with serving = "sagemaker" the
    endpoint's InvokeEndpoint API (SigV4-signed by boto3).

    The results are recorded as the step's outputs, as metrics and as a JSON report artifact, and shown as a table;
    a miss fails the step with the numbers (they are recorded even then).
    """

    id = "ml-perf"
    depends_on = ("ml-config",)
    reversibility = Reversibility.REVERSIBLE
    timeout = 900.0

    def skip_reason(self, ctx: StepContext) -> str | None:
        if ctx.setting("url") or serving(ctx) == "sagemaker":
            return None  # an explicit URL, or SageMaker's runtime API: no cluster needed
        return _kube(ctx).unreachable_reason()

    def _endpoint(self, ctx: StepContext) -> str | None:
        """The SageMaker endpoint to measure (serving = "sagemaker" without an explicit url), else None."""
        if ctx.setting("url") or serving(ctx) != "sagemaker":
            return None
        name = ctx.setting("endpoint") or ctx.upstream.get("models", {}).get("sagemaker", {}).get("endpoint")
        if not name:
            raise ConfigError(
                "[steps.ml-perf] cannot tell which SageMaker endpoint to measure",
                "the models step has recorded no endpoint and no endpoint setting is given",
                f'bpmigrate apply --step models --env {ctx.env_name} (serving = "sagemaker"), or set endpoint',
            )
        return str(name)

    def _target(self, ctx: StepContext) -> str:
        if ctx.setting("url"):
            return str(ctx.setting("url"))
        endpoint = self._endpoint(ctx)
        if endpoint:
            return f"sagemaker://{endpoint}"
        inference = ctx.setting("inference_url") or ctx.upstream.get("torchserve", {}).get("inference_url")
        model = ctx.setting("model") or next(iter(ctx.upstream.get("models", {}).get("registered") or []), None)
        if not inference or not model:
            raise ConfigError(
                "[steps.ml-perf] cannot tell which endpoint to measure",
                "neither url nor (inference_url + model, or the torchserve/models outputs) are available",
                'set url = "http://127.0.0.1:8080/predictions/intent-classifier" in [steps.ml-perf]',
            )
        return f"{str(inference).rstrip('/')}/predictions/{model}"

    def _gate(self, ctx: StepContext) -> tuple[float, float]:
        return float(ctx.setting("p95_ms", 500)), float(ctx.setting("max_error_rate", 0.01))

    def plan(self, ctx: StepContext) -> PlanResult:
        if skipped := self._skip_plan(ctx):
            return skipped
        gate_ms, max_err = self._gate(ctx)
        requests, conc = int(ctx.setting("requests", 200)), int(ctx.setting("concurrency", 8))
        result = PlanResult(
            data={"p95_ms": gate_ms, "max_error_rate": max_err, "requests": requests, "concurrency": conc}
        )
        try:
            target = self._target(ctx)
            result.changes.append(
                Change(
                    "run",
                    target,
                    f"{requests} requests at concurrency {conc}; gate p95 < "
                    f"{gate_ms:g} ms, errors < {max_err * 100:g} %",
                )
            )
        except ConfigError as exc:
            result.unknown.append(f"endpoint to measure ({exc.what})")
        return result

    def _measure(self, ctx: StepContext, requests: int) -> dict[str, Any]:
        url = self._target(ctx)
        payload = ctx.setting("payload", {"text": "Summarise the quarterly report in three bullet points."})
        endpoint = self._endpoint(ctx)
        if endpoint:
            sm = _ml(ctx).probe_endpoint(
                endpoint,
                json.dumps(payload).encode(),
                requests=requests,
                concurrency=int(ctx.setting("concurrency", 8)),
            )
            return {"url": url, **sm}
        stats = ctx.adapters.http().probe(
            url,
            requests=requests,
            concurrency=int(ctx.setting("concurrency", 8)),
            timeout=float(ctx.setting("request_timeout", 5.0)),
            method="POST",
            json_body=payload,
        )
        return {
            "url": url,
            **{k: getattr(stats, k) for k in ("count", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms")},
        }

    def apply(self, ctx: StepContext) -> Outputs:
        gate_ms, max_err = self._gate(ctx)
        ctx.intent("inference-probe", requests=int(ctx.setting("requests", 200)))
        stats = self._measure(ctx, int(ctx.setting("requests", 200)))
        passed = stats["p95_ms"] < gate_ms and stats["error_rate"] < max_err and stats["count"] > 0
        out: Outputs = {
            **stats,
            "concurrency": int(ctx.setting("concurrency", 8)),
            "gate_p95_ms": gate_ms,
            "gate_max_error_rate": max_err,
            "passed": passed,
        }
        ctx.metrics(**{k: float(stats[k]) for k in ("count", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms")})
        report = ctx.artifacts_dir() / "ml-perf.json"
        report.write_text(json.dumps(out, indent=2, sort_keys=True))
        ctx.artifact("latency-report", report, hashlib.sha256(report.read_bytes()).hexdigest(), report.stat().st_size)
        ctx.log("inference latency (" + stats["url"] + ")\n" + stats_table(stats, gate_ms, max_err))
        if not passed:
            raise StepFailed(
                f"inference latency gate missed: p95 {stats['p95_ms']:.1f} ms (gate < {gate_ms:g} ms), errors "
                f"{stats['error_rate'] * 100:.2f} % (gate < {max_err * 100:g} %)",
                f"{stats['count']} requests at concurrency {out['concurrency']} to {stats['url']}; report: {report}",
                "scale TorchServe (replicas/workers) or fix the slow path, then "
                f"bpmigrate apply --step ml-perf --env {ctx.env_name}",
            )
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        gate_ms, max_err = self._gate(ctx)
        recorded = ctx.upstream.get(self.id, {})
        checks = [
            Check(
                "recorded p95 under the gate",
                float(recorded.get("p95_ms", 1e9)) < gate_ms,
                recorded.get("p95_ms"),
                f"< {gate_ms:g} ms",
            ),
        ]
        n = int(ctx.setting("verify_requests", 20))
        if n > 0:
            fresh = self._measure(ctx, n)
            checks.append(
                Check(
                    f"fresh probe ({n} requests) p95 under the gate",
                    fresh["p95_ms"] < gate_ms,
                    fresh["p95_ms"],
                    f"< {gate_ms:g} ms",
                )
            )
            checks.append(
                Check("fresh probe error rate", fresh["error_rate"] < max_err, fresh["error_rate"], f"< {max_err:g}")
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("ml-perf only measures: nothing to roll back")
