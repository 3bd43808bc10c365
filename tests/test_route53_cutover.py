"""dns-cutover against a moto server (Route53 weighted records, INSYNC polling) and local HTTP servers whose health
the test flips mid-cutover: the automatic revert, the recorded evidence, and the resume from the reached stage."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.aws_route53 import RecordSet, Route53Adapter
from migrate.config import EnvConfig
from migrate.errors import FenceRefused, StepFailed
from migrate.step import StepContext
from migrate.testing import RecordingContext, make_context
from phases.p5_cutover._common import Clock
from phases.p5_cutover.dns_cutover import DnsCutover

DOMAIN = "betterprompts.test"
RECORD = f"api.{DOMAIN}"


class HealthServer:
    """A stdlib HTTP server on 127.0.0.1 answering /health with 200, or 503 once the test flips it."""

    def __init__(self) -> None:
        self.healthy = True
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                status = 200 if outer.healthy else 503
                body = b'{"status":"ok"}' if outer.healthy else b'{"status":"down"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/health"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def health_server() -> Iterator[HealthServer]:
    server = HealthServer()
    yield server
    server.stop()


class FakeClock(Clock):
    """Time that advances only when the step sleeps; each sleep is recorded and may trigger a test hook."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], None] | None = None

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        if self.on_sleep is not None:
            self.on_sleep()


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(DnsCutover, "clock", fake)
    return fake


def sandbox_env(endpoint_url: str) -> EnvConfig:
    from migrate.config import AwsSettings

    return EnvConfig(name="sandbox", kind="sandbox", domain=DOMAIN, aws=AwsSettings(endpoint_url=endpoint_url))


def settings(probe_url: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "new_target": "k8s-alb-123.us-east-1.elb.amazonaws.com",
        "stages": [10, 50, 100],
        "low_ttl": 30,
        "soak_s": 20,
        "probe_interval_s": 20,
        "direct_urls": [probe_url],
        "record_urls": [probe_url],
        "sample_with": "http",
        "min_sample": 6,
        "probe_concurrency": 2,
        "probe_timeout_s": 2,
        "max_error_rate": 0.0,
        "max_p95_ms": 2000,
        "insync_poll_s": 0.01,
        "bake_time_s": 3600,
    }
    base.update(over)
    return base


def r53(env: EnvConfig) -> Route53Adapter:
    from migrate.adapters.aws_route53 import from_config

    return from_config(env)


def seed_zone(env: EnvConfig, *, ttl: int = 300) -> str:
    """The world before the cutover: a hosted zone and a simple CNAME api.<domain> -> the Compose host."""
    adapter = r53(env)
    zone_id = adapter.create_zone(DOMAIN, caller_reference="test-seed")
    adapter.change(zone_id, upserts=[RecordSet(RECORD, "CNAME", ttl, ("compose-host.betterprompts.test",))])
    return zone_id


def ctx_for(
    tmp_path: Path, env: EnvConfig, cfg: dict[str, Any], ctx: RecordingContext | None = None
) -> RecordingContext:
    new = make_context(tmp_path, env, "dns-cutover", settings=cfg)
    if ctx is not None:  # same durable checkpoints, as in a resumed run
        new.checkpoints = ctx.checkpoints
    return new


def weights(env: EnvConfig, zone_id: str) -> dict[str, int]:
    return r53(env).weights(zone_id, RECORD, "CNAME")


