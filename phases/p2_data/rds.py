"""Step ``rds``: RDS PostgreSQL 16 (pgvector-capable) through Terraform module.rds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migrate.step import Check, Reversibility, StepContext

from ._common import _SandboxTargetStep, pg


class Rds(_SandboxTargetStep):
    """RDS PostgreSQL 16 (pgvector-capable) through Terraform module.rds.

    Outputs the endpoint used by every later data step when postgres.target.host = "from-terraform". In the sandbox
    the stand-in root's outputs point at the local target PostgreSQL; with the project's modules applied to moto,
    verify reads moto's instance back and the endpoint output is the local target PostgreSQL (``aws_endpoint`` keeps
    moto's address, ``endpoint_source`` says why).
    """

    kind = "postgres"

    id = "rds"
    phase = 2
    depends_on = ("vpc",)
    output_map = {"endpoint": "rds_endpoint", "port": "rds_port", "instance_id": "rds_instance_id"}
    reversibility = Reversibility.ONE_WAY  # destroying the database loses the migrated data

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return f"{outputs.get('instance_id', '?')} · {outputs.get('endpoint', '?')}:{outputs.get('port', '?')}"

    def verify_resources(self, ctx: StepContext) -> list[Check]:
        found = ctx.adapters.aws().call("rds", "describe_db_instances", DBInstanceIdentifier=ctx.output(self.id, "instance_id"))
        inst = (found.get("DBInstances") or [{}])[0]
        return [
            self.status_check("RDS instance available", inst.get("DBInstanceStatus"), "available"),
            self.status_check("engine postgres", inst.get("Engine"), "postgres"),
        ]

    def verify_service(self, ctx: StepContext) -> list[Check]:
        reason = pg(ctx, "target").unreachable_reason()
        return [Check("target PostgreSQL answers", reason is None, observed=reason or "ok", expected="ok")]
