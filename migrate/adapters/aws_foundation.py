"""AWS foundation: Organizations accounts, IAM Identity Center check, the Terraform state backend (S3 + DynamoDB),
and the EC2/EKS read-backs used to verify what Terraform built.

Built on :class:`migrate.adapters.aws.AwsAdapter` (``endpoint_url`` = the moto server in the sandbox and tests);
every botocore error is translated there. "Not found" answers are returned as ``None``, not raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrate.adapters.aws import AwsAdapter
from migrate.adapters.aws import from_config as aws_from_config
from migrate.errors import AdapterError, StepFailed

if TYPE_CHECKING:
    from migrate.config import EnvConfig

_PAB_KEYS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


@dataclass
class BucketState:
    name: str
    exists: bool
    versioning: str = ""  # "Enabled" | "Suspended" | ""
    encryption: str = ""  # "AES256" | "aws:kms" | ""
    public_access_block: dict[str, bool] = field(default_factory=dict)

    @property
    def public_blocked(self) -> bool:
        return all(self.public_access_block.get(k) for k in _PAB_KEYS)


@dataclass
class TerraformStateObject:
    """What a Terraform state object in S3 records, reduced to addresses (a state can hold secrets: values are
    never read out of this adapter)."""

    bucket: str
    key: str
    exists: bool
    serial: int = 0
    lineage: str = ""
    terraform_version: str = ""
    version_id: str = ""
    size: int = 0
    addresses: list[str] = field(default_factory=list)  # managed resources, e.g. module.vpc.aws_vpc.this

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass
class TableState:
    name: str
    exists: bool
    status: str = ""
    hash_key: str = ""
    hash_key_type: str = ""
    billing_mode: str = ""


class AwsFoundation:
    def __init__(self, aws: AwsAdapter, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.aws = aws
        self._sleep = sleep

    @property
    def region(self) -> str:
        return self.aws.region

    @property
    def is_emulated(self) -> bool:
        return self.aws.is_emulated

    def _maybe(self, service: str, op: str, missing: set[str], **kw: Any) -> Any:
        """Call an operation; the error codes in ``missing`` mean "absent" and return None."""
        from botocore.exceptions import ClientError

        fn = getattr(self.aws.client(service), op)

        def call() -> Any:
            try:
                return fn(**kw)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
                if code in missing or status in missing:
                    return None
                raise

        return self.aws.guard(f"{service}.{op}", call)

    def account_id(self) -> str:
        return self.aws.account_id()

    # -- Organizations -----------------------------------------------------------------------------------------
    def organization(self) -> dict[str, Any] | None:
        res = self._maybe("organizations", "describe_organization", {"AWSOrganizationsNotInUseException"})
        return None if res is None else dict(res["Organization"])

    def create_organization(self) -> dict[str, Any]:
        res = self._maybe("organizations", "create_organization", {"AlreadyInOrganizationException"}, FeatureSet="ALL")
        org = self.organization() if res is None else dict(res["Organization"])
        if org is None:
            raise AdapterError("AWS Organizations: organization not found after creation", "", "re-run", service="aws")
        return org

    def accounts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"NextToken": token} if token else {}
            res = self.aws.call("organizations", "list_accounts", **kw)
            out.extend(res.get("Accounts", []))
            token = res.get("NextToken")
            if not token:
                return out

    def account_by_name(self, name: str) -> dict[str, Any] | None:
        for acct in self.accounts():
            if acct.get("Name") == name:
                return acct
        return None

    def describe_account(self, account_id: str) -> dict[str, Any] | None:
        res = self._maybe("organizations", "describe_account", {"AccountNotFoundException"}, AccountId=account_id)
        return None if res is None else dict(res["Account"])

    def pending_account_request(self, name: str) -> str | None:
        """The id of an in-progress CreateAccount request for ``name`` (after a crash mid-creation)."""
        res = self.aws.call("organizations", "list_create_account_status", States=["IN_PROGRESS"])
        for status in res.get("CreateAccountStatuses", []):
            if status.get("AccountName") == name:
                return str(status["Id"])
        return None

    def start_create_account(self, name: str, email: str) -> str:
        res = self.aws.call("organizations", "create_account", Email=email, AccountName=name)
        return str(res["CreateAccountStatus"]["Id"])

    def wait_create_account(self, request_id: str, *, timeout: float = 900, interval: float = 5) -> str:
        """Wait for a CreateAccount request; return the new account id or raise with AWS's failure reason."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.aws.call("organizations", "describe_create_account_status", CreateAccountRequestId=request_id)[
                "CreateAccountStatus"
            ]
            state = res.get("State")
            if state == "SUCCEEDED":
                return str(res["AccountId"])
            if state == "FAILED":
                reason = res.get("FailureReason", "unknown")
                raise StepFailed(
                    f"AWS could not create account {res.get('AccountName')}: {reason}",
                    "EMAIL_ALREADY_EXISTS means the address belongs to another account (use another, or invite it)",
                    "fix the email in [steps.aws-accounts] of migrate.toml and re-run the step",
                )
            if time.monotonic() > deadline:
                raise AdapterError(
                    f"account creation {request_id} still {state} after {timeout:.0f}s",
                    "AWS Organizations is slow to create accounts at times",
                    "re-run the step later: it waits for the same request instead of creating another account",
                    service="aws",
                )
            self._sleep(interval)

    # -- IAM Identity Center -------------------------------------------------------------------------------------
    def sso_instances(self) -> list[dict[str, Any]]:
        res = self.aws.call("sso-admin", "list_instances")
        return [dict(i) for i in res.get("Instances", [])]

    # -- S3 state bucket ---------------------------------------------------------------------------------------
    def bucket_state(self, name: str) -> BucketState:
        head = self._maybe("s3", "head_bucket", {"404", "NoSuchBucket", "NotFound"}, Bucket=name)
        if head is None:
            return BucketState(name, exists=False)
        ver = self.aws.call("s3", "get_bucket_versioning", Bucket=name)
        enc = self._maybe(
            "s3", "get_bucket_encryption", {"ServerSideEncryptionConfigurationNotFoundError"}, Bucket=name
        )
        algo = ""
        if enc:
            rules = enc.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
            if rules:
                algo = str(rules[0].get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm", ""))
        pab = self._maybe("s3", "get_public_access_block", {"NoSuchPublicAccessBlockConfiguration"}, Bucket=name)
        conf = dict(pab.get("PublicAccessBlockConfiguration", {})) if pab else {}
        return BucketState(name, True, str(ver.get("Status", "")), algo, {k: bool(conf.get(k)) for k in _PAB_KEYS})

    def create_bucket(self, name: str) -> None:
        kw: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self._maybe("s3", "create_bucket", {"BucketAlreadyOwnedByYou"}, **kw)

    def enable_versioning(self, name: str) -> None:
        self.aws.call("s3", "put_bucket_versioning", Bucket=name, VersioningConfiguration={"Status": "Enabled"})

    def enable_encryption(self, name: str, kms_key_id: str | None = None) -> None:
        default: dict[str, Any] = (
            {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_id} if kms_key_id else {"SSEAlgorithm": "AES256"}
        )
        self.aws.call(
            "s3",
            "put_bucket_encryption",
            Bucket=name,
            ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": default}]},
        )

    def block_public_access(self, name: str) -> None:
        self.aws.call(
            "s3", "put_public_access_block", Bucket=name, PublicAccessBlockConfiguration=dict.fromkeys(_PAB_KEYS, True)
        )

    def bucket_object_count(self, name: str) -> int:
        """Object versions + delete markers (a versioned bucket is empty only when both are zero)."""
        res = self.aws.call("s3", "list_object_versions", Bucket=name, MaxKeys=10)
        return len(res.get("Versions", [])) + len(res.get("DeleteMarkers", []))

    def delete_bucket(self, name: str) -> bool:
        return self._maybe("s3", "delete_bucket", {"NoSuchBucket", "404"}, Bucket=name) is not None

    # -- DynamoDB lock table -----------------------------------------------------------------------------------
    def table_state(self, name: str) -> TableState:
        res = self._maybe("dynamodb", "describe_table", {"ResourceNotFoundException"}, TableName=name)
        if res is None:
            return TableState(name, exists=False)
        table = res["Table"]
        hash_key = next((k["AttributeName"] for k in table.get("KeySchema", []) if k.get("KeyType") == "HASH"), "")
        types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
        billing = str(table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"))
        return TableState(name, True, str(table.get("TableStatus", "")), hash_key, types.get(hash_key, ""), billing)

    def create_lock_table(self, name: str, *, timeout: float = 300) -> None:
        self._maybe(
            "dynamodb",
            "create_table",
            {"ResourceInUseException"},
            TableName=name,
            KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            Tags=[{"Key": "managed-by", "Value": "bpmigrate"}],
        )
        deadline = time.monotonic() + timeout
        while self.table_state(name).status != "ACTIVE":
            if time.monotonic() > deadline:
                raise AdapterError(
                    f"DynamoDB table {name} not ACTIVE after {timeout:.0f}s", "", "re-run", service="aws"
                )
            self._sleep(1)

    def table_item_count(self, name: str) -> int:
        res = self.aws.call("dynamodb", "scan", TableName=name, Limit=5, Select="COUNT")
        return int(res.get("Count", 0))

    def lock_items(self, name: str) -> list[dict[str, Any]]:
        res = self.aws.call("dynamodb", "scan", TableName=name, Limit=20)
        return [dict(i) for i in res.get("Items", [])]

    def delete_table(self, name: str) -> bool:
        return self._maybe("dynamodb", "delete_table", {"ResourceNotFoundException"}, TableName=name) is not None

    def terraform_state(self, bucket: str, key: str) -> TerraformStateObject:
        """Read a Terraform state object with S3 GetObject (not through Terraform): serial, lineage and the
        addresses of its managed resources. Values are dropped here, so no secret in the state leaves the adapter."""
        import json

        res = self._maybe("s3", "get_object", {"NoSuchKey", "NoSuchBucket", "404"}, Bucket=bucket, Key=key)
        if res is None:
            return TerraformStateObject(bucket, key, exists=False)
        body = res["Body"].read()
        try:
            doc = json.loads(body)
        except ValueError:
            raise AdapterError(
                f"s3://{bucket}/{key} is not a Terraform state (not JSON)",
                "the object at the state key was written by something other than Terraform",
                "inspect it: aws s3 cp s3://{bucket}/{key} - | head",
                service="s3",
            ) from None
        addresses = []
        for r in doc.get("resources", []):
            if r.get("mode") != "managed":
                continue
            prefix = f"{r['module']}." if r.get("module") else ""
            for inst in r.get("instances", []) or [{}]:
                index = inst.get("index_key")
                suffix = "" if index is None else (f'["{index}"]' if isinstance(index, str) else f"[{index}]")
                addresses.append(f"{prefix}{r.get('type')}.{r.get('name')}{suffix}")
        return TerraformStateObject(
            bucket,
            key,
            exists=True,
            serial=int(doc.get("serial", 0)),
            lineage=str(doc.get("lineage", "")),
            terraform_version=str(doc.get("terraform_version", "")),
            version_id=str(res.get("VersionId") or ""),
            size=len(body),
            addresses=addresses,
        )

    # -- EC2 / EKS read-backs ----------------------------------------------------------------------------------
    def vpc(self, vpc_id: str) -> dict[str, Any] | None:
        res = self._maybe("ec2", "describe_vpcs", {"InvalidVpcID.NotFound"}, VpcIds=[vpc_id])
        vpcs = res.get("Vpcs", []) if res else []
        return dict(vpcs[0]) if vpcs else None

    def subnets(self, vpc_id: str) -> list[dict[str, Any]]:
        res = self.aws.call("ec2", "describe_subnets", Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
        return [dict(s) for s in res.get("Subnets", [])]

    def eks_cluster(self, name: str) -> dict[str, Any] | None:
        res = self._maybe("eks", "describe_cluster", {"ResourceNotFoundException"}, name=name)
        return None if res is None else dict(res["cluster"])

    def eks_nodegroups(self, cluster: str) -> list[dict[str, Any]]:
        names = self.aws.call("eks", "list_nodegroups", clusterName=cluster).get("nodegroups", [])
        out = []
        for ng in names:
            res = self._maybe(
                "eks", "describe_nodegroup", {"ResourceNotFoundException"}, clusterName=cluster, nodegroupName=ng
            )
            if res is not None:
                out.append(dict(res["nodegroup"]))
        return out

    def eks_addon(self, cluster: str, name: str) -> dict[str, Any] | None:
        """An EKS managed add-on (status, version, configurationValues, serviceAccountRoleArn), or None."""
        res = self._maybe("eks", "describe_addon", {"ResourceNotFoundException"}, clusterName=cluster, addonName=name)
        return None if res is None else dict(res["addon"])

    # -- IAM read-backs ----------------------------------------------------------------------------------------
    def iam_role(self, name: str) -> dict[str, Any] | None:
        """An IAM role with its trust policy (``AssumeRolePolicyDocument``, a dict) and the ARNs of its attached
        policies (``AttachedPolicyArns``), or None when it does not exist."""
        import json
        from urllib.parse import unquote

        res = self._maybe("iam", "get_role", {"NoSuchEntity"}, RoleName=name)
        if res is None:
            return None
        role = dict(res["Role"])
        trust = role.get("AssumeRolePolicyDocument")
        if isinstance(trust, str):  # boto3 decodes it; a raw API answer is URL-encoded JSON
            role["AssumeRolePolicyDocument"] = json.loads(unquote(trust))
        attached = self.aws.call("iam", "list_attached_role_policies", RoleName=name).get("AttachedPolicies", [])
        role["AttachedPolicyArns"] = [p["PolicyArn"] for p in attached]
        return role


def from_config(env: EnvConfig, **_: Any) -> AwsFoundation:
    return AwsFoundation(aws_from_config(env))
