"""`bpmigrate report compliance`: the security checklist made executable — each control with its evidence from the
live account (read through the adapters; nothing is written to AWS), as a table and a Markdown report.

A control is ``pass``, ``fail``, or ``n/a`` (nothing to check yet, e.g. no EKS cluster), or ``unchecked`` (the
endpoint cannot answer, e.g. moto lacks Security Hub standards), never a silent pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from migrate.adapters import Adapters
from migrate.config import Config, EnvConfig
from migrate.errors import BpmError

OPEN_CIDR = "0.0.0.0/0"


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    status: str  # pass | fail | n/a | unchecked
    evidence: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ComplianceContext:
    config: Config
    env: EnvConfig
    adapters: Adapters
    outputs: Mapping[str, Mapping[str, Any]]

    def output(self, step: str, key: str, default: Any = None) -> Any:
        return self.outputs.get(step, {}).get(key, default)


def _status(ok: bool) -> str:
    return "pass" if ok else "fail"


def _cloudtrail(c: ComplianceContext) -> list[Control]:
    name = str(c.output("audit-baseline", "trail", "betterprompts-audit"))
    t = c.adapters.get("aws_audit").trail(name)
    return [Control("CT-1", "CloudTrail: multi-region, log-file validation, logging", _status(t.ok),
                    f"{name}: exists={t.exists} logging={t.logging} multi_region={t.multi_region} "
                    f"validation={t.log_file_validation} bucket={t.bucket or '-'}",
                    "bpmigrate apply --step audit-baseline")]


def _config_recorder(c: ComplianceContext) -> list[Control]:
    name = str(c.output("audit-baseline", "recorder", "default"))
    r = c.adapters.get("aws_audit").recorder(name)
    return [Control("CFG-1", "AWS Config records all supported resources", _status(r.ok),
                    f"{name}: recording={r.recording} all_supported={r.all_supported} delivery={r.delivery_bucket or '-'}",
                    "bpmigrate apply --step audit-baseline")]


def _guardduty(c: ComplianceContext) -> list[Control]:
    detector, status = c.adapters.get("aws_audit").guardduty_detector()
    return [Control("GD-1", "GuardDuty detector enabled", _status(status == "ENABLED"),
                    f"{detector or 'no detector'}: {status or '-'}", "bpmigrate apply --step audit-baseline")]


def _security_hub(c: ComplianceContext) -> list[Control]:
    from migrate.adapters.aws_audit import FOUNDATIONAL_STANDARD

    audit = c.adapters.get("aws_audit")
    hub = audit.security_hub()
    wanted = FOUNDATIONAL_STANDARD.format(region=audit.region)
    out = [Control("SH-1", "Security Hub enabled", _status(hub.enabled), f"enabled={hub.enabled}", "bpmigrate apply --step audit-baseline")]
    if hub.unsupported:
        out.append(Control("SH-2", "Security Hub: AWS Foundational standard", "unchecked", hub.unsupported))
    elif hub.enabled:
        out.append(Control("SH-2", "Security Hub: AWS Foundational standard", _status(wanted in hub.standards),
                           ", ".join(hub.standards) or "no standard enabled", "bpmigrate apply --step audit-baseline"))
    return out


def _buckets(c: ComplianceContext) -> list[Control]:
    foundation = c.adapters.get("aws_foundation")
    out = []
    for cid, step, title in (("S3-1", "tf-state-backend", "Terraform state bucket"), ("S3-2", "audit-baseline", "audit log bucket")):
        bucket = c.output(step, "bucket")
        if not bucket:
            out.append(Control(cid, f"{title}: versioned, encrypted, public access blocked", "n/a", f"{step} not applied"))
            continue
        b = foundation.bucket_state(str(bucket))
        ok = b.exists and b.versioning == "Enabled" and bool(b.encryption) and b.public_blocked
        out.append(Control(cid, f"{title}: versioned, encrypted, public access blocked", _status(ok),
                           f"s3://{bucket}: versioning={b.versioning or 'off'} encryption={b.encryption or 'none'} "
                           f"blocked={b.public_blocked}", f"bpmigrate apply --step {step}"))
    return out


def _alarms(c: ComplianceContext) -> list[Control]:
    prefix = c.output("observability", "alarm_prefix")
    wanted = list(c.output("observability", "alarms", []) or [])
    if not prefix:
        return [Control("MON-1", "SLO alarms and alert topic", "n/a", "observability not applied",
                        "bpmigrate apply --step observability")]
    obs = c.adapters.get("aws_observability")
    live = {a.name for a in obs.alarms(str(prefix))}
    missing = sorted(set(wanted) - live)
    topic = obs.topic_arn(f"{prefix}alerts")
    subscribers = len(obs.subscriptions(topic)) if topic else 0
    return [
        Control("MON-1", "SLO alarms exist", _status(bool(wanted) and not missing),
                f"{len(live)} alarms under {prefix}" + (f"; missing {missing}" if missing else ""),
                "bpmigrate apply --step observability"),
        Control("MON-2", "alerts reach a subscriber", _status(subscribers > 0), f"{topic or 'no topic'}: {subscribers} subscriber(s)",
                "set [steps.observability] subscribers and apply observability"),
    ]


def _rds(c: ComplianceContext) -> list[Control]:
    instances = c.adapters.get("aws_audit").rds_instances()
    if not instances:
        return [Control("RDS-1", "RDS encrypted at rest (KMS)", "n/a", "no RDS instance in this account/region")]
    bad = [d["DBInstanceIdentifier"] for d in instances if not d.get("StorageEncrypted")]
    return [Control("RDS-1", "RDS encrypted at rest (KMS)", _status(not bad),
                    ", ".join(f"{d['DBInstanceIdentifier']}={'encrypted' if d.get('StorageEncrypted') else 'PLAIN'}" for d in instances),
                    "terraform: module rds storage_encrypted = true with kms_key_id")]


def _elasticache(c: ComplianceContext) -> list[Control]:
    groups = c.adapters.get("aws_audit").replication_groups()
    if not groups:
        return [Control("EC-1", "ElastiCache: encryption at rest, in transit, AUTH", "n/a", "no replication group")]
    rows, ok = [], True
    for g in groups:
        at_rest, transit, auth = bool(g.get("AtRestEncryptionEnabled")), bool(g.get("TransitEncryptionEnabled")), bool(g.get("AuthTokenEnabled"))
        ok = ok and at_rest and transit and auth
        rows.append(f"{g.get('ReplicationGroupId')}: at_rest={at_rest} transit={transit} auth={auth}")
    return [Control("EC-1", "ElastiCache: encryption at rest, in transit, AUTH", _status(ok), "; ".join(rows),
                    "terraform: module elasticache at_rest/transit encryption + auth token from Secrets Manager")]


def _eks(c: ComplianceContext) -> list[Control]:
    clusters = c.adapters.get("aws_audit").eks_clusters()
    if not clusters:
        return [Control("EKS-1", "EKS API endpoint not open to the internet", "n/a", "no EKS cluster")]
    rows, ok = [], True
    for cl in clusters:
        vpc = cl.get("resourcesVpcConfig", {})
        public = bool(vpc.get("endpointPublicAccess", True))
        cidrs = list(vpc.get("publicAccessCidrs", [OPEN_CIDR] if public else []))
        open_ = public and OPEN_CIDR in cidrs
        ok = ok and not open_
        rows.append(f"{cl.get('name')}: public={public} cidrs={','.join(cidrs) or '-'}")
    return [Control("EKS-1", "EKS API endpoint not open to the internet", _status(ok), "; ".join(rows),
                    "set eks_public_access_cidrs in terraform/environments/<env>.tfvars")]


def _waf(c: ComplianceContext) -> list[Control]:
    acls = c.adapters.get("aws_audit").web_acls()
    return [Control("WAF-1", "WAF web ACL for the load balancer", _status(bool(acls)),
                    ", ".join(str(a.get("Name")) for a in acls) or "no regional web ACL",
                    "terraform: module waf (AWS managed common rules + rate limit), ingress annotation")]


CONTROLS: tuple[Callable[[ComplianceContext], list[Control]], ...] = (
    _cloudtrail, _config_recorder, _guardduty, _security_hub, _buckets, _alarms, _rds, _elasticache, _eks, _waf,
)


def collect(ctx: ComplianceContext) -> list[Control]:
    out: list[Control] = []
    for check in CONTROLS:
        try:
            out.extend(check(ctx))
        except BpmError as exc:
            name = check.__name__.strip("_")
            out.append(Control(name.upper(), name, "unchecked", exc.what, exc.next_cmd))
    return out


def markdown(env_name: str, controls: list[Control], when: float | None = None) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when or time.time()))
    counts = {s: sum(1 for c in controls if c.status == s) for s in ("pass", "fail", "n/a", "unchecked")}
    lines = [
        f"# Compliance report — {env_name}",
        "",
        f"Read from the live account on {stamp} by `bpmigrate report compliance --env {env_name}`.",
        f"{counts['pass']} pass · {counts['fail']} fail · {counts['n/a']} n/a · {counts['unchecked']} unchecked",
        "",
        "| Control | Title | Status | Evidence | Fix |",
        "|---|---|---|---|---|",
    ]
    for c in controls:
        cells = [c.id, c.title, c.status, c.evidence, c.fix]
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines) + "\n"


def report_path(config: Config, env_name: str) -> Path:
    return config.runbooks_dir / "reports" / f"compliance-{env_name}.md"
