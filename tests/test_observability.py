"""Issue 19: `audit-baseline` and `observability` against the moto SERVER (plan → apply → re-apply = no change →
verify → rollback), the alarm gate the cutover steps use, and the compliance report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from migrate.config import EnvConfig
from migrate.step import Check
from migrate.testing import make_context
from phases._alarms import alarm_check
from phases.p1_foundation.audit_baseline import AuditBaseline
from phases.p3_app.observability import ObservabilityStep
from tests.servers_plugin import moto_client


def _env(moto: Any) -> EnvConfig:
    return EnvConfig.model_validate(
        {"name": "sandbox", "kind": "sandbox", "aws": {"region": "us-east-1", "endpoint_url": moto.endpoint_url}}
    )


def _failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def test_audit_baseline_apply_verify_rollback(moto_reset: Any, tmp_path: Path) -> None:
    env = _env(moto_reset)
    step = AuditBaseline()
    plan = step.plan(make_context(tmp_path, env, step.id))
    targets = " ".join(c.target for c in plan.changes)
    assert "CloudTrail" in targets and "AWS Config" in targets and "GuardDuty" in targets and "Security Hub" in targets

    out = step.apply(make_context(tmp_path, env, step.id, plan=plan))
    assert set(out["created"]) == {"bucket", "trail", "recorder", "guardduty", "security-hub"}
    checks = step.verify(make_context(tmp_path, env, step.id))
    assert not _failed(checks), _failed(checks)
    # the Security Hub standard cannot be enabled through moto: said, never passed silently
    standard = next(c for c in checks if "Foundational" in c.name)
    assert "not checkable here" in str(standard.observed)

    # independent read-back through boto3
    trail = moto_client(moto_reset.endpoint_url, "cloudtrail").describe_trails()["trailList"][0]
    assert trail["IsMultiRegionTrail"] and trail["LogFileValidationEnabled"]

    again = step.plan(make_context(tmp_path, env, step.id))
    assert not again.changes, again.changes

    # a trail switched off is caught by verify
    moto_client(moto_reset.endpoint_url, "cloudtrail").stop_logging(Name=out["trail"])
    failed = _failed(step.verify(make_context(tmp_path, env, step.id)))
    assert [c.name for c in failed] == ["CloudTrail logging, multi-region, log-file validation"]

    step.rollback(make_context(tmp_path, env, step.id, upstream={step.id: out}))
    assert moto_client(moto_reset.endpoint_url, "cloudtrail").describe_trails()["trailList"] == []
    assert moto_client(moto_reset.endpoint_url, "guardduty").list_detectors()["DetectorIds"] == []


def _observability(moto: Any, tmp_path: Path) -> tuple[EnvConfig, dict[str, Any], dict[str, Any]]:
    env = _env(moto)
    upstream = {
        "rds": {"instance_id": "betterprompts-sandbox"},
        "elasticache": {},
        "ingress": {"alb_arn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/bp/abc123"},
    }
    settings = {"subscribers": ["oncall@example.com"], "log_retention_days": 30}
    step = ObservabilityStep()
    out = step.apply(make_context(tmp_path, env, step.id, settings=settings, upstream=upstream))
    return env, upstream, {**out, "settings": settings}


def test_observability_alarms_on_the_plan_criteria(moto_reset: Any, tmp_path: Path) -> None:
    env, upstream, out = _observability(moto_reset, tmp_path)
    step = ObservabilityStep()
    ctx = make_context(tmp_path, env, step.id, settings=out["settings"], upstream=upstream)
    assert not _failed(step.verify(ctx)), _failed(step.verify(ctx))
    alarms = moto_client(moto_reset.endpoint_url, "cloudwatch").describe_alarms(AlarmNamePrefix="betterprompts-sandbox-")
    by_name = {a["AlarmName"]: a for a in alarms["MetricAlarms"]}
    p95 = by_name["betterprompts-sandbox-api-p95"]
    assert p95["ExtendedStatistic"] == "p95" and p95["Threshold"] == 0.2  # API p95 < 200 ms, from [targets]
    assert p95["Dimensions"] == [{"Name": "LoadBalancer", "Value": "app/bp/abc123"}]
    assert "betterprompts-sandbox-rds-free-storage" in by_name
    # a threshold changed by hand is caught by verify
    cw = moto_client(moto_reset.endpoint_url, "cloudwatch")
    spec = dict(p95)
    cw.put_metric_alarm(
        AlarmName=spec["AlarmName"], Namespace=spec["Namespace"], MetricName=spec["MetricName"], ExtendedStatistic="p95",
        Period=60, EvaluationPeriods=3, Threshold=5.0, ComparisonOperator="GreaterThanThreshold",
        AlarmActions=spec["AlarmActions"], Dimensions=spec["Dimensions"],
    )
    assert "alarm thresholds as configured" in [c.name for c in _failed(step.verify(ctx))]
    step.rollback(make_context(tmp_path, env, step.id, settings=out["settings"], upstream={**upstream, step.id: out}))
    assert cw.describe_alarms(AlarmNamePrefix="betterprompts-sandbox-")["MetricAlarms"] == []


def test_alarm_gate_fails_while_an_alarm_fires(moto_reset: Any, tmp_path: Path) -> None:
    env, _upstream, out = _observability(moto_reset, tmp_path)
    gate_upstream = {"observability": {"alarm_prefix": out["alarm_prefix"]}}
    ctx = make_context(tmp_path, env, "pre-cutover-check", upstream=gate_upstream)
    assert alarm_check(ctx).ok
    cw = moto_client(moto_reset.endpoint_url, "cloudwatch")
    cw.set_alarm_state(AlarmName="betterprompts-sandbox-api-p95", StateValue="ALARM", StateReason="p95 412 ms > 200 ms")
    check = alarm_check(ctx)
    assert not check.ok and check.observed == ["betterprompts-sandbox-api-p95"]
    assert "p95 412 ms" in check.detail
    # no observability recorded: the gate says so instead of failing or pretending
    bare = alarm_check(make_context(tmp_path, env, "pre-cutover-check"))
    assert bare.ok and "no alarms recorded" in str(bare.observed)


def test_compliance_report_lists_every_control_with_evidence(moto_reset: Any, tmp_path: Path) -> None:
    from migrate.adapters import Adapters
    from migrate.compliance import ComplianceContext, collect, markdown
    from migrate.config import load

    env = _env(moto_reset)
    audit_out = AuditBaseline().apply(make_context(tmp_path, env, "audit-baseline"))
    _, _, obs_out = _observability(moto_reset, tmp_path)
    ec = moto_client(moto_reset.endpoint_url, "elasticache")
    ec.create_replication_group(ReplicationGroupId="bp-plain", ReplicationGroupDescription="x", Engine="redis",
                                CacheNodeType="cache.t3.micro", NumCacheClusters=1)
    config = load(str(Path(__file__).resolve().parent.parent / "migrate.toml"))
    adapters = Adapters(env, project_root=tmp_path, state_dir=tmp_path / "state")
    try:
        controls = collect(ComplianceContext(config, env, adapters, {"audit-baseline": audit_out, "observability": obs_out}))
    finally:
        adapters.close()
    by_id = {c.id: c for c in controls}
    assert {k: by_id[k].status for k in ("CT-1", "CFG-1", "GD-1", "SH-1", "S3-2", "MON-1", "MON-2")} == dict.fromkeys(
        ("CT-1", "CFG-1", "GD-1", "SH-1", "S3-2", "MON-1", "MON-2"), "pass"
    )
    assert by_id["SH-2"].status == "unchecked"  # moto lacks the standards API: said, not passed
    assert by_id["EC-1"].status == "fail" and "bp-plain: at_rest=False" in by_id["EC-1"].evidence
    assert by_id["WAF-1"].status == "fail" and by_id["EKS-1"].status == "n/a"
    text = markdown("sandbox", controls)
    assert "| CT-1 | CloudTrail" in text and "fail" in text


def test_waf_step_on_the_stand_in_root(moto_reset: Any, tmp_path: Path) -> None:
    import json

    from phases.p3_app.waf import Waf

    tfvars = tmp_path / "state" / "sandbox" / "terraform.tfvars.json"
    tfvars.parent.mkdir(parents=True, exist_ok=True)
    tfvars.write_text(json.dumps({"pg_target_host": "127.0.0.1", "pg_target_port": 55432, "redis_target_host": "127.0.0.1",
                                  "redis_target_port": 56379, "aws_endpoint_url": "http://127.0.0.1:1", "env_name": "sandbox"}))
    env = EnvConfig.model_validate(
        {"name": "sandbox", "kind": "sandbox", "aws": {"region": "us-east-1", "endpoint_url": moto_reset.endpoint_url},
         "terraform": {"root": "templates/sandbox/terraform"}}
    )
    step = Waf()
    plan = step.plan(make_context(tmp_path, env, step.id))
    assert all(c.target.startswith(("module.waf.", "output.")) for c in plan.changes), plan.changes
    out = step.apply(make_context(tmp_path, env, step.id, plan=plan))
    assert out["web_acl_arn"].startswith("arn:aws:wafv2:us-east-1:") and "/betterprompts-sandbox-alb/" in out["web_acl_arn"]
    assert not _failed(step.verify(make_context(tmp_path, env, step.id, upstream={step.id: out})))
    assert step.summary(out) == "web ACL betterprompts-sandbox-alb"


def test_a_teams_own_terraform_root_with_its_own_module_addresses(moto_reset: Any, tmp_path: Path) -> None:
    """Issue 20: a team's own root names its modules and outputs its own way; `[steps.vpc] targets` and `outputs`
    say which, and the step plans, applies and verifies exactly those."""
    from phases.p1_foundation.vpc import Vpc

    root = tmp_path / "team-terraform"
    (root / "modules" / "network").mkdir(parents=True)
    (root / "main.tf").write_text(
        'terraform {\n  backend "local" {}\n}\n\nmodule "network" {\n  source = "./modules/network"\n}\n\n'
        'module "unrelated" {\n  source = "./modules/network"\n}\n\n'
        'output "net_id" {\n  value = module.network.id\n}\n\noutput "net_private" {\n  value = module.network.private\n}\n\n'
        'output "net_public" {\n  value = module.network.public\n}\n'
    )
    (root / "modules" / "network" / "main.tf").write_text(
        'resource "terraform_data" "vpc" {\n  input = "vpc-0team"\n}\n\n'
        'output "id" {\n  value = terraform_data.vpc.output\n}\n\n'
        'output "private" {\n  value = [for s in ["a", "b"] : "${terraform_data.vpc.output}-${s}"]\n}\n\n'
        'output "public" {\n  value = ["${terraform_data.vpc.output}-c"]\n}\n'
    )
    (root / "team.tfvars").write_text("# the team's own variables\n")
    env = EnvConfig.model_validate(
        {"name": "staging", "aws": {"region": "us-east-1", "endpoint_url": moto_reset.endpoint_url},
         "terraform": {"root": str(root), "var_file": "team.tfvars"}}
    )
    settings = {"targets": ["module.network"],
                "outputs": {"vpc_id": "net_id", "private_subnet_ids": "net_private", "public_subnet_ids": "net_public"}}
    step = Vpc()
    plan = step.plan(make_context(tmp_path, env, step.id, settings=settings))
    touched = [c.target for c in plan.changes if not c.target.startswith("output.")]
    assert touched and all(t.startswith("module.network.") for t in touched), touched  # not module.unrelated
    out = step.apply(make_context(tmp_path, env, step.id, settings=settings, plan=plan))
    assert out["vpc_id"] == "vpc-0team" and out["private_subnet_ids"] == ["vpc-0team-a", "vpc-0team-b"], out
    checks = step.verify(make_context(tmp_path, env, step.id, settings=settings, upstream={step.id: out}))
    assert not _failed(checks), _failed(checks)
    # a misspelled key is refused when the settings load, naming it
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="target"):
        make_context(tmp_path, env, step.id, settings={"target": ["module.network"]})
