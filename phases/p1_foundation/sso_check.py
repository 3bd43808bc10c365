"""Step ``sso-check``: IAM Identity Center (SSO) is enabled in the organization (read-only; a manual gate when it is not)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migrate.errors import GateWaiting
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import SSO_MANUAL, _aws


class SsoCheck(Step):
    """IAM Identity Center (SSO) is enabled in the organization (read-only; a manual gate when it is not)."""

    id = "sso-check"
    title = "IAM Identity Center enabled"
    phase = 1
    depends_on = ("aws-accounts",)
    reversibility = Reversibility.REVERSIBLE

    def summary(self, outputs: Mapping[str, Any]) -> str:
        arn = str(outputs.get("instance_arn") or "?")
        return f"Identity Center {outputs.get('status', '?')} · {arn.rsplit('/', 1)[-1]}"

    def _next(self, ctx: StepContext) -> str:
        return f"bpmigrate apply --step {self.id} --env {ctx.env_name}"

    def plan(self, ctx: StepContext) -> PlanResult:
        instances = _aws(ctx).sso_instances()
        result = PlanResult(changes=[Change("run", "IAM Identity Center check", "read-only")])
        if instances:
            result.in_place.append(f"Identity Center instance {instances[0].get('InstanceArn')}")
        else:
            result.findings.append(
                Finding("block", "IAM Identity Center is not enabled (manual step)", SSO_MANUAL + self._next(ctx))
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        instances = _aws(ctx).sso_instances()
        if not instances:
            raise GateWaiting(
                "IAM Identity Center is not enabled in this organization",
                "operators sign in through Identity Center; enabling it is a one-time manual action in the console",
                SSO_MANUAL + self._next(ctx),
            )
        first = instances[0]
        return {
            "instance_arn": first.get("InstanceArn"),
            "identity_store_id": first.get("IdentityStoreId"),
            "status": first.get("Status", "ACTIVE"),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        instances = _aws(ctx).sso_instances()
        recorded = ctx.upstream.get(self.id, {}).get("instance_arn")
        found = [i for i in instances if recorded in (None, i.get("InstanceArn"))]
        ok = bool(found) and found[0].get("Status", "ACTIVE") == "ACTIVE"
        return [
            Check(
                "IAM Identity Center enabled",
                ok,
                observed=[i.get("InstanceArn") for i in instances],
                expected=recorded or "an ACTIVE instance",
            )
        ]

    def rollback(self, ctx: StepContext) -> None:
        return None  # read-only step: nothing to undo
