"""The Locust load adapter and the load gates (load-test, ml-perf), against real local HTTP servers the tests start.

Locust runs in its own processes (a master and workers); each run here lasts a few seconds of load. The gate must
fail when the achieved rate falls short, a stall must raise p99 (latency from the intended send time), and the
results must be recorded (target vs achieved, p50/p95/p99, error rate, reports)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.load import (
    Gate,
    LoadAdapter,
    LoadResult,
    LoadSpec,
    RequestSpec,
    auto_workers,
    check_gate,
    requests_from_settings,
)
from migrate.adapters.loadhist import hist_add, hist_merge, hist_percentile
from migrate.config import EnvConfig
from migrate.errors import AdapterError, ConfigError, StepFailed
from migrate.testing import make_context
from phases.p3_app.load_test import LoadTest
from tests.test_http_adapter import ControlledServer

ROOT = Path(__file__).resolve().parent.parent


def sandbox() -> EnvConfig:
    return EnvConfig(name="sandbox", kind="sandbox", domain="betterprompts.test")


def result(**kw: Any) -> LoadResult:
    base: dict[str, Any] = {
        "target_rps": 100.0,
        "achieved_rps": 100.0,
        "requests": 1000,
        "failures": 0,
        "error_rate": 0.0,
        "p50_ms": 5.0,
        "p95_ms": 10.0,
        "p99_ms": 20.0,
        "max_ms": 30.0,
        "schedule_lag_p99_ms": 1.0,
        "generator_saturated": False,
        "report_html": None,
        "stats_json": None,
        "issued": 1000,
        "scheduled": 1000,
    }
    return LoadResult(**{**base, **kw})


# -- pure parts ------------------------------------------------------------------------------------------------------
def test_histogram_percentiles_are_nearest_rank_within_half_a_percent() -> None:
    hist: dict[str, int] = {}
    for i in range(1, 1001):
        hist_add(hist, float(i))
    assert hist_percentile(hist, 50) == 500.0
    assert hist_percentile(hist, 95) == 950.0
    assert hist_percentile(hist, 99) == 990.0
    other: dict[str, int] = {}
    hist_add(other, 123456.0)
    hist_merge(hist, other)
    assert hist_percentile(hist, 100) == 123000.0  # 3 significant digits
    assert hist_percentile({}, 95) == 0.0


def test_gate_thresholds_are_the_plans_and_name_the_cause() -> None:
    gate = Gate(p95_ms=200.0, max_error_rate=0.001)
    assert check_gate(result(), gate) == []
    assert check_gate(result(p95_ms=200.0), gate) == ["p95 200.0 ms >= 200 ms"]
    assert check_gate(result(error_rate=0.001, failures=1), gate) == ["error rate 0.100 % >= 0.1 %"]
    assert check_gate(result(achieved_rps=95.0), gate) == []
    assert check_gate(result(achieved_rps=94.9), gate) == ["achieved 94.9 req/s < 95 % of the 100 req/s target"]
    saturated = check_gate(result(achieved_rps=50.0, generator_saturated=True, issued=500), gate)
    assert saturated[0].startswith("load generator saturated") and "not the service" in saturated[0]
    assert check_gate(result(requests=0), gate) == ["no request completed"]


def test_workers_are_sized_from_the_measured_rate_per_core() -> None:
    from migrate.adapters.load import RPS_PER_WORKER_CORE

    assert auto_workers(50) == 1
    need = auto_workers(10_000)
    assert need * RPS_PER_WORKER_CORE >= 10_000 * 1.25 > (need - 1) * RPS_PER_WORKER_CORE
    assert auto_workers(10_000, cores=2) == 2


def test_request_mix_resolves_the_auth_header_without_writing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BP_TEST_AUTH", "Bearer s3cr3t-token-value")
    reqs = requests_from_settings(
        [{"name": "enhance", "method": "post", "path": "/api/v1/enhance", "json": {"text": "x"}, "weight": 3}],
        auth_header_env="BP_TEST_AUTH",
    )
    assert reqs[0].method == "POST" and reqs[0].headers == {"Authorization": "${BP_TEST_AUTH}"}
    secret_env, wire = LoadAdapter._wire_requests(LoadSpec(["http://127.0.0.1:1"], reqs, 1, 1))
    assert list(secret_env.values()) == ["Bearer s3cr3t-token-value"]
    assert "s3cr3t" not in json.dumps(wire) and wire[0]["secret_headers"] == {"Authorization": "BPM_LOAD_H0"}
    monkeypatch.delenv("BP_TEST_AUTH")
    with pytest.raises(ConfigError, match="BP_TEST_AUTH"):
        LoadAdapter._wire_requests(LoadSpec(["http://127.0.0.1:1"], reqs, 1, 1))


def test_the_adapter_refuses_unconfigured_targets_and_bad_specs() -> None:
    from migrate.adapters.load import from_config

    adapter = from_config(sandbox())
    with pytest.raises(AdapterError, match="refusing"):
        adapter.check_spec(LoadSpec(["http://10.1.2.3"], [RequestSpec("h")], 10, 1))
    with pytest.raises(ConfigError, match="target_rps=0"):
        adapter.check_spec(LoadSpec(["http://127.0.0.1:1"], [RequestSpec("h")], 0, 1))


def test_bpmigrate_never_imports_locust() -> None:
    import migrate.adapters.load  # noqa: F401
    import phases.p3_app.load_test
    import phases.p4_ml.ml_perf  # noqa: F401

    assert "locust" not in sys.modules and "gevent" not in sys.modules


def test_rate_and_thresholds_come_from_the_plans_targets(tmp_path: Path) -> None:
    from migrate import config

    s = LoadTest.Settings.model_validate({})
    assert (s.target_rps, s.p95_ms, s.max_error_rate, s.min_rate_fraction) == (None, None, None, 0.95)
    assert {r["path"] for r in s.requests} >= {"/api/v1/enhance", "/api/v1/classify"}
    cfg = config.load(ROOT / "migrate.toml")
    seen = {}
    for env_name in ("production", "sandbox"):
        settings = {**cfg.step_settings(env_name, "load-test"), "hosts": ["http://127.0.0.1:1"]}
        ctx = make_context(tmp_path / env_name, sandbox(), "load-test", settings=settings)
        ctx.targets = cfg.targets_for(env_name)
        spec, gate = LoadTest().spec(ctx), LoadTest().thresholds(ctx)
        seen[env_name] = spec.target_rps
        assert (gate.p95_ms, gate.max_error_rate, gate.min_rate_fraction) == (200.0, 0.001, 0.95)
    assert seen["production"] == 10_000 and seen["sandbox"] <= 100
    assert cfg.step_settings("production", "load-test")["runner"] == "kubernetes"


def test_kubernetes_worker_job_renders_from_the_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BP_TEST_AUTH", "Bearer abcdefgh")
    from migrate.adapters.load import LoadRun

    spec = LoadSpec(
        ["http://127.0.0.1:1"], requests_from_settings([{}], auth_header_env="BP_TEST_AUTH"), 10_000, 60, workers=9
    )
    adapter = LoadAdapter()
    paths = adapter._paths(spec, tmp_path)
    secret_env, wire = adapter._wire_requests(spec)
    paths["spec"].write_text(json.dumps({"requests": wire}))
    run = LoadRun(adapter, spec, paths, None, [], 0.0)
    run.workers_expected, run.port, run.secret_env = 9, 5557, secret_env
    docs = adapter.worker_job_docs(
        run,
        template=ROOT / "templates/k8s/load/locust-workers.yaml",
        namespace="betterprompts",
        image="locustio/locust:2.47.0",
        master_host="10.0.1.23",
    )
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "Secret", "Job"}
    job = kinds["Job"]
    assert job["spec"]["parallelism"] == 9 == job["spec"]["completions"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--master-host") + 1] == "10.0.1.23" and "--worker" in args
    assert {"locustfile_bpm.py", "loadhist.py", "spec.json"} == set(kinds["ConfigMap"]["data"])
    assert "abcdefgh" not in json.dumps(kinds["ConfigMap"]) and "abcdefgh" in json.dumps(kinds["Secret"])


# -- real Locust runs ------------------------------------------------------------------------------------------------
def test_load_test_gate_passes_and_records_the_results(tmp_path: Path) -> None:
    step = LoadTest()
    with ControlledServer() as srv:
        settings = {"hosts": [srv.url], "target_rps": 40, "duration_s": 3, "workers": 1, "verify_requests": 4}
        settings["p95_ms"] = 5000  # a busy 2-core machine: this test is about the pass path and what is recorded
        ctx = make_context(tmp_path, sandbox(), step.id, settings=settings)
        assert step.skip_reason(ctx) is None
        plan = step.plan(ctx)
        assert plan.data["params"]["target_rps"] == 40 and srv.count == 0
        out = step.apply(ctx)
        stats = out["stats"]
        assert out["passed"] is True and stats["target_rps"] == 40
        assert stats["achieved_rps"] >= 38 and stats["requests"] == srv.count == 120
        assert stats["failures"] == 0 and stats["error_rate"] == 0.0
        assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] <= stats["max_ms"]
        assert not stats["generator_saturated"] and stats["issued"] == stats["scheduled"] == 120
        # the default mix: enhance/classify POSTs with JSON bodies, and /health
        assert set(stats["per_request"]) == {"enhance", "classify", "health"}
        assert {"/api/v1/enhance", "/api/v1/classify", "/health"} == set(srv.paths)
        kinds = {kind for kind, *_ in ctx.recorded_artifacts}
        assert {"load-summary", "locust-stats", "locust-report", "load-report"} <= kinds
        assert Path(out["report_html"]).read_text().lstrip().lower().startswith("<!doctype html")
        report = json.loads((ctx.artifacts_dir() / "load-test-report.json").read_text())
        assert report["failures"] == [] and report["at"] > 0
        assert ctx.recorded_metrics["achieved_rps"] == stats["achieved_rps"]
        assert any("gate" in line and "PASSED" in line for line in ctx.recorded_logs)
        assert step.summary(out).startswith("40 of 40 req/s · p95 ")
        after = make_context(
            tmp_path, sandbox(), step.id, settings=settings, upstream={"app-smoke": {}, "load-test": out}
        )
        assert all(c.ok for c in step.verify(after))


def test_load_test_gate_fails_when_the_rate_falls_short(tmp_path: Path) -> None:
    """A target far above what one worker makes: the run says the generator saturated and the rate fell short."""
    step = LoadTest()
    with ControlledServer() as srv:
        srv.delay_s = 0.005
        settings = {"hosts": [srv.url], "target_rps": 30_000, "duration_s": 2, "workers": 1, "timeout_s": 1}
        settings["p95_ms"] = 60_000
        settings["max_error_rate"] = 1.0
        ctx = make_context(tmp_path, sandbox(), step.id, settings=settings)
        with pytest.raises(StepFailed, match="achieved") as err:
            step.apply(ctx)
        assert "load generator saturated" in err.value.what
        report = json.loads((ctx.artifacts_dir() / "load-test-report.json").read_text())
        assert report["stats"]["achieved_rps"] < 0.95 * 30_000 and report["stats"]["generator_saturated"]
        assert report["failures"] and any("FAILED" in line for line in ctx.recorded_logs)


def test_a_stall_raises_p99_in_the_corrected_measurement(tmp_path: Path) -> None:
    """The server stalls 1 s every 2.5 s: requests due during a stall wait for it, and their latency (from the
    intended send time) shows it, while the generator itself stays on schedule."""
    with ControlledServer() as srv:
        srv.stall_every_s, srv.stall_s = 2.5, 1.0
        spec = LoadSpec([srv.url], [RequestSpec("health")], target_rps=60, duration_s=5, workers=1, timeout_s=3)
        res = LoadAdapter().run(spec, tmp_path)
    assert res.requests == 300 and res.failures == 0
    assert res.p99_ms >= 700  # requests due early in a stall wait nearly all of it
    assert res.p50_ms < 500  # most requests are not in a stall
    assert not res.generator_saturated and res.schedule_lag_p99_ms < 100
    assert check_gate(res, Gate(p95_ms=200, max_error_rate=0.001))  # the gate sees the stall


def test_start_and_stop_early_returns_what_was_measured(tmp_path: Path) -> None:
    """The cutover's background load: start(), then stop() before the end."""
    import time

    with ControlledServer() as srv:
        spec = LoadSpec([srv.url, srv.url], [RequestSpec("health")], target_rps=50, duration_s=60, workers=1)
        run = LoadAdapter().start(spec, tmp_path)
        deadline = time.monotonic() + 30
        while srv.count < 60 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert run.running()
        res = run.stop()
    assert not run.running() and res.complete is False
    assert res.requests >= 50 and res.failures == 0
    assert 40 <= res.achieved_rps <= 60  # the rate over the time it ran, not over the planned 60 s
    assert res.report_html and Path(res.report_html).exists()


