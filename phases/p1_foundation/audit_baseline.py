"""Step ``audit-baseline``: CloudTrail, AWS Config, GuardDuty and Security Hub on, into an encrypted, versioned,
access-blocked audit bucket."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from migrate.step import Change, Check, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from ._common import AWS_RETRY, PROJECT

if TYPE_CHECKING:
    from migrate.adapters.aws_audit import Audit
    from migrate.adapters.aws_foundation import AwsFoundation


class AuditBaseline(Step):
    """CloudTrail, AWS Config, GuardDuty and Security Hub on, into an encrypted, versioned, access-blocked bucket.

    The security baseline a SOC 2 auditor checks first: a multi-region trail with log-file validation, a Config
    recorder of all supported resources with its delivery channel, a GuardDuty detector, and Security Hub with the
    AWS Foundational Security Best Practices standard. Existing ones are adopted and brought to these settings.
    Verify reads each back through its own service API. Rollback turns off and deletes only what this step
    created (recorded in its outputs); the audit bucket and its logs are kept.
    """

    id = "audit-baseline"
    title = "Audit trail, Config, GuardDuty, Security Hub"
    phase = 1
    depends_on = ()
    reversibility = Reversibility.COMPENSABLE
    retry = AWS_RETRY

    class Settings(StepSettings):
        bucket: str | None = Field(None, description="audit log bucket (default <project>-audit-<account>-<region>)")
        trail_name: str = Field(f"{PROJECT}-audit", description="CloudTrail trail name")
        recorder_name: str = Field("default", description="AWS Config recorder and delivery channel name")
        config_role: str = Field(f"{PROJECT}-config-recorder", description="IAM role AWS Config records with")
        kms_key_id: str | None = Field(None, description="KMS key for the bucket's default encryption (default SSE-S3)")
        security_hub: bool = Field(True, description="enable Security Hub with the AWS Foundational standard")

    def _bucket(self, ctx: StepContext, foundation: AwsFoundation) -> str:
        s = ctx.typed(self.Settings)
        return s.bucket or f"{PROJECT}-audit-{foundation.account_id()}-{foundation.region}"

    @staticmethod
    def _adapters(ctx: StepContext) -> tuple[Audit, AwsFoundation]:
        return ctx.adapters.get("aws_audit"), ctx.adapters.get("aws_foundation")

    def plan(self, ctx: StepContext) -> PlanResult:
        s = ctx.typed(self.Settings)
        audit, foundation = self._adapters(ctx)
        bucket = self._bucket(ctx, foundation)
        result = PlanResult(data={"bucket": bucket, "trail": s.trail_name})
        b = foundation.bucket_state(bucket)
        if not b.exists:
            result.changes.append(Change("create", f"s3://{bucket}", "audit logs: versioned, encrypted, public access blocked"))
        else:
            result.in_place.append(f"audit bucket s3://{bucket}")
        trail = audit.trail(s.trail_name)
        if trail.ok:
            result.in_place.append(f"CloudTrail {s.trail_name} logging (multi-region, log-file validation)")
        else:
            result.changes.append(Change("update" if trail.exists else "create", f"CloudTrail {s.trail_name}", "multi-region, log-file validation, logging"))
        recorder = audit.recorder(s.recorder_name)
        if recorder.ok:
            result.in_place.append(f"AWS Config recorder {s.recorder_name} recording")
        else:
            result.changes.append(Change("update" if recorder.exists else "create", f"AWS Config recorder {s.recorder_name}", "all supported resources"))
        detector, status = audit.guardduty_detector()
        if status == "ENABLED":
            result.in_place.append(f"GuardDuty detector {detector}")
        else:
            result.changes.append(Change("update" if detector else "create", "GuardDuty detector", "enabled"))
        if s.security_hub:
            hub = audit.security_hub()
            if hub.enabled:
                result.in_place.append("Security Hub enabled")
            else:
                result.changes.append(Change("create", "Security Hub", "with the AWS Foundational Security Best Practices standard"))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        s = ctx.typed(self.Settings)
        audit, foundation = self._adapters(ctx)
        bucket = self._bucket(ctx, foundation)
        b = foundation.bucket_state(bucket)
        created: list[str] = []
        if not b.exists:
            ctx.intent("create-bucket", bucket=bucket)
            foundation.create_bucket(bucket)
            created.append("bucket")
        if b.versioning != "Enabled":
            foundation.enable_versioning(bucket)
        if not b.encryption:
            foundation.enable_encryption(bucket, s.kms_key_id)
        if not b.public_blocked:
            foundation.block_public_access(bucket)
        audit.put_bucket_policy(bucket, audit.audit_bucket_policy(bucket, foundation.account_id()))
        if not audit.trail(s.trail_name).exists:
            created.append("trail")
        ctx.intent("ensure-trail", trail=s.trail_name, bucket=bucket)
        audit.ensure_trail(s.trail_name, bucket)
        if not audit.recorder(s.recorder_name).exists:
            created.append("recorder")
        ctx.intent("ensure-config-recorder", recorder=s.recorder_name, role=s.config_role)
        role_arn = audit.ensure_config_role(s.config_role)
        audit.ensure_recorder(s.recorder_name, role_arn, bucket)
        detector_before, _ = audit.guardduty_detector()
        ctx.intent("ensure-guardduty")
        detector = audit.ensure_guardduty()
        if detector_before is None:
            created.append("guardduty")
        hub_note = ""
        if s.security_hub:
            if not audit.security_hub().enabled:
                created.append("security-hub")
            ctx.intent("ensure-security-hub")
            hub_note = audit.ensure_security_hub().unsupported
        return {
            "bucket": bucket,
            "trail": s.trail_name,
            "recorder": s.recorder_name,
            "guardduty_detector": detector,
            "security_hub": s.security_hub,
            "security_hub_note": hub_note,
            "created": created,
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        s = ctx.typed(self.Settings)
        audit, foundation = self._adapters(ctx)
        bucket = self._bucket(ctx, foundation)
        b = foundation.bucket_state(bucket)
        trail = audit.trail(s.trail_name)
        recorder = audit.recorder(s.recorder_name)
        detector, status = audit.guardduty_detector()
        checks = [
            Check("audit bucket versioned, encrypted, public access blocked",
                  b.exists and b.versioning == "Enabled" and bool(b.encryption) and b.public_blocked,
                  f"versioning={b.versioning or 'off'} encryption={b.encryption or 'none'} blocked={b.public_blocked}",
                  "Enabled / on / all blocked"),
            Check("CloudTrail logging, multi-region, log-file validation", trail.ok,
                  f"exists={trail.exists} logging={trail.logging} multi_region={trail.multi_region} validation={trail.log_file_validation}",
                  "all true"),
            Check("CloudTrail writes to the audit bucket", trail.bucket == bucket, trail.bucket or "none", bucket),
            Check("AWS Config recording all supported resources", recorder.ok,
                  f"recording={recorder.recording} all_supported={recorder.all_supported} delivery={recorder.delivery_bucket or 'none'}",
                  "recording, all supported, delivery channel"),
            Check("GuardDuty detector enabled", status == "ENABLED", f"{detector}: {status or 'absent'}", "ENABLED"),
        ]
        if s.security_hub:
            hub = audit.security_hub()
            checks.append(Check("Security Hub enabled", hub.enabled, hub.enabled, True))
            if hub.unsupported or not audit.aws.is_emulated:
                from migrate.adapters.aws_audit import FOUNDATIONAL_STANDARD

                wanted = FOUNDATIONAL_STANDARD.format(region=audit.region)
                if hub.unsupported and audit.aws.is_emulated:
                    checks.append(Check("Security Hub AWS Foundational standard", True, f"not checkable here: {hub.unsupported}", wanted))
                else:
                    checks.append(Check("Security Hub AWS Foundational standard", wanted in hub.standards, hub.standards, wanted))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Turn off and delete what this step created (never a trail, recorder or detector it adopted); keep the
        audit bucket and its logs."""
        s = ctx.typed(self.Settings)
        audit, _ = self._adapters(ctx)
        created = set(ctx.output(self.id, "created", default=[]) or [])
        if "security-hub" in created:
            ctx.intent("disable-security-hub")
            audit.disable_security_hub()
        if "guardduty" in created:
            detector, _ = audit.guardduty_detector()
            if detector:
                ctx.intent("delete-guardduty", detector=detector)
                audit.delete_guardduty(detector)
        if "recorder" in created:
            ctx.intent("delete-config-recorder", recorder=s.recorder_name)
            audit.delete_recorder(s.recorder_name, s.config_role)
        if "trail" in created:
            ctx.intent("delete-trail", trail=s.trail_name)
            audit.delete_trail(s.trail_name)

    def summary(self, outputs: Mapping[str, Any]) -> str:
        hub = "Security Hub" if outputs.get("security_hub") else "no Security Hub"
        return f"trail {outputs.get('trail', '?')} · Config · GuardDuty · {hub}"