# -- adapter --------------------------------------------------------------------------------------------------------
def test_adapter_weighted_records_and_insync(moto_reset: Any) -> None:
    env = sandbox_env(moto_reset.endpoint_url)
    adapter = r53(env)
    zone_id = adapter.create_zone(DOMAIN, caller_reference="t1")
    assert adapter.create_zone(DOMAIN, caller_reference="t1") == zone_id  # idempotent
    assert adapter.find_zone(RECORD) == zone_id
    simple = RecordSet(RECORD, "CNAME", 300, ("old.example.net",))
    adapter.change(zone_id, upserts=[simple])
    [rec] = adapter.record_sets(zone_id, RECORD, "CNAME")
    assert rec.ttl == 300 and not rec.is_weighted
    change_id = adapter.change(
        zone_id,
        deletes=[rec],
        upserts=[
            RecordSet(RECORD, "CNAME", 60, ("old.example.net",), "old-stack", 90),
            RecordSet(RECORD, "CNAME", 60, ("alb.example.net",), "new-stack", 10),
        ],
    )
    result = adapter.wait_insync(change_id, timeout_s=5, poll_s=0.01)
    assert result.status == "INSYNC" and result.polls >= 1
    assert adapter.weights(zone_id, RECORD, "CNAME") == {"old-stack": 90, "new-stack": 10}
    assert {r.ttl for r in adapter.record_sets(zone_id, RECORD, "CNAME")} == {60}


def test_wait_insync_is_bounded_by_a_deadline(moto_reset: Any) -> None:
    from migrate.adapters.aws import AwsAdapter
    from migrate.errors import TransientError

    class Pending(Route53Adapter):
        def change_status(self, change_id: str) -> str:
            return "PENDING"

    slept: list[float] = []
    now = [0.0]

    def fake_sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    adapter = Pending(AwsAdapter("us-east-1", moto_reset.endpoint_url), clock=lambda: now[0], sleep=fake_sleep)
    with pytest.raises(TransientError, match="still PENDING"):
        adapter.wait_insync("C123", timeout_s=3, poll_s=1)
    assert 2 <= len(slept) <= 4


# -- the cutover ----------------------------------------------------------------------------------------------------
def test_full_cutover_lowers_ttl_waits_old_ttl_and_reaches_100(
    moto_reset: Any, tmp_path: Path, health_server: HealthServer, clock: FakeClock
) -> None:
    env = sandbox_env(moto_reset.endpoint_url)
    zone_id = seed_zone(env, ttl=300)
    step = DnsCutover()
    ctx = ctx_for(tmp_path, env, settings(health_server.url))
    plan = step.plan(ctx)
    assert not plan.blocking and any("TTL" in c.target for c in plan.changes)
    out = step.apply(ctx)
    assert weights(env, zone_id) == {"old-stack": 0, "new-stack": 100}
    assert {r.ttl for r in r53(env).record_sets(zone_id, RECORD, "CNAME")} == {30}
    assert out["old_ttl"] == 300 and out["old_target"] == "compose-host.betterprompts.test"
    assert 300 in clock.sleeps  # waited out the OLD TTL after lowering it
    assert set(out["stages"]) == {"10", "50", "100"}
    assert all(s["passed"] and s["probes"]["requests"] > 0 for s in out["stages"].values())
    assert out["one_way_after"] is not None
    intents = [a for a, _ in ctx.recorded_intents]
    assert intents[:2] == ["route53-health-check", "route53-lower-ttl"] and intents.count("route53-shift-weight") == 3
    [new] = [r for r in r53(env).record_sets(zone_id, RECORD, "CNAME") if r.set_id == "new-stack"]
    assert new.health_check_id == ctx.checkpoints.get("health-check")["id"]  # Route53 health check attached
    checks = step.verify(ctx)
    assert all(c.ok for c in checks), checks
    # re-running a completed cutover changes nothing and does not wait again
    before = len(clock.sleeps)
    step.apply(ctx_for(tmp_path, env, settings(health_server.url), ctx))
    assert len(clock.sleeps) == before


