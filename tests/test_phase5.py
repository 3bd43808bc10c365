"""Phase 5 steps other than the DNS cutover: Kubernetes parts against the API-server test double (kube_api), AWS
Budgets against moto in server mode, probes against local HTTP servers, the DB rollback against real PostgreSQL."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from migrate.config import EnvConfig
from migrate.errors import StepFailed, VerifyFailed
from migrate.step import Check
from migrate.testing import RecordingContext, make_context
from phases.p5_cutover import _common as p5_cutover
from phases.p5_cutover.autoscale_tune import AutoscaleTune
from phases.p5_cutover.cost_controls import CostControls
from phases.p5_cutover.db_rollback_point import DbRollbackPoint
from phases.p5_cutover.post_cutover_watch import PostCutoverWatch
from phases.p5_cutover.pre_cutover_check import PreCutoverCheck
from phases.p5_cutover.security_hardening import PSA_LABEL, SecurityHardening
from tests.kube_double import KubeApiDouble
from tests.test_route53_cutover import FakeClock, HealthServer

ROOT = Path(__file__).resolve().parent.parent
NS = "betterprompts"


@pytest.fixture()
def kube_api(tmp_path: Path) -> Any:
    """A fresh Kubernetes API-server test double (tests/kube_double.py) per test."""
    with KubeApiDouble(tmp_path / "kube-double") as double:
        yield double


@pytest.fixture()
def health_server() -> Any:
    server = HealthServer()
    yield server
    server.stop()


def env_with(*, moto: Any = None, kube: Any = None, **extra: Any) -> EnvConfig:
    fields: dict[str, Any] = {"name": "sandbox", "kind": "sandbox", "domain": "betterprompts.test"}
    if moto is not None:
        fields["aws"] = {"endpoint_url": moto.endpoint_url}
    fields["kube"] = {
        "kubeconfig": str(kube.kubeconfig_path) if kube is not None else "/nonexistent/kubeconfig",
        "namespace": NS,
    }
    fields.update(extra)
    return EnvConfig(**fields)


def ctx(tmp_path: Path, env: EnvConfig, step_id: str, **kw: Any) -> RecordingContext:
    return make_context(tmp_path, env, step_id, **kw)


# -- cost-controls ---------------------------------------------------------------------------------------------------
def test_cost_controls_applies_manifests_and_budget_then_rolls_back(
    moto_reset: Any, kube_api: Any, tmp_path: Path
) -> None:
    env = env_with(moto=moto_reset, kube=kube_api)
    settings = {"monthly_target_usd": 4200, "alert_emails": ["sre@example.com"], "alert_threshold_pct": 90}
    step = CostControls()
    c = ctx(tmp_path, env, "cost-controls", settings=settings)
    plan = step.plan(c)
    targets = {ch.target for ch in plan.changes}
    assert "DaemonSet/kube-system/aws-node-termination-handler" in targets
    assert f"ResourceQuota/{NS}/betterprompts-quota" in targets and "Budget/betterprompts-sandbox-monthly" in targets
    out = step.apply(c)
    assert out["budget"] == "betterprompts-sandbox-monthly" and out["kube_skipped"] is None
    ds = kube_api.get_object("apps/v1", "DaemonSet", "aws-node-termination-handler", "kube-system")
    assert ds["spec"]["template"]["spec"]["nodeSelector"]["eks.amazonaws.com/capacityType"] == "SPOT"
    assert kube_api.get_object("batch/v1", "CronJob", "cost-monitor", NS) is not None
    assert all(ch.ok for ch in step.verify(c)), step.verify(c)
    again = step.plan(c)
    assert "Budget/betterprompts-sandbox-monthly" in again.in_place
    # a new target is an update of the budget, seen by plan and applied
    c2 = ctx(tmp_path, env, "cost-controls", settings={**settings, "monthly_target_usd": 5000})
    assert any(ch.action == "update" and ch.target.startswith("Budget/") for ch in step.plan(c2).changes)
    step.apply(c2)
    budget = c2.adapters.get("aws_cost").describe_budget("betterprompts-sandbox-monthly")
    assert budget.amount_usd == 5000 and budget.threshold_pct == 90
    step.rollback(c2)
    assert c2.adapters.get("aws_cost").describe_budget("betterprompts-sandbox-monthly") is None
    assert kube_api.get_object("apps/v1", "DaemonSet", "aws-node-termination-handler", "kube-system") is None
    step.rollback(c2)  # absent: a no-op


def test_cost_controls_without_cluster_still_sets_the_budget(moto_reset: Any, tmp_path: Path) -> None:
    env = env_with(moto=moto_reset)
    step = CostControls()
    c = ctx(tmp_path, env, "cost-controls", settings={"monthly_target_usd": 3000})
    plan = step.plan(c)
    assert plan.skip_reason is None and any("Kubernetes manifests not applied" in f.message for f in plan.findings)
    assert any("no subscriber" in f.message for f in plan.findings)
    out = step.apply(c)
    assert out["kube_skipped"] and out["monthly_target_usd"] == 3000
    assert c.adapters.get("aws_cost").describe_budget(out["budget"]).amount_usd == 3000
    assert all(ch.ok for ch in step.verify(c)), step.verify(c)
    assert c.adapters.get("aws_cost").upsert_budget(out["budget"], amount_usd=3000) == "unchanged"  # idempotent


# -- autoscale-tune --------------------------------------------------------------------------------------------------
def _hpa(name: str, cpu: int = 70, mx: int = 10) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {  # as step hpa applied it from templates/k8s/app/30-hpa.yaml
            "name": name,
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/name": name,
                "app.kubernetes.io/part-of": "betterprompts",
                "app.kubernetes.io/managed-by": "bpmigrate",
            },
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 2,
            "maxReplicas": mx,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}},
                }
            ],
        },
    }


def test_autoscale_tune_plans_diff_against_live_and_restores(kube_api: Any, tmp_path: Path) -> None:
    env = env_with(kube=kube_api)
    services = ["api-gateway", "frontend"]
    for name in services:
        kube_api.put_object(_hpa(name))
    settings = {"services": services, "hpa": {"api-gateway": {"max": 20, "cpu": 60}}}
    step = AutoscaleTune()
    c = ctx(tmp_path, env, "autoscale-tune", settings=settings)
    plan = step.plan(c)
    updates = {ch.target: ch.detail for ch in plan.changes if ch.action == "update"}
    detail = updates[f"HorizontalPodAutoscaler/{NS}/api-gateway"]
    assert "spec.maxReplicas: 10 -> 20" in detail and "averageUtilization: 70 -> 60" in detail
    assert f"HorizontalPodAutoscaler/{NS}/frontend" in plan.in_place
    assert {ch.target for ch in plan.changes if ch.action == "create"} == {
        f"VerticalPodAutoscaler/{NS}/api-gateway",
        f"VerticalPodAutoscaler/{NS}/frontend",
    }
    step.apply(c)
    live = kube_api.get_object("autoscaling/v2", "HorizontalPodAutoscaler", "api-gateway", NS)
    assert live["spec"]["maxReplicas"] == 20
    vpa = kube_api.get_object("autoscaling.k8s.io/v1", "VerticalPodAutoscaler", "frontend", NS)
    assert vpa["spec"]["updatePolicy"]["updateMode"] == "Off"
    assert all(ch.ok for ch in step.verify(c))
    step.rollback(c)
    live = kube_api.get_object("autoscaling/v2", "HorizontalPodAutoscaler", "api-gateway", NS)
    assert live["spec"]["maxReplicas"] == 10
    assert live["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert kube_api.get_object("autoscaling.k8s.io/v1", "VerticalPodAutoscaler", "frontend", NS) is None


def test_kube_steps_skip_without_a_cluster(tmp_path: Path) -> None:
    env = env_with()
    for step in (AutoscaleTune(), SecurityHardening()):
        c = ctx(tmp_path, env, step.id)
        reason = step.skip_reason(c)  # asked by the engine before plan (plan itself does not repeat it)
        assert reason and "no Kubernetes cluster" in reason


# -- security-hardening ----------------------------------------------------------------------------------------------
GOOD_APP = ROOT / "templates/k8s/app/21-api-gateway.yaml"


def _templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    shutil.copytree(ROOT / "templates/k8s/cutover", root / "k8s/cutover")
    (root / "k8s/app").mkdir(parents=True)
    shutil.copy(GOOD_APP, root / "k8s/app/21-api-gateway.yaml")
    return root


def test_security_hardening_applies_policies_labels_and_refuses_bad_manifests(kube_api: Any, tmp_path: Path) -> None:
    env = env_with(kube=kube_api)
    kube_api.put_object(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": "prompts"}}}
    )
    step = SecurityHardening()
    c = ctx(tmp_path, env, "security-hardening")
    c.templates_dir = _templates(tmp_path)
    plan = step.plan(c)
    assert not plan.blocking
    assert any(ch.target == f"Namespace/{NS}" and "restricted" in ch.detail for ch in plan.changes)
    out = step.apply(c)
    assert out["manifests_checked"] >= 10
    ns = kube_api.get_object("v1", "Namespace", NS)
    assert ns["metadata"]["labels"][PSA_LABEL] == "restricted" and ns["metadata"]["labels"]["team"] == "prompts"
    names = {o["metadata"]["name"] for o in kube_api.objects("NetworkPolicy")}
    assert {"default-deny-all", "allow-dns-egress", "allow-api-gateway", "allow-torchserve"} <= names
    # the environment's VPC CIDR (sandbox tfvars: 10.99.0.0/16), not one CIDR for every environment
    assert out["vpc_cidr"] == "10.99.0.0/16"
    [frontend] = [o for o in kube_api.objects("NetworkPolicy") if o["metadata"]["name"] == "allow-frontend"]
    assert "10.99.0.0/16" in json.dumps(frontend["spec"])
    # policies without enforcement are inert: verify says so until the VPC CNI enforces them
    [inert] = [ch for ch in step.verify(c) if not ch.ok]
    assert inert.name == "VPC CNI enforces network policies"
    kube_api.put_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "amazon-vpc-cni", "namespace": "kube-system"},
            "data": {"enable-network-policy-controller": "true"},
        }
    )
    assert all(ch.ok for ch in step.verify(c)), [ch for ch in step.verify(c) if not ch.ok]

    # a privileged container appears in some manifest: plan blocks, apply fails naming the file and the field
    bad = (c.templates_dir / "k8s/app/21-api-gateway.yaml").read_text().replace("privileged: false", "privileged: true")
    (c.templates_dir / "k8s/app/99-bad.yaml").write_text(bad)
    plan = step.plan(c)
    [block] = plan.blocking
    assert "Deployment/api-gateway" in block.message and "99-bad.yaml" in block.message
    assert "spec.template.spec.containers[0].securityContext.privileged" in block.message
    with pytest.raises(VerifyFailed) as info:
        step.apply(c)
    assert "99-bad.yaml" in info.value.why
    assert not all(ch.ok for ch in step.verify(c))

    (c.templates_dir / "k8s/app/99-bad.yaml").unlink()
    step.rollback(c)
    assert kube_api.objects("NetworkPolicy") == []
    labels = kube_api.get_object("v1", "Namespace", NS)["metadata"]["labels"]
    assert labels[PSA_LABEL] == "privileged" and labels["team"] == "prompts"


def test_security_hardening_probe_pod_must_be_blocked(kube_api: Any, tmp_path: Path) -> None:
    """verify's probe: a pod no allow rule selects runs `nc` to api-gateway:8080; exit 1 (blocked) passes. The
    double has no kubelet: a thread writes the container's exit code as the kubelet would."""
    import threading

    env = env_with(kube=kube_api)
    step = SecurityHardening()
    c = ctx(tmp_path, env, "security-hardening", settings={"probe": True, "probe_timeout_s": 20})
    c.templates_dir = _templates(tmp_path)

    def kubelet(exit_code: int) -> None:
        for _ in range(200):
            if kube_api.get_object("v1", "Pod", "bpmigrate-netpol-probe", NS) is not None:
                terminated = {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed"}}
                status = {"phase": "Failed", "containerStatuses": [{"name": "probe", "state": terminated}]}
                kube_api.set_status("v1", "Pod", NS, "bpmigrate-netpol-probe", status)
                return
            time.sleep(0.05)

    for exit_code, ok, seen in ((1, True, "blocked"), (0, False, "connected (not blocked)")):
        thread = threading.Thread(target=kubelet, args=(exit_code,), daemon=True)
        thread.start()
        [probe] = [ch for ch in step.verify(c) if ch.name.startswith("a pod no policy allows")]
        thread.join(5)
        assert (probe.ok, probe.observed) == (ok, seen)
        assert kube_api.get_object("v1", "Pod", "bpmigrate-netpol-probe", NS) is None  # cleaned up
    pod_spec = next(r.body for r in kube_api.apply_requests() if r.path.endswith("/pods/bpmigrate-netpol-probe"))
    assert "nc -z -w 3 api-gateway 8080" in json.dumps(pod_spec)


# -- pre-cutover-check -----------------------------------------------------------------------------------------------
class Reverifier:
    """Stands in for the engine's ctx.reverify: the data proof's verdict is controlled (and counted) by the test."""

    def __init__(self) -> None:
        self.green = True
        self.calls: list[str] = []

    def __call__(self, step_id: str) -> list[Check]:
        self.calls.append(step_id)
        return [Check("row counts equal", self.green, 100 if self.green else 99, 100)]


def test_pre_cutover_check_reruns_data_verification_and_gates(
    tmp_path: Path, health_server: HealthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(start=time.time())
    monkeypatch.setattr(PreCutoverCheck, "clock", clock)
    env = env_with()
    recent = {"passed": True, "finished_at": p5_cutover.iso(clock.now() - 3600)}
    upstream = {"data-validate": {"verified": True}, "load-test": recent}  # no continuous sync: stop-the-world
    settings = {"health_urls": [health_server.url], "smoke_urls": [{"url": health_server.url, "status": 200}]}
    step = PreCutoverCheck()
    c = ctx(tmp_path, env, "pre-cutover-check", settings=settings, upstream=upstream)
    proof = Reverifier()
    c._reverifier = proof
    out = step.apply(c)
    assert out["passed"] and proof.calls == ["data-validate"]
    assert {ch["name"] for ch in out["checks"]} >= {"data-validate: verify re-run", "load-test gate recorded"}

    # the ledger still says the data steps verified, but the data drifted: the RE-RUN catches it
    proof.green = False
    with pytest.raises(VerifyFailed) as info:
        step.apply(c)
    assert "data-validate" in info.value.why and "row counts equal" in info.value.why
    assert proof.calls == ["data-validate", "data-validate"]

    # a stale load-test gate and an unhealthy service fail too
    proof.green = True
    health_server.healthy = False
    stale = {**upstream, "load-test": {"passed": True, "finished_at": p5_cutover.iso(clock.now() - 30 * 3600)}}
    c2 = ctx(tmp_path, env, "pre-cutover-check", settings=settings, upstream=stale)
    c2._reverifier = proof
    checks = step.verify(c2)
    failed = {ch.name for ch in checks if not ch.ok}
    assert "load-test gate recorded" in failed
    assert f"healthy: {health_server.url}" in failed and f"smoke: {health_server.url}" in failed


# -- post-cutover-watch ----------------------------------------------------------------------------------------------
def test_post_cutover_watch_records_results_and_fails_below_availability(
    tmp_path: Path, health_server: HealthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(PostCutoverWatch, "clock", clock)
    env = env_with()
    settings = {
        "urls": [health_server.url],
        "window_s": 60,
        "interval_s": 20,
        "sample_requests": 5,
        "max_p95_ms": 5000,
    }
    step = PostCutoverWatch()
    c = ctx(tmp_path, env, "post-cutover-watch", settings=settings)
    out = step.apply(c)
    assert out["rounds"] == 4 and out["requests"] == 20 and out["availability"] == 1.0
    assert all(ch.ok for ch in step.verify(c))

    clock.on_sleep = lambda: setattr(health_server, "healthy", False)  # breaks after the first round
    c = ctx(tmp_path, env, "post-cutover-watch", settings=settings)
    with pytest.raises(StepFailed) as info:
        step.apply(c)
    assert "2 breaching round(s)" in info.value.what  # breach_rounds = 2: the third round never ran
    result = c.checkpoints.get("result")
    assert result is not None and result["clean"] is False and result["rounds"] == 3
    assert not all(ch.ok for ch in step.verify(c))


# -- db-rollback-point (the guide's DB rollback procedure) ----------------------------------------------------------
def _pg_env(pg_source: Any, pg_target: Any, src_db: str, dst_db: str, kube: Any) -> EnvConfig:
    def ep(server: Any, db: str) -> dict[str, Any]:
        return {
            "host": server.host,
            "port": server.port,
            "user": server.user,
            "dbname": db,
            "bin_dir": str(server.bin_dir),
        }

    return env_with(kube=kube, postgres={"source": ep(pg_source, src_db), "target": ep(pg_target, dst_db)})


def test_db_rollback_scales_down_restores_backup_and_scales_back(
    pg_source: Any, pg_target: Any, fresh_pg_db: Any, kube_api: Any, tmp_path: Path
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    src_db = str(conninfo_to_dict(fresh_pg_db(pg_source))["dbname"])
    dst_db = str(conninfo_to_dict(fresh_pg_db(pg_target))["dbname"])
    env = _pg_env(pg_source, pg_target, src_db, dst_db, kube_api)
    for name, replicas in (("api-gateway", 3), ("prompt-generator", 2)):
        kube_api.put_object(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": NS},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "c", "image": "x"}]},
                    },
                },
            }
        )
    c = ctx(tmp_path, env, "db-rollback-point")
    source = c.adapters.postgres("source")
    source.execute("CREATE TABLE prompts (id int PRIMARY KEY, body text)")
    source.execute("INSERT INTO prompts SELECT g, 'p' || g FROM generate_series(1, 50) g")
    backup = tmp_path / "pg-backup.dump"
    source.dump(backup)  # what pg-backup recorded
    sha, _size = c.adapters.get("archive").sha256(backup)
    target = c.adapters.postgres("target")
    target.execute("CREATE TABLE prompts (id int PRIMARY KEY, body text)")
    target.execute("INSERT INTO prompts SELECT g, 'new-' || g FROM generate_series(1, 80) g")  # post-cutover writes

    step = DbRollbackPoint()
    c = ctx(tmp_path, env, "db-rollback-point", upstream={"pg-backup": {"path": str(backup), "sha256": sha}})
    out = step.apply(c)
    assert out["replicas"] == {f"{NS}/api-gateway": 3, f"{NS}/prompt-generator": 2}
    assert all(ch.ok for ch in step.verify(c))

    step.rollback(c)  # an ordinary (phase) rollback never discards writes
    assert target.query("SELECT count(*) FROM prompts")[0][0] == 80
    assert any("NOT restored" in line for line in c.recorded_logs)

    assert any("days old" in line and "dump_consent" in line for line in c.recorded_logs)  # its age, printed
    c.force_past_fence = True
    step.rollback(c)  # forced but without consent to the dump: still nothing restored
    assert target.query("SELECT count(*) FROM prompts")[0][0] == 80
    consent = ctx(tmp_path, env, "db-rollback-point", settings={"dump_consent": True}, upstream=c.upstream)
    consent.checkpoints, consent.force_past_fence = c.checkpoints, True
    before = len(kube_api.requests)
    step.rollback(consent)
    c = consent
    assert target.query("SELECT count(*), min(body) FROM prompts")[0] == (50, "p1")
    scale_calls = [r for r in kube_api.requests[before:] if r.path.endswith("/scale") and r.method in ("PATCH", "PUT")]
    assert len(scale_calls) == 4  # two down to 0, two back
    dep = kube_api.get_object("apps/v1", "Deployment", "api-gateway", NS)
    assert dep["spec"]["replicas"] == 3
    actions = [a for a, _ in c.recorded_intents]
    assert actions.index("pg-restore") > actions.index("scale") and actions[-1] == "scale"


def test_the_cutover_chain_without_a_new_stack(tmp_path: Path) -> None:
    from phases.p5_cutover.dns_cutover import DnsCutover

    env = env_with()
    blocking = DnsCutover().plan(ctx(tmp_path, env, "dns-cutover", settings={"direct_urls": ["http://127.0.0.1:9/"]}))
    assert any("no new target" in f.message for f in blocking.blocking)
    assert PostCutoverWatch().skip_reason(ctx(tmp_path, env, "post-cutover-watch"))
    watched = ctx(tmp_path, env, "post-cutover-watch", upstream={"dns-cutover": {"direct_urls": ["http://127.0.0.1:9/"]}})
    assert PostCutoverWatch().skip_reason(watched) is None


def test_load_gate_time_falls_back_to_the_load_test_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    clock = FakeClock(start=time.time())
    monkeypatch.setattr(PreCutoverCheck, "clock", clock)
    env = env_with()
    c = ctx(tmp_path, env, "pre-cutover-check", upstream={"load-test": {"passed": True, "stats": {"p95_ms": 80.0}}})
    assert not PreCutoverCheck()._load_gate(c, c.typed(PreCutoverCheck.Settings)).ok  # no time anywhere
    report = c.state_dir / "sandbox" / "artifacts" / "load-test" / "load-test-report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"at": clock.now() - 7200, "failures": []}))
    gate = PreCutoverCheck()._load_gate(c, c.typed(PreCutoverCheck.Settings))
    assert gate.ok and "2.0 h ago" in str(gate.observed)
    report.write_text(json.dumps({"at": clock.now() - 60, "failures": ["p95 250 ms > 200 ms"]}))
    assert not PreCutoverCheck()._load_gate(c, c.typed(PreCutoverCheck.Settings)).ok  # the last run failed: not the recorded gate's time


def test_autoscale_tune_without_vpa_renders_only_hpas(tmp_path: Path) -> None:
    c = ctx(tmp_path, env_with(), "autoscale-tune", settings={"vpa": False, "hpa": {"default": {"max": 7}}})
    docs = AutoscaleTune().docs(c)
    assert docs and {d["kind"] for d in docs} == {"HorizontalPodAutoscaler"}
    assert {d["spec"]["maxReplicas"] for d in docs} == {7}
