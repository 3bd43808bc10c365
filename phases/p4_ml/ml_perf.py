"""Step ``ml-perf``: the inference latency gate (Locust, open model): the classifier holds the rate with p95 < 500 ms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from migrate.errors import ConfigError
from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, StepContext

from .. import _load
from ._common import _kube, _Ml

if TYPE_CHECKING:
    from migrate.adapters.load import Gate, LoadSpec

DEFAULT_PAYLOAD = {"text": "Summarise the quarterly report in three bullet points."}


class MlPerf(_Ml):
    """Inference latency gate: the classifier, driven as users drive it, holds the target rate with p95 < 500 ms.

    Locust sends target_rps classification requests per second (open model: arrivals whatever the latency, latency
    from each request's intended send time) for duration_s to the classifier endpoint users reach: url (e.g. the
    API's /api/v1/classify), or TorchServe's POST /predictions/<model>. Every failed or timed-out call counts as a
    failure and keeps its latency in the sample. The gate fails below 95 % of the rate, when the generator fell
    behind (its own saturation, named as such), or when p95 / error rate reach the thresholds ([targets] ml_p95_ms
    and error_rate: 500 ms, 0.1 %). With serving = "sagemaker" set url to the HTTP endpoint in front of the model
    (users never call the bare InvokeEndpoint API, so neither does the gate).
    """

    id = "ml-perf"
    depends_on = ("ml-config",)
    reversibility = Reversibility.REVERSIBLE
    timeout = 900.0

    class Settings(_load.GateSettings):
        serving: Literal["torchserve", "sagemaker"] = Field(
            "torchserve", description="phase 4's serving mode (the same value in every phase-4 table)"
        )
        url: str = Field("", description="the classifier endpoint users reach (default: TorchServe predictions)")
        inference_url: str = Field("", description="TorchServe inference API (default: the torchserve step's)")
        model: str = Field("", description="TorchServe model name (default: the first model registered)")
        duration_s: float = Field(30.0, gt=0, description="seconds of load")
        target_rps: float = Field(20.0, gt=0, description="classification requests per second to hold")
        payload: dict[str, Any] = Field(
            default_factory=lambda: dict(DEFAULT_PAYLOAD), description="JSON body of a classification request"
        )

    # -- decisions -------------------------------------------------------------------------------------------------
    def skip_reason(self, ctx: StepContext) -> str | None:
        s = ctx.typed(self.Settings)
        if s.url:
            return None  # an explicit endpoint: no cluster needed
        if s.serving == "sagemaker":
            return (
                'serving = "sagemaker" and no [steps.ml-perf] url: set url to the classifier endpoint users reach '
                f'(e.g. "https://api.{ctx.env.domain}/api/v1/classify"); the gate measures it as users use it'
            )
        return _kube(ctx).unreachable_reason()

    def target(self, ctx: StepContext) -> str:
        s = ctx.typed(self.Settings)
        if s.url:
            return s.url
        ts = ctx.upstream.get("torchserve", {})
        inference = s.inference_url or ts.get("inference_url")
        model = s.model or next(iter(ctx.upstream.get("models", {}).get("registered") or []), None)
        if not inference or not model:
            raise ConfigError(
                "[steps.ml-perf] cannot tell which endpoint to measure",
                "neither url nor (inference_url + model, or the torchserve/models outputs) are available",
                'set url = "http://127.0.0.1:8080/predictions/intent-classifier" in [steps.ml-perf]',
            )
        return f"{str(inference).rstrip('/')}/predictions/{model}"

    def spec(self, ctx: StepContext) -> LoadSpec:
        from migrate.adapters.load import RequestSpec

        s = ctx.typed(self.Settings)
        parts = urlsplit(self.target(ctx))
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Authorization": "${" + s.auth_header_env + "}"} if s.auth_header_env else {}
        classify = RequestSpec("classify", "POST", path or "/", s.payload, 1, headers)
        return _load.spec_from(s, [f"{parts.scheme}://{parts.netloc}"], [classify], s.target_rps, label="ml-perf")

    def thresholds(self, ctx: StepContext) -> Gate:
        return _load.gate_from(ctx, ctx.typed(self.Settings), ctx.targets.ml_p95_ms)

    # -- the contract ----------------------------------------------------------------------------------------------
    def plan(self, ctx: StepContext) -> PlanResult:
        s, gate = ctx.typed(self.Settings), self.thresholds(ctx)
        result = PlanResult(
            data={"p95_ms": gate.p95_ms, "max_error_rate": gate.max_error_rate, "target_rps": s.target_rps}
        )
        try:
            spec = self.spec(ctx)
        except ConfigError as exc:
            result.unknown.append(f"endpoint to measure ({exc.what})")
            return result
        _load.load_adapter(ctx, spec.hosts).check_spec(spec)
        result.changes.append(
            Change(
                "run",
                self.target(ctx),
                f"{s.target_rps:,.6g} req/s x {s.duration_s:g} s (open model); gate p95 < {gate.p95_ms:g} ms, errors "
                f"< {gate.max_error_rate * 100:g} %, >= {gate.min_rate_fraction * 100:g} % of the rate",
            )
        )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        spec, gate = self.spec(ctx), self.thresholds(ctx)
        url = self.target(ctx)
        adapter = _load.load_adapter(ctx, spec.hosts)
        ctx.intent("inference-load", url=url, target_rps=spec.target_rps, duration_s=spec.duration_s)
        result = _load.run_load(ctx, adapter, spec)
        params = {"label": "ml-perf", "url": url, "target_rps": spec.target_rps, "duration_s": spec.duration_s}
        fix = (
            "add workers when the generator saturated; otherwise scale the classifier (TorchServe replicas/"
            f"workers) or fix the slow path, then bpmigrate apply --step ml-perf --env {ctx.env_name}"
        )
        out = _load.judge(ctx, result, gate, params, failed="inference latency gate missed: ", fix=fix)
        out.update(url=url, p95_ms=result.p95_ms, error_rate=result.error_rate)  # read by perf-review
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        s, gate = ctx.typed(self.Settings), self.thresholds(ctx)
        recorded = ctx.upstream.get(self.id, {})
        checks = [
            Check(
                "recorded p95 under the gate",
                bool(recorded.get("passed")) and float(recorded.get("p95_ms", 1e9)) < gate.p95_ms,
                recorded.get("p95_ms"),
                f"< {gate.p95_ms:g} ms",
            )
        ]
        if s.verify_requests > 0:
            from migrate.adapters.load import resolve_headers

            url = self.target(ctx)
            http = ctx.adapters.http()
            http.allow(url)
            fresh = http.probe(
                url,
                requests=s.verify_requests,
                concurrency=min(4, s.verify_requests),
                timeout=s.timeout_s,
                method="POST",
                json_body=s.payload,
                headers=resolve_headers(self.spec(ctx).requests[0].headers),
            )
            checks.append(
                Check(
                    f"fresh probe ({s.verify_requests} requests) p95",
                    fresh.p95_ms < gate.p95_ms,
                    fresh.p95_ms,
                    f"< {gate.p95_ms:g} ms",
                )
            )
            checks.append(Check("fresh probe errors", fresh.errors == 0, fresh.errors, "0"))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("ml-perf only measures: nothing to roll back")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return _load.one_line(outputs)