def test_failing_probe_reverts_records_evidence_and_resume_continues(
    moto_reset: Any, tmp_path: Path, health_server: HealthServer, clock: FakeClock
) -> None:
    env = sandbox_env(moto_reset.endpoint_url)
    zone_id = seed_zone(env, ttl=120)
    step = DnsCutover()
    ctx = ctx_for(tmp_path, env, settings(health_server.url))
    seen_weights: list[dict[str, int]] = []

    def flip_during_stage_50() -> None:
        current = weights(env, zone_id)
        seen_weights.append(current)
        if current.get("new-stack") == 50:
            health_server.healthy = False  # the new stack breaks while 50 % of traffic is on it

    clock.on_sleep = flip_during_stage_50
    with pytest.raises(StepFailed) as info:
        step.apply(ctx)
    err = info.value
    assert "stage 50%" in err.what and "REVERTED" in err.what
    assert "error rate" in err.why and "resumes at stage 50%" in err.next_cmd
    # the automatic revert: all traffic back on the old stack, the old record untouched
    assert weights(env, zone_id) == {"old-stack": 100, "new-stack": 0}
    assert "route53-revert" in [a for a, _ in ctx.recorded_intents]
    # the evidence: per-stage probe stats in the checkpoint and in an artifact file
    revert = ctx.checkpoints.get("revert")
    assert revert is not None and revert["failed_stage"] == 50
    assert revert["stages"]["10"]["passed"] is True
    bad = revert["stages"]["50"]["probes"]
    assert bad["ok"] is False and bad["worst_error_rate"] == 1.0
    [(kind, path, _sha, size)] = ctx.recorded_artifacts
    assert kind == "cutover-evidence" and json.loads(path.read_text())["failed_stage"] == 50 and size > 0
    assert ctx.checkpoints.get("stage-10")["passed"] is True
    assert ctx.checkpoints.get("stage-50")["passed"] is False

    # the operator fixes the new stack and re-runs: it continues at 50 %, without the TTL wait or stage 10 again
    health_server.healthy = True
    clock.on_sleep = None
    sleeps_before = len(clock.sleeps)
    ctx2 = ctx_for(tmp_path, env, settings(health_server.url), ctx)
    plan = step.plan(ctx2)
    assert any("stage 10%" in s for s in plan.in_place)
    out = step.apply(ctx2)
    shifts = [d["weights"]["new-stack"] for a, d in ctx2.recorded_intents if a == "route53-shift-weight"]
    assert shifts == [50, 100]
    assert "route53-lower-ttl" not in [a for a, _ in ctx2.recorded_intents]
    assert 120 not in clock.sleeps[sleeps_before:]
    assert weights(env, zone_id) == {"old-stack": 0, "new-stack": 100}
    assert out["stages"]["10"]["passed"] and out["stages"]["100"]["passed"]


def test_interrupted_during_ttl_wait_resumes_with_only_the_rest(
    moto_reset: Any, tmp_path: Path, health_server: HealthServer, clock: FakeClock
) -> None:
    env = sandbox_env(moto_reset.endpoint_url)
    seed_zone(env, ttl=600)
    step = DnsCutover()
    ctx = ctx_for(tmp_path, env, settings(health_server.url))

    class Killed(BaseException):
        pass

    def die_in_ttl_wait() -> None:
        raise Killed  # the process dies while waiting out the old TTL

    clock.on_sleep = die_in_ttl_wait
    with pytest.raises(Killed):
        step.apply(ctx)
    cp = ctx.checkpoints.get("ttl")
    assert cp is not None and cp["old_ttl"] == 600 and cp["lowered_at"] is not None and not cp["waited"]
    clock.on_sleep = None
    clock.t = float(cp["lowered_at"]) + 500  # 500 of the 600 s have passed when the operator resumes
    clock.sleeps.clear()
    ctx2 = ctx_for(tmp_path, env, settings(health_server.url), ctx)
    step.apply(ctx2)
    assert clock.sleeps[0] == pytest.approx(100)  # only the rest of the old TTL
    assert ctx2.checkpoints.get("ttl")["old_ttl"] == 600  # not the already-lowered TTL


