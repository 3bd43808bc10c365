"""The security baseline an auditor checks first: CloudTrail, AWS Config, GuardDuty, Security Hub — set up
idempotently and read back — plus the read-backs of the compliance report (encryption of RDS/ElastiCache, the
EKS API endpoint's exposure, WAF on the load balancer).

"Not found" answers are returned as empty states, never raised. A call the endpoint does not implement (moto lacks
Security Hub's ``BatchEnableStandards``) is reported as ``unsupported`` with the reason, never as a pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrate.adapters.aws import AwsAdapter
from migrate.adapters.aws import from_config as aws_from_config
from migrate.errors import AdapterError

if TYPE_CHECKING:
    from migrate.config import EnvConfig

FOUNDATIONAL_STANDARD = "arn:aws:securityhub:{region}::standards/aws-foundational-security-best-practices/v/1.0.0"
CONFIG_ROLE_POLICY = "arn:aws:iam::aws:policy/service-role/AWS_ConfigRole"
_ASSUME_CONFIG = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "config.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


@dataclass
class TrailState:
    name: str
    exists: bool = False
    logging: bool = False
    multi_region: bool = False
    log_file_validation: bool = False
    bucket: str = ""

    @property
    def ok(self) -> bool:
        return self.exists and self.logging and self.multi_region and self.log_file_validation


@dataclass
class RecorderState:
    name: str
    exists: bool = False
    recording: bool = False
    all_supported: bool = False
    delivery_bucket: str = ""

    @property
    def ok(self) -> bool:
        return self.exists and self.recording and self.all_supported and bool(self.delivery_bucket)


@dataclass
class SecurityHubState:
    enabled: bool = False
    standards: list[str] = field(default_factory=list)
    unsupported: str = ""  # why the standards could not be read or enabled through this endpoint


class Audit:
    def __init__(self, aws: AwsAdapter) -> None:
        self.aws = aws

    @property
    def region(self) -> str:
        return self.aws.region

    def _maybe(self, service: str, op: str, missing: tuple[str, ...], **kw: Any) -> Any:
        try:
            return self.aws.call(service, op, **kw)
        except AdapterError as exc:
            if any(code in exc.what for code in missing):
                return None
            raise

    # -- CloudTrail ----------------------------------------------------------------------------------------
    def trail(self, name: str) -> TrailState:
        trails = self.aws.call("cloudtrail", "describe_trails", trailNameList=[name]).get("trailList", [])
        if not trails:
            return TrailState(name)
        t = trails[0]
        status = self.aws.call("cloudtrail", "get_trail_status", Name=name)
        return TrailState(
            name,
            exists=True,
            logging=bool(status.get("IsLogging")),
            multi_region=bool(t.get("IsMultiRegionTrail")),
            log_file_validation=bool(t.get("LogFileValidationEnabled")),
            bucket=str(t.get("S3BucketName", "")),
        )

    def ensure_trail(self, name: str, bucket: str) -> None:
        state = self.trail(name)
        if not state.exists:
            self.aws.call(
                "cloudtrail", "create_trail", Name=name, S3BucketName=bucket, IsMultiRegionTrail=True,
                EnableLogFileValidation=True, IncludeGlobalServiceEvents=True,
            )
        elif not (state.multi_region and state.log_file_validation and state.bucket == bucket):
            self.aws.call(
                "cloudtrail", "update_trail", Name=name, S3BucketName=bucket, IsMultiRegionTrail=True,
                EnableLogFileValidation=True, IncludeGlobalServiceEvents=True,
            )
        if not self.trail(name).logging:
            self.aws.call("cloudtrail", "start_logging", Name=name)

    def delete_trail(self, name: str) -> None:
        if self.trail(name).exists:
            self.aws.call("cloudtrail", "delete_trail", Name=name)

    def audit_bucket_policy(self, bucket: str, account_id: str) -> dict[str, Any]:
        """What CloudTrail and AWS Config need to write into the audit bucket (and nothing else), TLS only."""
        arn = f"arn:aws:s3:::{bucket}"
        services = ["cloudtrail.amazonaws.com", "config.amazonaws.com"]
        return {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "AuditAclCheck", "Effect": "Allow", "Principal": {"Service": services},
                 "Action": ["s3:GetBucketAcl", "s3:ListBucket"], "Resource": arn},
                {"Sid": "AuditWrite", "Effect": "Allow", "Principal": {"Service": services}, "Action": "s3:PutObject",
                 "Resource": f"{arn}/AWSLogs/{account_id}/*",
                 "Condition": {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}}},
                {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                 "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            ],
        }

    def put_bucket_policy(self, bucket: str, policy: dict[str, Any]) -> None:
        self.aws.call("s3", "put_bucket_policy", Bucket=bucket, Policy=json.dumps(policy))

    def bucket_policy(self, bucket: str) -> dict[str, Any] | None:
        got = self._maybe("s3", "get_bucket_policy", ("NoSuchBucketPolicy", "NoSuchBucket"), Bucket=bucket)
        return json.loads(got["Policy"]) if got else None

    # -- AWS Config ----------------------------------------------------------------------------------------
    def recorder(self, name: str) -> RecorderState:
        recorders = self.aws.call("config", "describe_configuration_recorders").get("ConfigurationRecorders", [])
        found = next((r for r in recorders if r.get("name") == name), None)
        if found is None:
            return RecorderState(name)
        statuses = self.aws.call("config", "describe_configuration_recorder_status").get("ConfigurationRecordersStatus", [])
        status: dict[str, Any] = next((s for s in statuses if s.get("name") == name), {})
        channels = self.aws.call("config", "describe_delivery_channels").get("DeliveryChannels", [])
        return RecorderState(
            name,
            exists=True,
            recording=bool(status.get("recording")),
            all_supported=bool(found.get("recordingGroup", {}).get("allSupported")),
            delivery_bucket=str(channels[0].get("s3BucketName", "")) if channels else "",
        )

    def ensure_config_role(self, role_name: str) -> str:
        got = self._maybe("iam", "get_role", ("NoSuchEntity",), RoleName=role_name)
        if got is None:
            got = self.aws.call("iam", "create_role", RoleName=role_name, AssumeRolePolicyDocument=json.dumps(_ASSUME_CONFIG))
            self.aws.call("iam", "attach_role_policy", RoleName=role_name, PolicyArn=CONFIG_ROLE_POLICY)
        return str(got["Role"]["Arn"])

    def ensure_recorder(self, name: str, role_arn: str, bucket: str) -> None:
        self.aws.call(
            "config", "put_configuration_recorder",
            ConfigurationRecorder={
                "name": name, "roleARN": role_arn,
                "recordingGroup": {"allSupported": True, "includeGlobalResourceTypes": True},
            },
        )
        self.aws.call("config", "put_delivery_channel", DeliveryChannel={"name": name, "s3BucketName": bucket})
        self.aws.call("config", "start_configuration_recorder", ConfigurationRecorderName=name)

    def delete_recorder(self, name: str, role_name: str) -> None:
        if self.recorder(name).exists:
            self.aws.call("config", "stop_configuration_recorder", ConfigurationRecorderName=name)
            self._maybe("config", "delete_delivery_channel", ("NoSuchDeliveryChannel",), DeliveryChannelName=name)
            self.aws.call("config", "delete_configuration_recorder", ConfigurationRecorderName=name)
        if self._maybe("iam", "get_role", ("NoSuchEntity",), RoleName=role_name) is not None:
            self._maybe("iam", "detach_role_policy", ("NoSuchEntity",), RoleName=role_name, PolicyArn=CONFIG_ROLE_POLICY)
            self.aws.call("iam", "delete_role", RoleName=role_name)

    # -- GuardDuty -----------------------------------------------------------------------------------------
    def guardduty_detector(self) -> tuple[str | None, str]:
        """(detector id, status) of this region's detector; (None, "") when there is none."""
        ids = self.aws.call("guardduty", "list_detectors").get("DetectorIds", [])
        if not ids:
            return None, ""
        detector = self.aws.call("guardduty", "get_detector", DetectorId=ids[0])
        return str(ids[0]), str(detector.get("Status", ""))

    def ensure_guardduty(self) -> str:
        detector_id, status = self.guardduty_detector()
        if detector_id is None:
            return str(self.aws.call("guardduty", "create_detector", Enable=True)["DetectorId"])
        if status != "ENABLED":
            self.aws.call("guardduty", "update_detector", DetectorId=detector_id, Enable=True)
        return detector_id

    def delete_guardduty(self, detector_id: str) -> None:
        self._maybe("guardduty", "delete_detector", ("BadRequest", "NotFound"), DetectorId=detector_id)

    # -- Security Hub --------------------------------------------------------------------------------------
    def security_hub(self) -> SecurityHubState:
        hub = self._maybe("securityhub", "describe_hub", ("InvalidAccessException", "ResourceNotFound"))
        if hub is None:
            return SecurityHubState()
        try:
            subs = self.aws.call("securityhub", "get_enabled_standards").get("StandardsSubscriptions", [])
        except AdapterError as exc:
            return SecurityHubState(enabled=True, unsupported=f"get_enabled_standards: {exc.what}")
        return SecurityHubState(enabled=True, standards=[str(s.get("StandardsArn", "")) for s in subs])

    def ensure_security_hub(self) -> SecurityHubState:
        if not self.security_hub().enabled:
            self.aws.call("securityhub", "enable_security_hub", EnableDefaultStandards=False)
        standard = FOUNDATIONAL_STANDARD.format(region=self.region)
        state = self.security_hub()
        if standard in state.standards:
            return state
        try:
            self.aws.call(
                "securityhub", "batch_enable_standards", StandardsSubscriptionRequests=[{"StandardsArn": standard}]
            )
        except AdapterError as exc:
            if not self.aws.is_emulated:
                raise
            return SecurityHubState(enabled=True, unsupported=f"batch_enable_standards is not served by this endpoint ({exc.what})")
        return self.security_hub()

    def disable_security_hub(self) -> None:
        if self.security_hub().enabled:
            self.aws.call("securityhub", "disable_security_hub")

    # -- read-backs for the compliance report --------------------------------------------------------------
    def rds_instances(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self.aws.call("rds", "describe_db_instances").get("DBInstances", [])]

    def replication_groups(self) -> list[dict[str, Any]]:
        return [dict(g) for g in self.aws.call("elasticache", "describe_replication_groups").get("ReplicationGroups", [])]

    def eks_clusters(self) -> list[dict[str, Any]]:
        names = self.aws.call("eks", "list_clusters").get("clusters", [])
        return [dict(self.aws.call("eks", "describe_cluster", name=n)["cluster"]) for n in names]

    def web_acls(self) -> list[dict[str, Any]]:
        return [dict(a) for a in self.aws.call("wafv2", "list_web_acls", Scope="REGIONAL").get("WebACLs", [])]


def from_config(env: EnvConfig, **_: Any) -> Audit:
    return Audit(aws_from_config(env))
