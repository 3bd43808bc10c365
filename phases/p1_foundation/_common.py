"""Helpers shared by the phase-1 steps (no step lives here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrate.step import RetryPolicy, StepContext

if TYPE_CHECKING:
    from migrate.adapters.aws_foundation import AwsFoundation


PROJECT = "betterprompts"


ACCOUNT_ENVS = ("development", "staging", "production")

#: the account-level AWS API steps retry a TransientError (throttling, an API blip) up to three attempts
AWS_RETRY = RetryPolicy(attempts=3)


def _aws(ctx: StepContext) -> AwsFoundation:
    return ctx.adapters.get("aws_foundation")  # type: ignore[no-any-return]


SSO_MANUAL = (
    "IAM Identity Center cannot be enabled through the API: sign in to the management account's console, open "
    "IAM Identity Center and choose Enable (once per organization), then re-run: "
)
