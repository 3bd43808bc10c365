"""Helpers shared by the phase-1 steps (no step lives here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrate.step import Step, StepContext

if TYPE_CHECKING:
    from migrate.adapters.aws_foundation import AwsFoundation
    from migrate.adapters.kube import KubeAdapter


PROJECT = "betterprompts"


ACCOUNT_ENVS = ("development", "staging", "production")


STAND_IN_NOTE = "stand-in: verified against terraform state, not AWS"


def _aws(ctx: StepContext) -> AwsFoundation:
    return ctx.adapters.get("aws_foundation")  # type: ignore[no-any-return]


SSO_MANUAL = (
    "IAM Identity Center cannot be enabled through the API: sign in to the management account's console, open "
    "IAM Identity Center and choose Enable (once per organization), then re-run: "
)


class _KubeStep(Step):
    """Skipped with the reason when no Kubernetes API is reachable."""

    def skip_reason(self, ctx: StepContext) -> str | None:
        kube: KubeAdapter = ctx.adapters.kube()
        return kube.unreachable_reason()


_PROTECTED_NAMESPACES = {"kube-system", "kube-public", "kube-node-lease", "default"}