def test_rollback_before_bake_returns_traffic_and_refuses_after_fence(
    moto_reset: Any, tmp_path: Path, health_server: HealthServer, clock: FakeClock
) -> None:
    env = sandbox_env(moto_reset.endpoint_url)
    zone_id = seed_zone(env, ttl=60)
    step = DnsCutover()
    cfg = settings(health_server.url, bake_time_s=3600)
    ctx = ctx_for(tmp_path, env, cfg)
    out = step.apply(ctx)
    assert weights(env, zone_id)["new-stack"] == 100
    # inside the bake time: rollback sends everything back to the old stack (which kept running)
    clock.t += 600
    step.rollback(ctx)
    assert weights(env, zone_id) == {"old-stack": 100, "new-stack": 0}
    step.rollback(ctx)  # idempotent
    assert ctx.checkpoints.get("stage-100") is None and ctx.checkpoints.get("ttl") is not None

    # cut over again, then let the bake time pass: the fence holds
    out = step.apply(ctx_for(tmp_path, env, cfg, ctx))
    assert out["one_way_after"]
    clock.t += 3601
    with pytest.raises(FenceRefused) as info:
        step.rollback(ctx)
    assert "--force-past-fence" in info.value.next_cmd
    assert weights(env, zone_id)["new-stack"] == 100
    forced: StepContext = ctx_for(tmp_path, env, {**cfg, "force_past_fence": True}, ctx)
    step.rollback(forced)
    assert weights(env, zone_id) == {"old-stack": 100, "new-stack": 0}


def test_plan_blocks_without_target_and_with_bad_stages(moto_reset: Any, tmp_path: Path, clock: FakeClock) -> None:
    env = sandbox_env(moto_reset.endpoint_url)
    seed_zone(env)
    step = DnsCutover()
    plan = step.plan(
        make_context(
            tmp_path, env, "dns-cutover", settings={"stages": [50, 10], "probe_urls": ["http://127.0.0.1:9/h"]}
        )
    )
    messages = " | ".join(f.message for f in plan.blocking)
    assert "new target" in messages and "stages" in messages
    plan = step.plan(make_context(tmp_path, env, "dns-cutover", settings=settings("http://203.0.113.9/health")))
    assert any("sample URL not allowed" in f.message for f in plan.blocking)


# -- through the real engine and CLI: the ledger shows the revert and its evidence -------------------------------------
class WeightAwareHealthServer(HealthServer):
    """The new stack, modelled as breaking once it carries ``fail_at`` % of the traffic (read from Route53)."""

    def __init__(self, env: EnvConfig) -> None:
        super().__init__()
        self.env = env
        self.zone_id = ""
        self.fail_at: int | None = None
        outer = self
        handler = self.server.RequestHandlerClass
        original = handler.do_GET  # type: ignore[attr-defined]

        def do_get(inner: BaseHTTPRequestHandler) -> None:
            if outer.fail_at is not None and outer.zone_id:
                current = r53(outer.env).weights(outer.zone_id, RECORD, "CNAME").get("new-stack")
                outer.healthy = current != outer.fail_at
            original(inner)

        handler.do_GET = do_get  # type: ignore[attr-defined]


def _project(tmp_path: Path, endpoint: str, probe_url: str) -> Path:
    project = tmp_path / "project"
    (project / "cutphases").mkdir(parents=True)
    (project / "cutphases" / "p5_cutover.py").write_text(
        "import phases.p5_cutover.dns_cutover as base\n\n\n"
        "class DnsCutover(base.DnsCutover):\n"
        "    depends_on = ()  # the rest of the plan is exercised elsewhere\n"
    )
    (project / "migrate.toml").write_text(
        f"""[project]
name = "cutover-test"
phases_dir = "cutphases"
state_dir = "state"
default_env = "rehearsal"

[environments.rehearsal]
kind = "sandbox"
domain = "{DOMAIN}"
aws = {{ region = "us-east-1", endpoint_url = "{endpoint}" }}

[steps.dns-cutover]
new_target = "k8s-alb-123.us-east-1.elb.amazonaws.com"
stages = [10, 50, 100]
low_ttl = 30
soak_s = 0.3
probe_interval_s = 0.1
direct_urls = ["{probe_url}"]
record_urls = ["{probe_url}"]
sample_with = "http"
min_sample = 4
probe_concurrency = 2
probe_timeout_s = 2
max_error_rate = 0.0
max_p95_ms = 2000
insync_poll_s = 0.05
bake_time_s = 3600
"""
    )
    return project


