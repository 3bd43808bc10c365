"""Step ``aws-accounts``: AWS Organization and the development/staging/production member accounts (existing ones are adopted)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from ._common import ACCOUNT_ENVS, AWS_RETRY, PROJECT, _aws


class AwsAccounts(Step):
    """AWS Organization and the development/staging/production member accounts (existing ones are adopted).

    Creates the Organization (all features) when the management account has none, then one member account per
    environment named ``account_name_template`` (default ``betterprompts-{env}``) with the root e-mail
    ``email_template``. An account that already exists under that name is adopted, never re-created; a creation
    request still in progress after a crash is waited for, not repeated. Accounts are never closed by rollback
    (closing an AWS account is a 90-day, manual process): this step is one-way.
    """

    id = "aws-accounts"
    title = "AWS Organization + dev/staging/prod accounts"
    phase = 1
    reversibility = Reversibility.ONE_WAY
    retry = AWS_RETRY
    timeout = 1800.0

    class Settings(StepSettings):
        environments: list[str] = Field(
            default_factory=lambda: list(ACCOUNT_ENVS), description="one member account per environment name"
        )
        account_name_template: str = Field(PROJECT + "-{env}", description="member account name; {env} is replaced")
        email_template: str = Field(
            "aws+" + PROJECT + "-{env}@example.com",
            description="root e-mail of each account ({env} is replaced); must be mailboxes you own for real AWS",
        )
        poll_seconds: float | None = Field(
            None, gt=0, description="interval between CreateAccount status polls (default: 0.2 s on moto, 10 s on AWS)"
        )

    def _names(self, ctx: StepContext) -> dict[str, tuple[str, str]]:
        s = ctx.typed(self.Settings)
        return {
            env: (s.account_name_template.format(env=env), s.email_template.format(env=env)) for env in s.environments
        }

    def summary(self, outputs: Mapping[str, Any]) -> str:
        accounts = dict(outputs.get("accounts") or {})
        adopted = len(outputs.get("adopted") or [])
        return f"organization {outputs.get('organization_id', '?')} · {len(accounts)} account(s), {adopted} adopted"

    def plan(self, ctx: StepContext) -> PlanResult:
        aws = _aws(ctx)
        result = PlanResult()
        org = aws.organization()
        if org is None:
            result.changes.append(Change("create", "AWS Organization", "FeatureSet=ALL"))
            existing: dict[str, Any] = {}
        else:
            result.in_place.append(f"organization {org.get('Id')} (management account {org.get('MasterAccountId')})")
            if org.get("FeatureSet") != "ALL":
                result.findings.append(
                    Finding(
                        "warn", f"organization {org.get('Id')} has only consolidated billing", "enable all features"
                    )
                )
            caller = aws.account_id()
            if org.get("MasterAccountId") and caller != org.get("MasterAccountId"):
                result.findings.append(
                    Finding(
                        "block",
                        f"these credentials are account {caller}, not the organization's management account "
                        f"{org.get('MasterAccountId')}",
                        "run with credentials of the management account (aws.profile in migrate.toml)",
                    )
                )
            existing = {str(a.get("Name")): a for a in aws.accounts()}
        for env, (name, email) in self._names(ctx).items():
            if name in existing:
                result.in_place.append(f"account {name} ({existing[name].get('Id')}) adopted for {env}")
            else:
                result.changes.append(Change("create", f"account {name}", f"root e-mail {email}"))
                if not aws.is_emulated and email.endswith("@example.com"):
                    result.findings.append(
                        Finding(
                            "block",
                            f"account {name} would get the placeholder e-mail {email}",
                            "set [steps.aws-accounts] email_template in migrate.toml to mailboxes you own",
                        )
                    )
        result.data = {"accounts": {env: n for env, (n, _) in self._names(ctx).items()}}
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        aws = _aws(ctx)
        org = aws.organization()
        if org is None:
            ctx.intent("create-organization", feature_set="ALL")
            org = aws.create_organization()
        accounts: dict[str, str] = {}
        adopted: list[str] = []
        configured = ctx.typed(self.Settings).poll_seconds
        interval = configured if configured is not None else (0.2 if aws.is_emulated else 10.0)
        for env, (name, email) in self._names(ctx).items():
            acct = aws.account_by_name(name)
            if acct is not None:
                accounts[env] = str(acct["Id"])
                adopted.append(name)
                continue
            request = aws.pending_account_request(name)
            if request is None:
                ctx.intent("create-account", name=name, email=email)
                request = aws.start_create_account(name, email)
            ctx.log(f"waiting for account {name} (request {request})")
            accounts[env] = aws.wait_create_account(request, interval=interval)
        return {
            "organization_id": org.get("Id"),
            "management_account_id": org.get("MasterAccountId"),
            "accounts": accounts,
            "adopted": adopted,
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        aws = _aws(ctx)
        org = aws.organization()
        checks = [Check("organization exists", org is not None, observed=(org or {}).get("Id"), expected="o-…")]
        recorded: dict[str, str] = dict(ctx.upstream.get(self.id, {}).get("accounts", {}))
        names = self._names(ctx)
        for env, (name, _) in names.items():
            acct = aws.describe_account(recorded[env]) if env in recorded else aws.account_by_name(name)
            ok = acct is not None and acct.get("Name") == name and acct.get("Status") == "ACTIVE"
            checks.append(
                Check(
                    f"account {name} ({env}) ACTIVE",
                    ok,
                    observed=None if acct is None else f"{acct.get('Id')} {acct.get('Status')}",
                    expected="ACTIVE",
                )
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        ctx.log(
            "aws-accounts: accounts are never closed by bpmigrate (closing takes 90 days and is manual): "
            "aws organizations close-account --account-id <id>"
        )
