"""Phase 1 — foundation: AWS accounts, Identity Center check, Terraform state backend, VPC, EKS, kubeconfig,
cluster add-ons and the cluster smoke test (the migration guide's weeks 1–2).

Steps talk to adapters only: ``aws_foundation`` (Organizations, SSO admin, S3, DynamoDB, EC2/EKS read-backs),
``terraform`` (through :class:`phases._terraform_step.TerraformModuleStep`) and ``kube``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from migrate.errors import GateWaiting, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, RetryPolicy, Reversibility, Step, StepContext
from phases._terraform_step import TerraformModuleStep

if TYPE_CHECKING:
    from migrate.adapters.aws_foundation import AwsFoundation
    from migrate.adapters.kube import KubeAdapter

PROJECT = "betterprompts"
ACCOUNT_ENVS = ("development", "staging", "production")
STAND_IN_NOTE = "stand-in: verified against terraform state, not AWS"


def _aws(ctx: StepContext) -> AwsFoundation:
    return ctx.adapters.get("aws_foundation")  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------------------
# aws-accounts
# ---------------------------------------------------------------------------------------------------------------
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
    retry = RetryPolicy(attempts=3)
    timeout = 1800.0

    def _names(self, ctx: StepContext) -> dict[str, tuple[str, str]]:
        envs = list(ctx.setting("environments", ACCOUNT_ENVS))
        name_t = str(ctx.setting("account_name_template", PROJECT + "-{env}"))
        email_t = str(ctx.setting("email_template", "aws+" + PROJECT + "-{env}@example.com"))
        return {env: (name_t.format(env=env), email_t.format(env=env)) for env in envs}

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
        interval = float(ctx.setting("poll_seconds", 0.2 if aws.is_emulated else 10))
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


# ---------------------------------------------------------------------------------------------------------------
# sso-check
# ---------------------------------------------------------------------------------------------------------------
SSO_MANUAL = (
    "IAM Identity Center cannot be enabled through the API: sign in to the management account's console, open "
    "IAM Identity Center and choose Enable (once per organization), then re-run: "
)


class SsoCheck(Step):
    """IAM Identity Center (SSO) is enabled in the organization (read-only; a manual gate when it is not)."""

    id = "sso-check"
    title = "IAM Identity Center enabled"
    phase = 1
    depends_on = ("aws-accounts",)
    reversibility = Reversibility.REVERSIBLE

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


# ---------------------------------------------------------------------------------------------------------------
# tf-state-backend
# ---------------------------------------------------------------------------------------------------------------
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
    retry = RetryPolicy(attempts=3)

    def _names(self, ctx: StepContext, aws: AwsFoundation) -> tuple[str, str, str]:
        bucket = ctx.setting("bucket") or f"{PROJECT}-tfstate-{aws.account_id()}-{aws.region}"
        table = str(ctx.setting("lock_table", f"{PROJECT}-terraform-locks"))
        key = str(ctx.setting("state_key", f"{PROJECT}/terraform.tfstate"))
        return str(bucket), table, key

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
            aws.enable_encryption(bucket, ctx.setting("kms_key_id"))
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
        problems: list[str] = []
        if aws.table_state(table).exists:
            items = aws.table_item_count(table)
            if items:
                problems.append(f"lock table {table} holds {items} item(s) (a lock or state digests)")
            else:
                ctx.intent("delete-lock-table", table=table)
                aws.delete_table(table)
        if aws.bucket_state(bucket).exists:
            objects = aws.bucket_object_count(bucket)
            if objects:
                problems.append(f"bucket s3://{bucket} holds {objects}+ object version(s) (Terraform state)")
            else:
                ctx.intent("delete-bucket", bucket=bucket)
                aws.delete_bucket(bucket)
        if problems:
            raise StepFailed(
                "tf-state-backend rollback kept what is not empty: " + "; ".join(problems),
                "the state backend is deleted only when empty, so no Terraform state is ever lost",
                "roll back the Terraform steps first (bpmigrate rollback --phase 1), or empty them by hand",
            )


# ---------------------------------------------------------------------------------------------------------------
# vpc, eks (Terraform)
# ---------------------------------------------------------------------------------------------------------------
class Vpc(TerraformModuleStep):
    """VPC with public and private subnets in each AZ (Terraform module.vpc; verified with EC2 describe calls)."""

    id = "vpc"
    title = "VPC and subnets (Terraform)"
    phase = 1
    depends_on = ("tf-state-backend",)
    module = "module.vpc"
    output_map: ClassVar[dict[str, str]] = {
        "vpc_id": "vpc_id",
        "private_subnet_ids": "private_subnet_ids",
        "public_subnet_ids": "public_subnet_ids",
    }

    def verify(self, ctx: StepContext) -> list[Check]:
        if self.stand_in(ctx):
            return self.verify_terraform_state(ctx)
        aws = _aws(ctx)
        vpc_id = str(ctx.output(self.id, "vpc_id"))
        private = list(ctx.output(self.id, "private_subnet_ids"))
        public = list(ctx.output(self.id, "public_subnet_ids"))
        vpc = aws.vpc(vpc_id)
        found = {s["SubnetId"] for s in aws.subnets(vpc_id)} if vpc else set()
        missing = [s for s in private + public if s not in found]
        azs = {s.get("AvailabilityZone") for s in aws.subnets(vpc_id) if s["SubnetId"] in private} if vpc else set()
        return [
            *self.verify_state_object(ctx),
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


class Eks(TerraformModuleStep):
    """EKS cluster with system, application and GPU node groups (Terraform module.eks; verified with the EKS API)."""

    id = "eks"
    title = "EKS cluster + node groups (Terraform)"
    phase = 1
    depends_on = ("vpc",)
    module = "module.eks"
    output_map: ClassVar[dict[str, str]] = {
        "cluster_name": "eks_cluster_name",
        "cluster_endpoint": "eks_cluster_endpoint",
        "cluster_ca": "eks_cluster_certificate_authority",
        "oidc_provider_arn": "eks_oidc_provider_arn",
        "node_groups": "eks_node_groups",
    }

    def verify(self, ctx: StepContext) -> list[Check]:
        if self.stand_in(ctx):
            return self.verify_terraform_state(ctx)
        aws = _aws(ctx)
        name = str(ctx.output(self.id, "cluster_name"))
        expected_groups: dict[str, str] = dict(ctx.output(self.id, "node_groups", {}) or {})
        required = list(ctx.setting("required_node_groups", ["system", "application", "gpu"]))
        gpu_role = str(ctx.setting("gpu_node_group", "gpu"))
        taint_key = str(ctx.setting("gpu_taint_key", "nvidia.com/gpu"))
        cluster = aws.eks_cluster(name)
        status = (cluster or {}).get("status")
        checks = [
            Check("EKS cluster ACTIVE", status == "ACTIVE", observed=status or "absent", expected="ACTIVE", detail=name)
        ]
        checks += self.verify_state_object(ctx)
        groups = {ng["nodegroupName"]: ng for ng in aws.eks_nodegroups(name)} if cluster else {}
        for role in required:
            ng_name = expected_groups.get(role, role)
            ng = groups.get(ng_name)
            checks.append(
                Check(
                    f"node group {role} ({ng_name})",
                    ng is not None and ng.get("status") == "ACTIVE",
                    observed=(ng or {}).get("status", "absent"),
                    expected="ACTIVE",
                )
            )
        gpu = groups.get(expected_groups.get(gpu_role, gpu_role))
        taints = (gpu or {}).get("taints", [])
        labels = (gpu or {}).get("labels", {})
        checks.append(
            Check(
                "GPU node group tainted",
                any(t.get("key") == taint_key and t.get("effect") == "NO_SCHEDULE" for t in taints),
                observed=taints,
                expected=f"{taint_key}:NO_SCHEDULE",
            )
        )
        checks.append(
            Check(
                "GPU node group labelled",
                labels.get("node_group") == gpu_role,
                observed=labels,
                expected={"node_group": gpu_role},
            )
        )
        types = (gpu or {}).get("instanceTypes", [])
        checks.append(
            Check(
                "GPU instance types",
                bool(types) and all(str(t).startswith(("g4dn.", "g5.")) for t in types),
                observed=types,
                expected="g4dn.*/g5.*",
            )
        )
        return checks


# ---------------------------------------------------------------------------------------------------------------
# kubeconfig
# ---------------------------------------------------------------------------------------------------------------
class Kubeconfig(Step):
    """A kubeconfig context for the EKS cluster (added or updated in place; other contexts are never touched).

    The file is ``[steps.kubeconfig] path``, else the environment's ``kube.kubeconfig``, else
    ``state/<env>/kubeconfig`` — never the operator's ``~/.kube/config`` unless configured to.
    """

    id = "kubeconfig"
    title = "kubeconfig context for the cluster"
    phase = 1
    depends_on = ("eks",)
    reversibility = Reversibility.COMPENSABLE

    def _path(self, ctx: StepContext) -> Path:
        configured = ctx.setting("path") or ctx.env.kube.kubeconfig
        if configured:
            path = Path(str(configured)).expanduser()
            return path if path.is_absolute() else ctx.project_root / path
        return ctx.state_dir / ctx.env_name / "kubeconfig"

    def _context(self, ctx: StepContext) -> str:
        return str(ctx.env.kube.context or ctx.output("eks", "cluster_name"))

    def skip_reason(self, ctx: StepContext) -> str | None:
        hint = (
            f"to rehearse Kubernetes steps point [environments.{ctx.env_name}] kube = "
            "{ kubeconfig = ..., context = ... } at a cluster"
        )
        if ctx.upstream.get("eks", {}).get("terraform_providers") == "builtin":
            return f"the EKS cluster is a terraform_data stand-in without an API server; {hint}"
        return None

    def _contexts(self, path: Path) -> dict[str, dict[str, Any]]:
        import yaml

        if not path.is_file():
            return {}
        doc = yaml.safe_load(path.read_text()) or {}
        clusters = {c.get("name"): c.get("cluster", {}) for c in doc.get("clusters") or []}
        out: dict[str, dict[str, Any]] = {}
        for c in doc.get("contexts") or []:
            cluster_name = (c.get("context") or {}).get("cluster")
            out[str(c.get("name"))] = {"cluster": cluster_name, "server": clusters.get(cluster_name, {}).get("server")}
        return out

    def _exec_args(self, ctx: StepContext) -> list[str]:
        args = [
            "eks",
            "get-token",
            "--cluster-name",
            str(ctx.output("eks", "cluster_name")),
            "--region",
            ctx.env.aws.region,
        ]
        if ctx.env.aws.profile:
            args += ["--profile", ctx.env.aws.profile]
        return args

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        path = self._path(ctx)
        result = PlanResult(data={"path": str(path)})
        try:
            name = self._context(ctx)
            server = ctx.output("eks", "cluster_endpoint")
        except Exception:
            result.changes.append(Change("create", f"kubeconfig context in {path}"))
            result.unknown.append("cluster name and endpoint (after the eks step)")
            return result
        current = self._contexts(path).get(name)
        if current is None:
            result.changes.append(Change("create", f"context {name} in {path}", str(server)))
        elif current.get("server") != server:
            result.changes.append(Change("update", f"context {name} in {path}", f"{current.get('server')} -> {server}"))
        else:
            result.in_place.append(f"context {name} in {path} points at {server}")
        others = [c for c in self._contexts(path) if c != name]
        if others:
            result.in_place.append(f"other contexts kept untouched: {', '.join(sorted(others))}")
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        path = self._path(ctx)
        name = self._context(ctx)
        ctx.intent("write-kubeconfig-context", path=str(path), context=name)
        kube: KubeAdapter = ctx.adapters.kube()
        kube.write_kubeconfig_context(
            path,
            context=name,
            cluster=str(ctx.output("eks", "cluster_name")),
            server=str(ctx.output("eks", "cluster_endpoint")),
            ca_data=str(ctx.output("eks", "cluster_ca", "") or ""),
            exec_args=self._exec_args(ctx),
            namespace=ctx.env.kube.namespace,
        )
        return {"kubeconfig": str(path), "context": name}

    def verify(self, ctx: StepContext) -> list[Check]:
        path = self._path(ctx)
        name = self._context(ctx)
        found = self._contexts(path).get(name)
        server = ctx.output("eks", "cluster_endpoint")
        return [
            Check(f"context {name} in {path}", found is not None, observed=bool(found), expected=True),
            Check(
                "context points at the cluster",
                (found or {}).get("server") == server,
                observed=(found or {}).get("server"),
                expected=server,
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        ctx.log(
            f"kubeconfig: context {self._context(ctx)} left in {self._path(ctx)} (harmless; remove with kubectl config delete-context)"
        )


# ---------------------------------------------------------------------------------------------------------------
# cluster add-ons and smoke test (Kubernetes)
# ---------------------------------------------------------------------------------------------------------------
class _KubeStep(Step):
    """Skipped with the reason when no Kubernetes API is reachable."""

    def skip_reason(self, ctx: StepContext) -> str | None:
        kube: KubeAdapter = ctx.adapters.kube()
        return kube.unreachable_reason()


_PROTECTED_NAMESPACES = {"kube-system", "kube-public", "kube-node-lease", "default"}


class ClusterAddons(_KubeStep):
    """Cluster add-ons: metrics-server, cluster-autoscaler, AWS Load Balancer Controller (server-side apply of the
    manifests in templates/k8s/addons), verified by their Deployments becoming available."""

    id = "cluster-addons"
    title = "Cluster add-ons"
    phase = 1
    depends_on = ("kubeconfig",)
    reversibility = Reversibility.COMPENSABLE
    timeout = 1200.0

    def _docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        from migrate.adapters.manifests import render

        folder = ctx.templates_dir / str(ctx.setting("manifests", "k8s/addons"))  # an absolute setting wins
        eks = ctx.upstream.get("eks", {})
        values: dict[str, Any] = {
            "cluster_name": eks.get("cluster_name", f"{PROJECT}-{ctx.env_name}"),
            "region": ctx.env.aws.region,
            "aws_region": ctx.env.aws.region,
            "vpc_id": ctx.upstream.get("vpc", {}).get("vpc_id", ""),
            "env_name": ctx.env_name,
            "environment": ctx.env_name,
            "namespace": ctx.env.kube.namespace,
        }
        values.update(ctx.setting("values", {}) or {})
        if "account_id" not in values:
            accounts = ctx.upstream.get("aws-accounts", {}).get("accounts", {}) or {}
            values["account_id"] = ctx.env.aws.account_id or accounts.get(ctx.env_name) or _aws(ctx).account_id()
        return render(folder, values)

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        kube: KubeAdapter = ctx.adapters.kube()
        result = PlanResult()
        for doc in self._docs(ctx):
            meta = doc.get("metadata", {})
            ref = f"{doc.get('kind')}/{meta.get('namespace', '')}/{meta.get('name')}".replace("//", "/")
            current = kube.get(
                str(doc.get("apiVersion")), str(doc.get("kind")), str(meta.get("name")), meta.get("namespace")
            )
            if current is None:
                result.changes.append(Change("create", ref))
            else:
                result.changes.append(Change("update", ref, "server-side apply (no-op if unchanged)"))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        kube: KubeAdapter = ctx.adapters.kube()
        docs = self._docs(ctx)
        ctx.intent("kube-apply", objects=len(docs))
        refs = kube.apply(docs)
        timeout = float(ctx.setting("rollout_timeout", 300))
        workloads = [d for d in docs if d.get("kind") in ("Deployment", "DaemonSet", "StatefulSet")]
        for d in workloads:
            meta = d["metadata"]
            ctx.log(f"waiting for {d['kind']} {meta.get('namespace')}/{meta['name']}")
            kube.wait_rollout(str(d["kind"]), str(meta["name"]), str(meta.get("namespace", "kube-system")), timeout)
        return {
            "applied": refs,
            "workloads": [f"{d['kind']}/{d['metadata'].get('namespace')}/{d['metadata']['name']}" for d in workloads],
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.kube import rollout_status

        kube: KubeAdapter = ctx.adapters.kube()
        checks = []
        for d in self._docs(ctx):
            if d.get("kind") not in ("Deployment", "DaemonSet", "StatefulSet"):
                continue
            meta = d["metadata"]
            obj = kube.get(str(d["apiVersion"]), str(d["kind"]), str(meta["name"]), meta.get("namespace"))
            ok, why = rollout_status(obj) if obj else (False, "absent")
            checks.append(
                Check(
                    f"{d['kind']} {meta.get('namespace')}/{meta['name']} available",
                    ok,
                    observed=why,
                    expected="available",
                )
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        kube: KubeAdapter = ctx.adapters.kube()
        docs = self._docs(ctx)
        for d in reversed(docs):
            meta = d.get("metadata", {})
            if d.get("kind") == "Namespace" and meta.get("name") in _PROTECTED_NAMESPACES:
                continue
            ctx.intent("kube-delete", kind=d.get("kind"), name=meta.get("name"), namespace=meta.get("namespace"))
            kube.delete(str(d["apiVersion"]), str(d["kind"]), str(meta["name"]), meta.get("namespace"))


class ClusterSmoke(_KubeStep):
    """Cluster smoke test (the guide's nginx test): deploy nginx, scale to 3 then 10, check readiness, clean up."""

    id = "cluster-smoke"
    title = "Cluster smoke test (nginx)"
    phase = 1
    depends_on = ("cluster-addons",)
    reversibility = Reversibility.REVERSIBLE
    timeout = 1200.0

    def _ns(self, ctx: StepContext) -> str:
        return str(ctx.setting("namespace", "bpmigrate-smoke"))

    def _docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        ns = self._ns(ctx)
        labels = {"app": "nginx-smoke", "app.kubernetes.io/managed-by": "bpmigrate"}
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "nginx-smoke", "namespace": ns, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "nginx-smoke"}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "nginx",
                                    "image": str(ctx.setting("image", "nginx:1.27-alpine")),
                                    "ports": [{"containerPort": 80}],
                                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                }
                            ]
                        },
                    },
                },
            },
        ]

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        steps = list(ctx.setting("scale_steps", [3, 10]))
        return PlanResult(
            changes=[
                Change(
                    "run",
                    f"Deployment {self._ns(ctx)}/nginx-smoke",
                    f"deploy, scale to {' then '.join(map(str, steps))}, check readiness, delete",
                )
            ]
        )

    def apply(self, ctx: StepContext) -> Outputs:
        kube: KubeAdapter = ctx.adapters.kube()
        ns = self._ns(ctx)
        timeout = float(ctx.setting("rollout_timeout", 300))
        ctx.intent("smoke-deploy", namespace=ns)
        kube.apply(self._docs(ctx))
        kube.wait_rollout("Deployment", "nginx-smoke", ns, timeout)
        reached: list[int] = []
        for replicas in list(ctx.setting("scale_steps", [3, 10])):
            ctx.intent("smoke-scale", replicas=int(replicas))
            kube.scale("Deployment", "nginx-smoke", ns, int(replicas))
            kube.wait_rollout("Deployment", "nginx-smoke", ns, timeout)
            obj = kube.get("apps/v1", "Deployment", "nginx-smoke", ns) or {}
            ready = int(
                (obj.get("status") or {}).get("readyReplicas")
                or (obj.get("status") or {}).get("availableReplicas")
                or 0
            )
            if ready < int(replicas):
                raise StepFailed(
                    f"smoke test: {ready}/{replicas} nginx replicas ready",
                    "the cluster could not schedule the pods (capacity, autoscaler, or image pull)",
                    f"kubectl -n {ns} describe deployment nginx-smoke; then bpmigrate apply --step {self.id} --env {ctx.env_name}",
                )
            reached.append(ready)
            ctx.log(f"smoke: {ready}/{replicas} replicas ready")
        self._cleanup(ctx)
        return {"namespace": ns, "replicas_ready": reached, "cleaned_up": True}

    def _cleanup(self, ctx: StepContext) -> None:
        kube: KubeAdapter = ctx.adapters.kube()
        ns = self._ns(ctx)
        ctx.intent("smoke-cleanup", namespace=ns)
        kube.delete("apps/v1", "Deployment", "nginx-smoke", ns)
        if ns not in _PROTECTED_NAMESPACES:
            kube.delete("v1", "Namespace", ns)

    def verify(self, ctx: StepContext) -> list[Check]:
        kube: KubeAdapter = ctx.adapters.kube()
        ns = self._ns(ctx)
        leftover = kube.get("apps/v1", "Deployment", "nginx-smoke", ns)
        reached = list(ctx.upstream.get(self.id, {}).get("replicas_ready", []))
        want = list(ctx.setting("scale_steps", [3, 10]))
        checks = [
            Check("smoke deployment cleaned up", leftover is None, observed=leftover is not None, expected=False),
            Check(
                "API server answers", bool(kube.server_version()), observed=kube.server_version(), expected="a version"
            ),
        ]
        if reached:
            checks.append(
                Check("replicas became ready at each scale step", reached == want, observed=reached, expected=want)
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        self._cleanup(ctx)
