"""Monitoring and alerting in AWS: the SNS alert topic, CloudWatch alarms on the plan's SLOs, the cutover
dashboard and log groups with retention — and the read side the cutover gates use (which alarms are in ALARM).

Built on :class:`migrate.adapters.aws.AwsAdapter` (moto server in the sandbox and tests); botocore errors are
translated there. Every resource is named with a prefix (``<project>-<env>-``) so a gate can list "the cutover's
alarms" without keeping a list of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrate.adapters.aws import AwsAdapter
from migrate.adapters.aws import from_config as aws_from_config

if TYPE_CHECKING:
    from migrate.config import EnvConfig


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch alarm: ``statistic`` is Average/Sum/Maximum/Minimum or a percentile such as ``p95``."""

    name: str
    namespace: str
    metric: str
    threshold: float
    comparison: str = "GreaterThanThreshold"
    statistic: str = "Average"
    period_s: int = 60
    evaluation_periods: int = 3
    dimensions: tuple[tuple[str, str], ...] = ()
    description: str = ""

    def to_api(self, topic_arn: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "Namespace": self.namespace,
            "MetricName": self.metric,
            "Period": self.period_s,
            "EvaluationPeriods": self.evaluation_periods,
            "Threshold": self.threshold,
            "ComparisonOperator": self.comparison,
            "TreatMissingData": "notBreaching",
            "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions],
        }
        if self.statistic.startswith("p"):
            body["ExtendedStatistic"] = self.statistic
        else:
            body["Statistic"] = self.statistic
        if topic_arn:
            body["AlarmActions"] = [topic_arn]
            body["OKActions"] = [topic_arn]
        return body


@dataclass(frozen=True)
class AlarmState:
    name: str
    state: str  # OK | ALARM | INSUFFICIENT_DATA
    reason: str = ""
    updated: str = ""
    metric: str = ""
    threshold: float | None = None
    statistic: str = ""
    actions: tuple[str, ...] = field(default_factory=tuple)

    def evidence(self) -> dict[str, Any]:
        return {"alarm": self.name, "state": self.state, "reason": self.reason, "at": self.updated}


class Observability:
    def __init__(self, aws: AwsAdapter) -> None:
        self.aws = aws

    # -- SNS -----------------------------------------------------------------------------------------------
    def topic_arn(self, name: str) -> str | None:
        pages = self.aws.call("sns", "list_topics").get("Topics", [])
        for topic in pages:
            arn = str(topic.get("TopicArn", ""))
            if arn.rsplit(":", 1)[-1] == name:
                return arn
        return None

    def ensure_topic(self, name: str, subscribers: list[str]) -> str:
        """Create (idempotent) the alert topic and subscribe each address (email, or an https/sqs/lambda ARN/URL)."""
        arn = str(self.aws.call("sns", "create_topic", Name=name)["TopicArn"])
        existing = {s.get("Endpoint") for s in self.subscriptions(arn)}
        for endpoint in subscribers:
            if endpoint in existing:
                continue
            protocol = _protocol(endpoint)
            self.aws.call("sns", "subscribe", TopicArn=arn, Protocol=protocol, Endpoint=endpoint)
        return arn

    def subscriptions(self, topic_arn: str) -> list[dict[str, Any]]:
        out = self.aws.call("sns", "list_subscriptions_by_topic", TopicArn=topic_arn).get("Subscriptions", [])
        return [dict(s) for s in out]

    def delete_topic(self, arn: str) -> None:
        self.aws.call("sns", "delete_topic", TopicArn=arn)

    # -- CloudWatch alarms ---------------------------------------------------------------------------------
    def put_alarm(self, spec: AlarmSpec, topic_arn: str | None) -> None:
        self.aws.call("cloudwatch", "put_metric_alarm", **spec.to_api(topic_arn))

    def alarms(self, prefix: str) -> list[AlarmState]:
        out: list[AlarmState] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"AlarmNamePrefix": prefix, "MaxRecords": 100}
            if token:
                kw["NextToken"] = token
            page = self.aws.call("cloudwatch", "describe_alarms", **kw)
            for alarm in page.get("MetricAlarms", []):
                out.append(
                    AlarmState(
                        name=str(alarm["AlarmName"]),
                        state=str(alarm.get("StateValue", "")),
                        reason=str(alarm.get("StateReason", "")),
                        updated=str(alarm.get("StateUpdatedTimestamp", "")),
                        metric=str(alarm.get("MetricName", "")),
                        threshold=alarm.get("Threshold"),
                        statistic=str(alarm.get("ExtendedStatistic") or alarm.get("Statistic") or ""),
                        actions=tuple(str(a) for a in alarm.get("AlarmActions", [])),
                    )
                )
            token = page.get("NextToken")
            if not token:
                return out

    def firing(self, prefix: str) -> list[AlarmState]:
        """The alarms under ``prefix`` that are in ALARM now."""
        return [a for a in self.alarms(prefix) if a.state == "ALARM"]

    def delete_alarms(self, names: list[str]) -> None:
        for start in range(0, len(names), 100):
            chunk = names[start : start + 100]
            if chunk:
                self.aws.call("cloudwatch", "delete_alarms", AlarmNames=chunk)

    # -- dashboard -----------------------------------------------------------------------------------------
    def put_dashboard(self, name: str, widgets: list[dict[str, Any]]) -> None:
        self.aws.call("cloudwatch", "put_dashboard", DashboardName=name, DashboardBody=json.dumps({"widgets": widgets}))

    def dashboard_exists(self, name: str) -> bool:
        entries = self.aws.call("cloudwatch", "list_dashboards", DashboardNamePrefix=name).get("DashboardEntries", [])
        return any(e.get("DashboardName") == name for e in entries)

    def delete_dashboard(self, name: str) -> None:
        if self.dashboard_exists(name):
            self.aws.call("cloudwatch", "delete_dashboards", DashboardNames=[name])

    # -- logs ----------------------------------------------------------------------------------------------
    def log_group_retention(self, name: str) -> int | None:
        """Retention in days; 0 when the group never expires; None when it does not exist."""
        groups = self.aws.call("logs", "describe_log_groups", logGroupNamePrefix=name).get("logGroups", [])
        for group in groups:
            if group.get("logGroupName") == name:
                return int(group.get("retentionInDays") or 0)
        return None

    def ensure_log_group(self, name: str, retention_days: int) -> None:
        if self.log_group_retention(name) is None:
            self.aws.call("logs", "create_log_group", logGroupName=name)
        self.aws.call("logs", "put_retention_policy", logGroupName=name, retentionInDays=retention_days)

    def delete_log_group(self, name: str) -> None:
        if self.log_group_retention(name) is not None:
            self.aws.call("logs", "delete_log_group", logGroupName=name)


def _protocol(endpoint: str) -> str:
    if endpoint.startswith("arn:aws:sqs:"):
        return "sqs"
    if endpoint.startswith("arn:aws:lambda:"):
        return "lambda"
    if endpoint.startswith("https://"):
        return "https"
    return "email"


def from_config(env: EnvConfig, **_: Any) -> Observability:
    return Observability(aws_from_config(env))
