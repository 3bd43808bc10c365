"""Step ``vpc``: VPC with public and private subnets in each AZ (Terraform module.vpc; verified with EC2 describe calls)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migrate.step import Check, StepContext

from .._terraform_step import TerraformModuleStep
from ._common import _aws


class Vpc(TerraformModuleStep):
    """VPC with public and private subnets in each AZ (Terraform module.vpc; verified with EC2 describe calls)."""

    id = "vpc"
    title = "VPC and subnets (Terraform)"
    phase = 1
    depends_on = ("tf-state-backend",)
    #: the root names its outputs as the step does
    output_map = {name: name for name in ("vpc_id", "private_subnet_ids", "public_subnet_ids")}

    def summary(self, outputs: Mapping[str, Any]) -> str:
        private, public = list(outputs.get("private_subnet_ids") or []), list(outputs.get("public_subnet_ids") or [])
        return f"{outputs.get('vpc_id', '?')} · {len(private)} private + {len(public)} public subnet(s)"

    def verify_resources(self, ctx: StepContext) -> list[Check]:
        aws = _aws(ctx)
        vpc_id = str(ctx.output(self.id, "vpc_id"))
        private = list(ctx.output(self.id, "private_subnet_ids"))
        public = list(ctx.output(self.id, "public_subnet_ids"))
        vpc = aws.vpc(vpc_id)
        found = {s["SubnetId"] for s in aws.subnets(vpc_id)} if vpc else set()
        missing = [s for s in private + public if s not in found]
        azs = {s.get("AvailabilityZone") for s in aws.subnets(vpc_id) if s["SubnetId"] in private} if vpc else set()
        return [
            Check(
                "VPC exists", vpc is not None, observed=(vpc or {}).get("State"), expected="available", detail=vpc_id
            ),
            Check(
                "subnets exist in the VPC",
                bool(found) and not missing,
                observed=len(found),
                expected=len(private) + len(public),
                detail=", ".join(missing),
            ),
            Check(
                "private subnets span AZs",
                len(azs) >= min(2, len(private)),
                observed=sorted(a for a in azs if a),
                expected=">= 2 AZs",
            ),
        ]