def test_cli_cutover_revert_is_ledgered_and_resume_continues(moto_reset: Any, tmp_path: Path) -> None:
    import sqlite3

    from tests.engine_helpers import run_cli

    env = sandbox_env(moto_reset.endpoint_url)
    zone_id = seed_zone(env, ttl=1)
    server = WeightAwareHealthServer(env)
    try:
        server.zone_id, server.fail_at = zone_id, 50
        project = _project(tmp_path, moto_reset.endpoint_url, server.url)
        first = run_cli(project, "apply", "--step", "dns-cutover", "--yes", timeout=120)
        assert first.returncode == 1, first.stdout + first.stderr
        assert "REVERTED" in first.stdout + first.stderr
        assert weights(env, zone_id) == {"old-stack": 100, "new-stack": 0}
        db = sqlite3.connect(project / "state" / "rehearsal.db")
        state, reason = db.execute("SELECT state, reason FROM bpm_step_state WHERE step_id = 'dns-cutover'").fetchone()
        assert state == "apply_failed" and "stage 50%" in reason and "error rate" in reason
        revert = json.loads(
            db.execute("SELECT data FROM bpm_checkpoints WHERE step_id = 'dns-cutover' AND key = 'revert'").fetchone()[
                0
            ]
        )
        assert revert["failed_stage"] == 50 and revert["stages"]["50"]["probes"]["worst_error_rate"] == 1.0
        assert revert["stages"]["10"]["passed"] is True
        [(kind, path)] = db.execute("SELECT kind, path FROM bpm_artifacts WHERE step_id = 'dns-cutover'").fetchall()
        assert kind == "cutover-evidence" and json.loads(Path(path).read_text())["failed_stage"] == 50
        first_intents = [
            r[0] for r in db.execute("SELECT action FROM bpm_intents WHERE step_id = 'dns-cutover' ORDER BY id")
        ]
        assert first_intents == [
            "route53-health-check",
            "route53-lower-ttl",
            "route53-shift-weight",
            "route53-shift-weight",
            "route53-revert",
        ]
        db.close()

        server.fail_at = None
        server.healthy = True
        second = run_cli(project, "apply", "--step", "dns-cutover", "--yes", timeout=120)
        assert second.returncode == 0, second.stdout + second.stderr
        assert weights(env, zone_id) == {"old-stack": 0, "new-stack": 100}
        db = sqlite3.connect(project / "state" / "rehearsal.db")
        rows = db.execute("SELECT action, data FROM bpm_intents WHERE step_id = 'dns-cutover' ORDER BY id").fetchall()
        resumed = [
            json.loads(d)["weights"]["new-stack"] for a, d in rows[len(first_intents) :] if a == "route53-shift-weight"
        ]
        assert resumed == [50, 100]  # continued from the stage it reached; no TTL change again
        assert "route53-lower-ttl" not in [a for a, _ in rows[len(first_intents) :]]
        assert db.execute("SELECT state FROM bpm_step_state WHERE step_id = 'dns-cutover'").fetchone()[0] == "verified"
        db.close()

        # past the bake time the cutover is a one-way fence: rollback refuses (exit 3) and changes nothing
        toml = project / "migrate.toml"
        toml.write_text(toml.read_text().replace("bake_time_s = 3600", "bake_time_s = 0"))
        refused = run_cli(project, "rollback", "--step", "dns-cutover", "--yes", timeout=120)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "--force-past-fence" in refused.stdout + refused.stderr
        assert weights(env, zone_id) == {"old-stack": 0, "new-stack": 100}

        # inside the bake time: `rollback --phase cutover` sends everything back to the old stack
        toml.write_text(toml.read_text().replace("bake_time_s = 0", "bake_time_s = 3600"))
        back = run_cli(project, "rollback", "--phase", "cutover", "--yes", timeout=120)
        assert back.returncode == 0, back.stdout + back.stderr
        assert weights(env, zone_id) == {"old-stack": 100, "new-stack": 0}
    finally:
        server.stop()