def test_kubernetes_runner_runs_workers_as_a_job(tmp_path: Path, kube_api: Any) -> None:
    """runner = "kubernetes": the master here, the workers as the Job. The double has no Job controller, so the test
    plays it: when the Job appears it starts its pod's command as a local process, from the ConfigMap's files."""
    import os
    import socket
    import subprocess
    import threading
    import time

    pods: list[subprocess.Popen[bytes]] = []

    def job_controller() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not pods:
            jobs = kube_api.objects("Job")
            if jobs:
                files = tmp_path / "pod"
                files.mkdir()
                for cm in kube_api.objects("ConfigMap"):
                    for name, text in cm["data"].items():
                        (files / name).write_text(text)
                container = jobs[0]["spec"]["template"]["spec"]["containers"][0]
                args = [str(a) for a in container["args"]]
                args[args.index("-f") + 1] = str(files / "locustfile_bpm.py")
                env = {**os.environ, "BPM_LOAD_SPEC": str(files / "spec.json"), "PYTHONPATH": str(files)}
                locust = str(Path(sys.executable).with_name("locust"))
                pods.append(subprocess.Popen([locust, *args], env=env, start_new_session=True))
            time.sleep(0.1)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = EnvConfig(
        name="sandbox", kind="sandbox", kube={"kubeconfig": str(kube_api.kubeconfig_path), "namespace": "bp"}
    )
    step = LoadTest()
    with ControlledServer() as srv:
        settings = {
            "hosts": [srv.url],
            "target_rps": 20,
            "duration_s": 2,
            "workers": 1,
            "p95_ms": 5000,
            "runner": "kubernetes",
            "master_host": "127.0.0.1",
            "master_port": port,
        }
        ctx = make_context(tmp_path, env, step.id, settings=settings)
        assert not step.plan(ctx).blocking
        controller = threading.Thread(target=job_controller, daemon=True)
        controller.start()
        try:
            out = step.apply(ctx)
        finally:
            for pod in pods:
                pod.kill()
                pod.wait()
    assert out["passed"] is True and out["stats"]["requests"] == srv.count == 40 and out["stats"]["workers"] == 1
    applied = [a for a, d in ctx.recorded_intents if a == "locust-workers-job"]
    assert applied and kube_api.objects("Job") == [] and kube_api.objects("ConfigMap") == []  # cleaned up
    no_host = make_context(tmp_path / "b", env, step.id, settings={**settings, "master_host": ""})
    assert step.plan(no_host).blocking


def test_a_misspelled_request_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown key.*body"):
        requests_from_settings([{"path": "/api/v1/enhance", "body": {"text": "x"}}])


def test_load_test_skips_without_a_target_and_takes_app_smokes_endpoint(tmp_path: Path) -> None:
    step = LoadTest()
    ctx = make_context(tmp_path, sandbox(), step.id)
    reason = step.skip_reason(ctx)
    assert reason and "configured" in reason and "migrate.toml" in reason
    up = {"app-smoke": {"endpoints": {"api-gateway": "http://127.0.0.1:8080/"}}}
    ctx = make_context(tmp_path, sandbox(), step.id, upstream=up)
    assert step.skip_reason(ctx) is None and step.hosts(ctx) == ["http://127.0.0.1:8080"]
