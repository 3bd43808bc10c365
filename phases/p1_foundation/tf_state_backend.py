"""Step ``tf-state-backend``: Terraform state backend: S3 bucket (versioned, encrypted, public access blocked) + DynamoDB lock table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from migrate.errors import StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

if TYPE_CHECKING:
    from migrate.adapters.aws_foundation import AwsFoundation
from ._common import AWS_RETRY, PROJECT, _aws


class TfStateBackend(Step):
    """Terraform state backend: S3 bucket (versioned, encrypted, public access blocked) + DynamoDB lock table.

    The bucket and table names come from ``[steps.tf-state-backend]`` (defaults: ``betterprompts-tfstate-
    <account>-<region>`` and ``betterprompts-terraform-locks``); existing ones are adopted and brought to the
    required settings. Rollback deletes them only when empty (no state object versions, no lock items).
    """

    id = "tf-state-backend"
    title = "Terraform state bucket + lock table"
    phase = 1
    reversibility = Reversibility.COMPENSABLE
    retry = AWS_RETRY

    class Settings(StepSettings):
        bucket: str | None = Field(None, description="state bucket (default: betterprompts-tfstate-<account>-<region>)")
        lock_table: str = Field(f"{PROJECT}-terraform-locks", description="DynamoDB lock table (hash key LockID)")
        state_key: str = Field(f"{PROJECT}/terraform.tfstate", description="object key of the Terraform state")
        kms_key_id: str | None = Field(None, description="KMS key for default encryption (default: SSE-S3, AES256)")

    def _names(self, ctx: StepContext, aws: AwsFoundation) -> tuple[str, str, str]:
        s = ctx.typed(self.Settings)
        bucket = s.bucket or f"{PROJECT}-tfstate-{aws.account_id()}-{aws.region}"
        return bucket, s.lock_table, s.state_key

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return f"s3://{outputs.get('bucket', '?')}/{outputs.get('state_key', '')} · lock table {outputs.get('lock_table', '?')}"

    def plan(self, ctx: StepContext) -> PlanResult:
        aws = _aws(ctx)
        bucket, table, key = self._names(ctx, aws)
        result = PlanResult(data={"bucket": bucket, "lock_table": table, "state_key": key})
        b = aws.bucket_state(bucket)
        if not b.exists:
            result.changes.append(Change("create", f"s3://{bucket}", "versioned, encrypted, public access blocked"))
        else:
            result.in_place.append(f"bucket s3://{bucket} exists")
            if b.versioning != "Enabled":
                result.changes.append(Change("update", f"s3://{bucket}", "enable versioning"))
            if not b.encryption:
                result.changes.append(Change("update", f"s3://{bucket}", "enable default encryption"))
            if not b.public_blocked:
                result.changes.append(Change("update", f"s3://{bucket}", "block all public access"))
        t = aws.table_state(table)
        if not t.exists:
            result.changes.append(Change("create", f"dynamodb table {table}", "hash key LockID (S), on-demand"))
        elif t.hash_key != "LockID" or t.hash_key_type != "S":
            result.findings.append(
                Finding(
                    "block",
                    f"DynamoDB table {table} exists with hash key {t.hash_key or '?'} ({t.hash_key_type or '?'})",
                    "Terraform's lock table needs hash key LockID of type S: choose another lock_table name in "
                    "[steps.tf-state-backend]",
                )
            )
        else:
            result.in_place.append(f"lock table {table} (LockID) exists")
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        aws = _aws(ctx)
        bucket, table, key = self._names(ctx, aws)
        b = aws.bucket_state(bucket)
        if not b.exists:
            ctx.intent("create-bucket", bucket=bucket, region=aws.region)
            aws.create_bucket(bucket)
        if b.versioning != "Enabled":
            ctx.intent("enable-versioning", bucket=bucket)
            aws.enable_versioning(bucket)
        if not b.encryption:
            ctx.intent("enable-encryption", bucket=bucket)
            aws.enable_encryption(bucket, ctx.typed(self.Settings).kms_key_id)
        if not b.public_blocked:
            ctx.intent("block-public-access", bucket=bucket)
            aws.block_public_access(bucket)
        t = aws.table_state(table)
        if t.exists and t.hash_key != "LockID":
            raise StepFailed(
                f"DynamoDB table {table} has hash key {t.hash_key}, not LockID",
                "Terraform's S3 backend locks with items keyed by LockID",
                "set another [steps.tf-state-backend] lock_table in migrate.toml and re-run",
            )
        if not t.exists or t.status != "ACTIVE":
            ctx.intent("create-lock-table", table=table)
            aws.create_lock_table(table)
        return {"bucket": bucket, "lock_table": table, "state_key": key, "region": aws.region}

    def verify(self, ctx: StepContext) -> list[Check]:
        aws = _aws(ctx)
        bucket, table, _ = self._names(ctx, aws)
        b = aws.bucket_state(bucket)
        t = aws.table_state(table)
        return [
            Check("state bucket exists", b.exists, observed=b.exists, expected=True, detail=f"s3://{bucket}"),
            Check("bucket versioning", b.versioning == "Enabled", observed=b.versioning or "off", expected="Enabled"),
            Check("bucket default encryption", bool(b.encryption), observed=b.encryption or "none", expected="on"),
            Check(
                "bucket public access blocked", b.public_blocked, observed=b.public_access_block, expected="all true"
            ),
            Check("lock table ACTIVE", t.status == "ACTIVE", observed=t.status or "absent", expected="ACTIVE"),
            Check(
                "lock table hash key LockID (S)",
                t.hash_key == "LockID" and t.hash_key_type == "S",
                observed=f"{t.hash_key}:{t.hash_key_type}",
                expected="LockID:S",
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        aws = _aws(ctx)
        bucket, table, _ = self._names(ctx, aws)
        # what each holds (None: it does not exist); only what holds nothing is deleted
        items = aws.table_item_count(table) if aws.table_state(table).exists else None
        objects = aws.bucket_object_count(bucket) if aws.bucket_state(bucket).exists else None
        if items == 0:
            ctx.intent("delete-lock-table", table=table)
            aws.delete_table(table)
        if objects == 0:
            ctx.intent("delete-bucket", bucket=bucket)
            aws.delete_bucket(bucket)
        problems: list[str] = []
        if items:
            problems.append(f"lock table {table} holds {items} item(s) (a lock or state digests)")
        if objects:
            problems.append(f"bucket s3://{bucket} holds {objects}+ object version(s) (Terraform state)")
        if problems:
            raise StepFailed(
                "tf-state-backend rollback kept what is not empty: " + "; ".join(problems),
                "the state backend is deleted only when empty, so no Terraform state is ever lost",
                "roll back the Terraform steps first (bpmigrate rollback --phase 1), or empty them by hand",
            )
