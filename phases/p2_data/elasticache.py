"""Step ``elasticache``: ElastiCache Redis 7 through Terraform module.elasticache (outputs the endpoint; in a sandbox applying the"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from migrate.step import Check, StepContext

from .._terraform_step import TerraformStepSettings
from ._common import _SandboxTargetStep, rds


class ElastiCache(_SandboxTargetStep):
    """ElastiCache Redis 7 through Terraform module.elasticache (outputs the endpoint; in a sandbox applying the
    project's modules to moto, the endpoint output is the local target Redis, as for :class:`Rds`)."""

    kind = "redis"

    id = "elasticache"
    phase = 2
    depends_on = ("vpc",)
    class Settings(TerraformStepSettings):
        """No settings: the group's shape (cluster mode, shards) comes from the Terraform variables, and the
        connection (tls, cluster_mode) from ``[environments.<env>.redis.target]``."""

    output_map: ClassVar[dict[str, str]] = {
        "endpoint": "elasticache_endpoint",
        "port": "elasticache_port",
        "replication_group_id": "elasticache_replication_group_id",
    }

    def verify_resources(self, ctx: StepContext) -> list[Check]:
        group = ctx.output(self.id, "replication_group_id")
        found = ctx.adapters.aws().call("elasticache", "describe_replication_groups", ReplicationGroupId=group)
        rg = (found.get("ReplicationGroups") or [{}])[0]
        return [self.status_check("replication group available", rg.get("Status"), "available")]

    def verify_service(self, ctx: StepContext) -> list[Check]:
        checks: list[Check] = []
        target = rds(ctx, "target")
        reason = target.unreachable_reason()
        checks.append(Check("target Redis answers PING", reason is None, observed=reason or "ok", expected="ok"))
        if reason is None:
            real = target.is_real_cluster()
            checks.append(
                Check(
                    "target Redis topology matches redis.target.cluster_mode",
                    real == target.cluster_mode,
                    observed="cluster" if real else "single node",
                    expected="cluster" if target.cluster_mode else "single node",
                )
            )
        return checks

    def summary(self, outputs: Mapping[str, Any]) -> str:
        parts = [f"{outputs.get('endpoint')}:{outputs.get('port')}"]
        if outputs.get("replication_group_id"):
            parts.append(f"group {outputs['replication_group_id']}")
        if outputs.get("aws_endpoint"):
            parts.append(f"AWS record {outputs['aws_endpoint']}")
        return " · ".join(parts)
