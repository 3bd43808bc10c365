"""Step ``observability``: SLO alarms, the alert topic, the cutover dashboard and log retention."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from migrate.step import Change, Check, Outputs, PlanResult, RetryPolicy, Reversibility, Step, StepContext, StepSettings

if TYPE_CHECKING:
    from migrate.adapters.aws_observability import AlarmSpec, Observability

PROJECT = "betterprompts"


class ObservabilityStep(Step):
    """SLO alarms on the plan's criteria, an SNS alert topic, the cutover dashboard, log groups with retention.

    Alarms (all named ``<project>-<env>-…``, so the cutover gates find them): ALB target response time p95 and 5xx
    count, healthy host count (when the load balancer is known — from `ingress` or the settings); RDS CPU, free
    storage, connections and replica lag; ElastiCache memory and evictions on every member of the replication group.
    Thresholds default to the plan's success criteria (`[targets]`). `pre-cutover-check`, every `dns-cutover` stage
    and `post-cutover-watch` fail (and revert where they revert) while any of these alarms is in ALARM.
    Rollback deletes the alarms, dashboard and topic this step created; log groups are kept (they hold logs).
    """

    id = "observability"
    title = "SLO alarms, alert topic, dashboard, log retention"
    phase = 3
    depends_on = ("rds", "elasticache", "ingress")
    reversibility = Reversibility.COMPENSABLE
    retry = RetryPolicy(attempts=3)

    class Settings(StepSettings):
        subscribers: list[str] = Field(
            default_factory=list, description="alert topic subscribers (emails or ARNs/URLs)"
        )
        alb_arn_suffix: str | None = Field(
            None, description="ALB CloudWatch dimension app/<name>/<id> (default: from ingress)"
        )
        target_group_arn_suffix: str | None = Field(None, description="target group dimension for HealthyHostCount")
        max_5xx_per_minute: float = Field(10, ge=0, description="ALB target 5xx responses per minute that alarm")
        rds_cpu_pct: float = Field(80, gt=0, le=100, description="RDS CPU utilisation that alarms")
        rds_free_storage_gib: float = Field(5, gt=0, description="RDS free storage below which it alarms")
        rds_max_connections: float = Field(400, gt=0, description="RDS connections that alarm")
        rds_replica_lag_s: float = Field(30, gt=0, description="RDS replica/replication lag that alarms")
        redis_memory_pct: float = Field(80, gt=0, le=100, description="ElastiCache memory usage that alarms")
        log_retention_days: int = Field(90, ge=1, description="retention of the cluster and application log groups")

    # -- decisions ---------------------------------------------------------------------------------------------
    @staticmethod
    def prefix(ctx: StepContext) -> str:
        return f"{PROJECT}-{ctx.env_name}-"

    def _alb(self, ctx: StepContext) -> str | None:
        s = ctx.typed(self.Settings)
        if s.alb_arn_suffix:
            return s.alb_arn_suffix
        arn = str(ctx.output("ingress", "alb_arn", "") or ctx.output("ingress", "alb_arn_suffix", "") or "")
        return arn.split("loadbalancer/", 1)[-1] if arn else None

    def alarm_specs(self, ctx: StepContext, members: list[str]) -> list[AlarmSpec]:
        from migrate.adapters.aws_observability import AlarmSpec

        s = ctx.typed(self.Settings)
        targets = ctx.targets
        p = self.prefix(ctx)
        specs: list[AlarmSpec] = []
        alb = self._alb(ctx)
        if alb:
            lb = (("LoadBalancer", alb),)
            specs += [
                AlarmSpec(
                    f"{p}api-p95",
                    "AWS/ApplicationELB",
                    "TargetResponseTime",
                    targets.api_p95_ms / 1000,
                    statistic="p95",
                    dimensions=lb,
                    description=f"API p95 above {targets.api_p95_ms:g} ms (plan criterion)",
                ),
                AlarmSpec(
                    f"{p}api-5xx",
                    "AWS/ApplicationELB",
                    "HTTPCode_Target_5XX_Count",
                    s.max_5xx_per_minute,
                    statistic="Sum",
                    dimensions=lb,
                    description="target 5xx responses per minute",
                ),
            ]
            if s.target_group_arn_suffix:
                specs.append(
                    AlarmSpec(
                        f"{p}healthy-hosts",
                        "AWS/ApplicationELB",
                        "HealthyHostCount",
                        1,
                        "LessThanThreshold",
                        "Minimum",
                        dimensions=(*lb, ("TargetGroup", s.target_group_arn_suffix)),
                        description="no healthy target behind the load balancer",
                    )
                )
        instance = ctx.output("rds", "instance_id", None)
        if instance:
            db = (("DBInstanceIdentifier", str(instance)),)
            specs += [
                AlarmSpec(
                    f"{p}rds-cpu", "AWS/RDS", "CPUUtilization", s.rds_cpu_pct, dimensions=db, description="RDS CPU"
                ),
                AlarmSpec(
                    f"{p}rds-free-storage",
                    "AWS/RDS",
                    "FreeStorageSpace",
                    s.rds_free_storage_gib * 2**30,
                    "LessThanThreshold",
                    "Minimum",
                    dimensions=db,
                    description="RDS free storage",
                ),
                AlarmSpec(
                    f"{p}rds-connections",
                    "AWS/RDS",
                    "DatabaseConnections",
                    s.rds_max_connections,
                    statistic="Maximum",
                    dimensions=db,
                    description="RDS connections",
                ),
                AlarmSpec(
                    f"{p}rds-replica-lag",
                    "AWS/RDS",
                    "ReplicaLag",
                    s.rds_replica_lag_s,
                    statistic="Maximum",
                    dimensions=db,
                    description="RDS replica/replication lag",
                ),
            ]
        for member in members:
            node = (("CacheClusterId", member),)
            specs += [
                AlarmSpec(
                    f"{p}redis-memory-{member}",
                    "AWS/ElastiCache",
                    "DatabaseMemoryUsagePercentage",
                    s.redis_memory_pct,
                    statistic="Maximum",
                    dimensions=node,
                    description="ElastiCache memory",
                ),
                AlarmSpec(
                    f"{p}redis-evictions-{member}",
                    "AWS/ElastiCache",
                    "Evictions",
                    0,
                    statistic="Sum",
                    dimensions=node,
                    description="ElastiCache evictions",
                ),
            ]
        return specs

    def _members(self, ctx: StepContext) -> list[str]:
        group = ctx.output("elasticache", "replication_group_id", None)
        if not group:
            return []
        groups = ctx.adapters.get("aws_audit").replication_groups()
        found = next((g for g in groups if g.get("ReplicationGroupId") == group), None)
        return [str(m) for m in (found or {}).get("MemberClusters", [])]

    def _log_groups(self, ctx: StepContext) -> list[str]:
        cluster = f"{PROJECT}-{ctx.env_name}"
        return [f"/aws/eks/{cluster}/cluster", f"/{PROJECT}/{ctx.env_name}/app"]

    @staticmethod
    def _obs(ctx: StepContext) -> Observability:
        return ctx.adapters.get("aws_observability")  # type: ignore[no-any-return]

    # -- the contract ------------------------------------------------------------------------------------------
    def plan(self, ctx: StepContext) -> PlanResult:
        obs = self._obs(ctx)
        specs = self.alarm_specs(ctx, self._members(ctx))
        existing = {a.name for a in obs.alarms(self.prefix(ctx))}
        result = PlanResult(data={"alarms": sorted(s.name for s in specs)})
        for spec in specs:
            action = "update" if spec.name in existing else "create"
            result.changes.append(
                Change(action, f"alarm {spec.name}", f"{spec.metric} {spec.statistic} vs {spec.threshold:g}")
            )
        topic = f"{self.prefix(ctx)}alerts"
        if obs.topic_arn(topic) is None:
            result.changes.append(Change("create", f"SNS topic {topic}"))
        result.changes.append(Change("update", f"dashboard {self.prefix(ctx)}cutover"))
        if not self._alb(ctx):
            result.unknown.append("ALB alarms: no load balancer known yet (ingress not applied; or set alb_arn_suffix)")
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        s = ctx.typed(self.Settings)
        obs = self._obs(ctx)
        prefix = self.prefix(ctx)
        topic_name = f"{prefix}alerts"
        created_topic = obs.topic_arn(topic_name) is None
        ctx.intent("ensure-topic", topic=topic_name)
        topic = obs.ensure_topic(topic_name, s.subscribers)
        specs = self.alarm_specs(ctx, self._members(ctx))
        ctx.intent("put-alarms", alarms=[spec.name for spec in specs])
        for spec in specs:
            obs.put_alarm(spec, topic)
        widgets = [
            {
                "type": "metric",
                "width": 12,
                "height": 6,
                "properties": {
                    "title": spec.description or spec.name,
                    "region": ctx.env.aws.region,
                    "metrics": [[spec.namespace, spec.metric, *[x for d in spec.dimensions for x in d]]],
                    "stat": spec.statistic,
                },
            }
            for spec in specs
        ]
        obs.put_dashboard(f"{prefix}cutover", widgets)
        for group in self._log_groups(ctx):
            obs.ensure_log_group(group, s.log_retention_days)
        return {
            "alarm_prefix": prefix,
            "alarms": sorted(spec.name for spec in specs),
            "topic_arn": topic,
            "created_topic": created_topic,
            "dashboard": f"{prefix}cutover",
            "log_groups": self._log_groups(ctx),
            "alb_alarms": bool(self._alb(ctx)),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        s = ctx.typed(self.Settings)
        obs = self._obs(ctx)
        prefix = self.prefix(ctx)
        wanted = {spec.name: spec for spec in self.alarm_specs(ctx, self._members(ctx))}
        live = {a.name: a for a in obs.alarms(prefix)}
        topic = obs.topic_arn(f"{prefix}alerts")
        checks = [
            Check(
                "every SLO alarm exists",
                set(wanted) <= set(live),
                sorted(set(wanted) - set(live)) or "all",
                "none missing",
            ),
            Check(
                "alarms notify the alert topic",
                bool(topic) and all(topic in live[n].actions for n in wanted if n in live),
                topic or "no topic",
                "every alarm's action",
            ),
            Check(
                "alarm thresholds as configured",
                all(live[n].threshold == spec.threshold for n, spec in wanted.items() if n in live),
                {n: live[n].threshold for n in wanted if n in live},
                {n: spec.threshold for n, spec in wanted.items()},
            ),
            Check("cutover dashboard exists", obs.dashboard_exists(f"{prefix}cutover"), f"{prefix}cutover", "present"),
        ]
        for group in self._log_groups(ctx):
            days = obs.log_group_retention(group)
            checks.append(
                Check(f"log group {group} retention", days == s.log_retention_days, days, s.log_retention_days)
            )
        if s.subscribers and topic:
            endpoints = {sub.get("Endpoint") for sub in obs.subscriptions(topic)}
            checks.append(
                Check(
                    "alert subscribers",
                    set(s.subscribers) <= endpoints,
                    sorted(e for e in endpoints if e),
                    s.subscribers,
                )
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Delete the alarms and the dashboard, and the topic when this step created it; keep the log groups."""
        obs = self._obs(ctx)
        prefix = self.prefix(ctx)
        names = [a.name for a in obs.alarms(prefix)]
        ctx.intent("delete-alarms", alarms=names)
        obs.delete_alarms(names)
        obs.delete_dashboard(f"{prefix}cutover")
        if ctx.output(self.id, "created_topic", False):
            arn = obs.topic_arn(f"{prefix}alerts")
            if arn:
                obs.delete_topic(arn)

    def summary(self, outputs: Mapping[str, Any]) -> str:
        alarms = outputs.get("alarms") or []
        alb = "" if outputs.get("alb_alarms") else " · ALB alarms pending"
        return f"{len(alarms)} alarms · dashboard · topic{alb}"