def test_plan_blocks_when_the_new_stack_is_only_sampled_through_the_record(moto_reset: Any, tmp_path: Path) -> None:
    env = sandbox_env(moto_reset.endpoint_url)
    seed_zone(env)
    cfg = settings("http://127.0.0.1:9/health")
    del cfg["direct_urls"]
    plan = DnsCutover().plan(make_context(tmp_path, env, "dns-cutover", settings=cfg))
    assert any("through the record" in f.message for f in plan.blocking)


def test_a_stage_needs_the_minimum_sample(
    moto_reset: Any, tmp_path: Path, health_server: HealthServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 healthy probes are not evidence: a stage whose sample is smaller than min_sample reverts."""
    import phases._traffic as mod

    env = sandbox_env(moto_reset.endpoint_url)
    zone_id = seed_zone(env, ttl=1)
    real = mod.sample

    def short(ctx: Any, url: str, **kw: Any) -> dict[str, Any]:
        return real(ctx, url, **(kw | {"requests": 20}))  # the generator delivered only 20 requests

    monkeypatch.setattr(mod, "sample", short)
    with pytest.raises(StepFailed, match="stage 10%") as info:
        DnsCutover().apply(ctx_for(tmp_path, env, settings(health_server.url, min_sample=1000)))
    assert "< minimum 1000" in info.value.why
    assert weights(env, zone_id) == {"old-stack": 100, "new-stack": 0}


def test_a_firing_slo_alarm_reverts_the_stage(
    moto_reset: Any, tmp_path: Path, health_server: HealthServer, clock: FakeClock
) -> None:
    """Issue 19: the new stack answers well, but an SLO alarm of the observability step goes to ALARM during the
    50 % stage: the stage fails on that evidence and traffic returns to the old stack by itself."""
    from tests.servers_plugin import moto_client

    env = sandbox_env(moto_reset.endpoint_url)
    zone_id = seed_zone(env, ttl=60)
    prefix = "betterprompts-sandbox-"
    cw = moto_client(moto_reset.endpoint_url, "cloudwatch")
    cw.put_metric_alarm(
        AlarmName=f"{prefix}api-p95", Namespace="AWS/ApplicationELB", MetricName="TargetResponseTime",
        ExtendedStatistic="p95", Period=60, EvaluationPeriods=3, Threshold=0.2, ComparisonOperator="GreaterThanThreshold",
    )
    upstream = {"observability": {"alarm_prefix": prefix, "alarms": [f"{prefix}api-p95"]}}
    ctx = make_context(tmp_path, env, "dns-cutover", settings=settings(health_server.url), upstream=upstream)

    def alarm_during_stage_50() -> None:
        if weights(env, zone_id).get("new-stack") == 50:
            cw.set_alarm_state(AlarmName=f"{prefix}api-p95", StateValue="ALARM", StateReason="p95 640 ms > 200 ms")

    clock.on_sleep = alarm_during_stage_50
    with pytest.raises(StepFailed) as info:
        DnsCutover().apply(ctx)
    assert "stage 50%" in info.value.what and "REVERTED" in info.value.what
    assert f"{prefix}api-p95" in info.value.why
    assert weights(env, zone_id) == {"old-stack": 100, "new-stack": 0}
    assert health_server.healthy, "the service itself stayed healthy: the alarm alone decided"
