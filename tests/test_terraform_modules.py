"""The project's own Terraform (``terraform/``): static checks that always run, and — when the hashicorp/aws
provider is in a local filesystem mirror — the real modules planned, applied, re-planned and destroyed against the
moto server, plus the S3 backend with DynamoDB locking in moto.

Static checks use a small brace-aware HCL scanner (tests/tf_provider.py): no HCL library is a dependency.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.servers_plugin import moto_client
from tests.tf_provider import (
    API_OUTPUTS,
    STANDIN_DIR,
    TERRAFORM_DIR,
    HclError,
    ModuleInfo,
    TfWorkdir,
    actions_of,
    check_root,
    data_reads_of,
    mask,
    parse_blocks,
    provider_skip_reason,
    resources_of,
    terraform_binary,
    tfvars_keys,
    tfvars_string,
    var_args,
)

MODULES = ("vpc", "eks", "rds", "elasticache", "waf")
ENVIRONMENTS = ("development", "staging", "production")
ENV_DIR = TERRAFORM_DIR / "environments"
#: add-on -> the service account its IRSA role trusts (templates/k8s; the cost monitor runs in the app namespace)
IRSA_SUBJECTS = {
    "aws-load-balancer-controller": "system:serviceaccount:kube-system:aws-load-balancer-controller",
    "cluster-autoscaler": "system:serviceaccount:kube-system:cluster-autoscaler",
    "cost-monitor": "system:serviceaccount:betterprompts:cost-monitor",
    "ebs-csi-driver": "system:serviceaccount:kube-system:ebs-csi-controller-sa",
}
MANAGED_ADDONS = {"vpc-cni", "kube-proxy", "coredns", "metrics-server", "aws-ebs-csi-driver"}


def env_region(env: str) -> str:
    """The environment's aws.region in the repository's migrate.toml: bpmigrate passes it as -var aws_region."""
    import tomllib

    doc = tomllib.loads((TERRAFORM_DIR.parent / "migrate.toml").read_text())
    return str(doc["environments"][env]["aws"]["region"])


def _tf_files() -> list[Path]:
    return sorted(p for p in TERRAFORM_DIR.rglob("*.tf") if ".terraform" not in p.parts)


# ---------------------------------------------------------------------------------------------------------------
# static: always run
# ---------------------------------------------------------------------------------------------------------------
def test_layout_has_root_modules_and_environments() -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
        assert (TERRAFORM_DIR / name).is_file(), name
    for module in MODULES:
        for name in ("main.tf", "variables.tf", "outputs.tf"):
            assert (TERRAFORM_DIR / "modules" / module / name).is_file(), f"{module}/{name}"
    for env in ENVIRONMENTS:
        assert (ENV_DIR / f"{env}.tfvars").is_file(), env


@pytest.mark.skipif(terraform_binary() is None, reason="no terraform binary on PATH")
def test_fmt_check_is_clean(tmp_path: Path) -> None:
    empty_rc = tmp_path / "empty.tfrc"
    empty_rc.write_text("")
    proc = subprocess.run(
        [str(terraform_binary()), "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": str(empty_rc)},
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, f"terraform fmt -check found unformatted files:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("path", _tf_files(), ids=lambda p: str(p.relative_to(TERRAFORM_DIR)))
def test_every_tf_file_parses(path: Path) -> None:
    blocks = parse_blocks(path.read_text(), str(path))
    assert blocks, f"{path} declares nothing"
    allowed = {"terraform", "provider", "variable", "output", "locals", "module", "resource", "data"}
    assert {b.type for b in blocks} <= allowed


def test_scanner_rejects_malformed_hcl() -> None:
    with pytest.raises(HclError, match="never closed"):
        parse_blocks('variable "x" {\n  type = string\n')
    with pytest.raises(HclError, match="unterminated string"):
        parse_blocks('variable "x" {\n  default = "abc\n}\n')
    with pytest.raises(HclError, match="unexpected"):
        parse_blocks('output "x" {\n  value = [1, 2}\n}\n')
    # braces inside strings, interpolations and comments do not count
    text = 'locals {\n  a = "${var.x}-{"  # }\n  b = "${ {for k in var.y : k => "}"} }"\n}\n'
    (block,) = parse_blocks(text)
    assert block.attributes() == ["a", "b"]
    assert "var.x" in mask(text) and "var.y" in mask(text)


def test_root_and_modules_are_consistent() -> None:
    """Every variable the root passes to a module is declared there, every required module variable is passed,
    every ``module.X.Y`` / ``var.X`` / ``local.X`` reference resolves."""
    assert check_root(TERRAFORM_DIR) == []


def test_consistency_check_catches_mistakes(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "terraform"
    shutil.copytree(TERRAFORM_DIR, root, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    main = root / "main.tf"
    text = main.read_text()
    text = text.replace("  cidr_block         = var.vpc_cidr\n", "  cidr_blok          = var.vpc_cidr\n", 1)
    text = text.replace("module.vpc.private_subnet_ids", "module.vpc.private_subnets", 1)
    main.write_text(text)
    with (root / "outputs.tf").open("a") as fh:
        fh.write('\noutput "x" {\n  value = var.nope\n}\n')
    problems = check_root(root)
    assert "module vpc: passes cidr_blok, not declared in ./modules/vpc/variables.tf" in problems
    assert "module vpc: required variable cidr_block of ./modules/vpc is not passed" in problems
    assert "reference module.vpc.private_subnets: module vpc declares no output private_subnets" in problems
    assert any(p.endswith("var.nope is not declared") for p in problems)


def test_root_declares_every_api_output() -> None:
    outputs = ModuleInfo.load(TERRAFORM_DIR).outputs()
    assert set(API_OUTPUTS) <= outputs, sorted(set(API_OUTPUTS) - outputs)


@pytest.mark.skipif(
    not STANDIN_DIR.is_dir(), reason="the sandbox stand-in root (templates/sandbox/terraform) is absent"
)
def test_standin_root_declares_the_same_api_outputs() -> None:
    standin = ModuleInfo.load(STANDIN_DIR).outputs()
    assert set(API_OUTPUTS) <= standin, sorted(set(API_OUTPUTS) - standin)


def test_tfvars_set_only_declared_variables() -> None:
    declared = set(ModuleInfo.load(TERRAFORM_DIR).variables())
    for tfvars in sorted(ENV_DIR.glob("*.tfvars")):
        keys = tfvars_keys(tfvars)
        assert keys, tfvars
        assert len(keys) == len(set(keys)), f"{tfvars.name}: a variable is set twice"
        assert set(keys) <= declared, f"{tfvars.name}: undeclared {sorted(set(keys) - declared)}"
        assert tfvars_string(tfvars, "environment") == tfvars.stem
        assert "aws_endpoint_url" not in keys, "the endpoint is passed by bpmigrate, never pinned in tfvars"


def test_versions_pin_aws_5_and_declare_an_empty_s3_backend() -> None:
    text = (TERRAFORM_DIR / "versions.tf").read_text()
    assert re.search(r'source\s*=\s*"hashicorp/aws"', text)
    assert re.search(r'version\s*=\s*"~>\s*5\.0"', text)
    assert re.search(r'^\s*backend\s+"s3"\s*\{\s*\}', text, re.M), (
        "the s3 backend is configured at init (-backend-config)"
    )
    backends = [f for f in _tf_files() if re.search(r"\bbackend\s+\"", mask(f.read_text()))]
    assert backends == [TERRAFORM_DIR / "versions.tf"]


def test_provider_endpoint_override_is_the_only_emulator_hook() -> None:
    """Nothing in the modules is sandbox-specific: no local addresses, no emulator names; the provider's endpoints
    all come from var.aws_endpoint_url and the skip_* flags only apply when it is set."""
    for tf in _tf_files():
        code = mask(tf.read_text()).lower()
        raw = re.sub(r"(?m)#.*$", "", tf.read_text().lower())  # comments may explain; code may not
        for needle in ("127.0.0.1", "localhost", "moto", "4566"):
            assert needle not in raw, f"{tf}: {needle}"
        if tf.parent.name != "terraform":
            assert "sandbox" not in raw, f"{tf}: modules are the production code"
        assert "endpoints" not in code or tf.name == "providers.tf", tf
    providers = (TERRAFORM_DIR / "providers.tf").read_text()
    (block,) = [b for b in parse_blocks(providers) if b.type == "provider"]
    endpoint_body = re.search(r"endpoints\s*\{([^}]*)\}", block.body)
    assert endpoint_body
    values = re.findall(r"=\s*(\S+)", endpoint_body.group(1))
    assert values and set(values) == {"var.aws_endpoint_url"}
    services = ("ec2", "eks", "iam", "rds", "elasticache", "ecr", "sts", "s3", "dynamodb", "kms", "logs", "secretsmanager", "wafv2")
    for service in services:
        assert re.search(rf"\b{service}\s*=", endpoint_body.group(1)), service
    for flag in ("skip_credentials_validation", "skip_requesting_account_id", "s3_use_path_style"):
        assert re.search(rf"{flag}\s*=\s*local\.custom_endpoint", block.body), flag
    assert re.search(r"custom_endpoint\s*=\s*var\.aws_endpoint_url\s*!=\s*null", providers)


def test_no_secret_in_terraform_and_rds_manages_its_password() -> None:
    for path in [*_tf_files(), *ENV_DIR.glob("*.tfvars")]:
        code = mask(path.read_text())
        assert not re.search(r"^\s*(password|master_password)\s*=", code, re.M), path
        # the Redis AUTH token only ever comes from Secrets Manager, never from a literal or a variable
        for value in re.findall(r"^\s*auth_token\s*=\s*(.+)$", code, re.M):
            assert value.strip().startswith("aws_secretsmanager_secret_version."), (path, value)
    rds = (TERRAFORM_DIR / "modules" / "rds" / "main.tf").read_text()
    assert re.search(r"manage_master_user_password\s*=\s*true", rds)
    assert re.search(r"storage_encrypted\s*=\s*true", rds)
    cache = (TERRAFORM_DIR / "modules" / "elasticache" / "main.tf").read_text()
    assert re.search(r"transit_encryption_enabled\s*=\s*true", cache)
    assert re.search(r"at_rest_encryption_enabled\s*=\s*true", cache)
    # encryption at rest with customer-managed, rotated keys (issue 19)
    assert re.search(r"kms_key_id\s*=\s*aws_kms_key\.this\.arn", cache)
    assert re.search(r"kms_key_id\s*=\s*aws_kms_key\.this\.arn", rds)
    assert len(re.findall(r"enable_key_rotation\s*=\s*true", cache + rds)) == 2


def test_production_eks_endpoint_is_not_open_to_the_internet() -> None:
    prod = (ENV_DIR / "production.tfvars").read_text()
    cidrs = re.search(r"^eks_public_access_cidrs\s*=\s*\[(.*)\]", prod, re.M)
    assert cidrs and "0.0.0.0/0" not in cidrs.group(1)
    variables = (TERRAFORM_DIR / "variables.tf").read_text()
    assert 'var.environment == "production"' in variables and "0.0.0.0/0" in variables  # the validation refusing it


def test_production_forces_multi_az_and_deletion_protection() -> None:
    main = (TERRAFORM_DIR / "main.tf").read_text()
    assert re.search(r'is_production\s*=\s*var\.environment\s*==\s*"production"', main)
    assert re.search(r"multi_az\s*=\s*var\.rds_multi_az\s*\|\|\s*local\.is_production", main)
    assert re.search(r"deletion_protection\s*=\s*var\.rds_deletion_protection\s*\|\|\s*local\.is_production", main)
    prod = (ENV_DIR / "production.tfvars").read_text()
    assert re.search(r"^rds_multi_az\s*=\s*true", prod, re.M)
    assert re.search(r"^redis_cluster_mode_enabled\s*=\s*true", prod, re.M)


# ---------------------------------------------------------------------------------------------------------------
# with the hashicorp/aws provider (filesystem mirror) against the moto server
# ---------------------------------------------------------------------------------------------------------------
_SKIP = provider_skip_reason()


def _workdir(tmp: Path, **kw: Any) -> TfWorkdir:
    return TfWorkdir(tmp, **kw)


@pytest.fixture(scope="module")
def env_plans(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, moto_server: Any
) -> Iterator[dict[str, Future[dict[str, Any]]]]:
    """``terraform plan`` + ``show -json`` of the whole root for each environment, started in the background.

    The plans are CPU-bound (the AWS provider's schema load) while the apply test mostly sleeps in the provider's RDS
    waiters, so the apply test requests this fixture first and the two overlap. Plans only read data sources from
    moto (-refresh=false, no state): a moto reset by another test does not disturb them. Only the environments
    of the selected tests are planned (``-k development`` plans one: each plan costs 1–2 min of CPU here)."""

    def plan(env: str, tmp: Path) -> dict[str, Any]:
        wd = _workdir(tmp)
        wd.init()
        plan_file = tmp / f"{env}.tfplan"
        variables = var_args(
            [f"environments/{env}.tfvars"], aws_endpoint_url=moto_server.endpoint_url, aws_region=env_region(env)
        )
        wd.run("plan", "-input=false", "-refresh=false", f"-out={plan_file}", *variables)
        result = wd.show_json(plan_file)
        print(f"\n[terraform timings, {env} plan] {wd.report()}")
        return result

    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tf-plan")
    params = [
        getattr(getattr(item, "callspec", None), "params", {})
        for item in request.session.items
        if getattr(item, "module", None) is request.module
    ]
    selected = {p["env"] for p in params if "env" in p}
    futures = {
        env: pool.submit(plan, env, tmp_path_factory.mktemp(f"tf-plan-{env}")) for env in ENVIRONMENTS if env in selected
    }
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _boto(moto: Any, service: str, region: str = "us-east-1") -> Any:
    return moto_client(moto.endpoint_url, service, region)


def _moto_has_aws_managed_policies(moto: Any) -> bool:
    iam = _boto(moto, "iam")
    try:
        iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy")
    except Exception:  # NoSuchEntity: moto was started without MOTO_IAM_LOAD_MANAGED_POLICIES=true
        return False
    return True


@pytest.mark.aws_provider
@pytest.mark.slow  # the provider's RDS waiters alone take ~140 s (create + delete), even though moto answers at once
@pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")
def test_modules_plan_apply_replan_destroy_against_moto(
    env_plans: dict[str, Future[dict[str, Any]]], moto_reset: Any, tmp_path: Path
) -> None:
    """vpc + rds (+ eks with its IRSA roles when moto serves the AWS managed IAM policies): plan -out, apply that
    plan, re-plan shows no changes, read back with boto3, targeted destroy. elasticache is plan-only (moto gap, see
    the notes); sandbox.tfvars turns the EKS managed add-ons off (moto has no CreateAddon).
    (``env_plans`` is requested only so the per-environment plans run in the background meanwhile.)"""
    with_eks = _moto_has_aws_managed_policies(moto_reset)
    if not with_eks:
        print(
            "\n[module.eks not applied: the moto server has no AWS managed IAM policies "
            "(start it with MOTO_IAM_LOAD_MANAGED_POLICIES=true); it is still planned per environment]"
        )
    wd = _workdir(tmp_path)
    wd.init()
    modules = ["vpc", "rds", *(["eks"] if with_eks else [])]
    targets = [f"-target=module.{m}" for m in modules]
    variables = var_args(
        ["environments/sandbox.tfvars"], aws_endpoint_url=moto_reset.endpoint_url, aws_region=env_region("sandbox")
    )

    plan_file = tmp_path / "apply.tfplan"
    planned = wd.run("plan", "-input=false", f"-out={plan_file}", *targets, *variables).stdout
    summary = re.search(r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy", planned)
    assert summary and int(summary.group(1)) > 20 and summary.group(2, 3) == ("0", "0"), planned[-2000:]
    assert "module.elasticache." not in planned
    assert ("module.eks." in planned) is with_eks

    wd.run("apply", "-input=false", str(plan_file))
    outputs = wd.outputs()
    for name in ("vpc_id", "private_subnet_ids", "public_subnet_ids", "rds_endpoint", "rds_port", "rds_instance_id"):
        assert outputs.get(name) not in (None, "", []), name
    assert outputs["rds_instance_id"] == "betterprompts-sandbox-postgres"
    assert "ecr_repository_urls" not in outputs, "ECR is owned by the ecr-repos step, not Terraform"

    # applied again = nothing to do (terraform plan -detailed-exitcode: 0 = no changes, 2 = changes)
    again = wd.run("plan", "-input=false", "-detailed-exitcode", *targets, *variables, check=False)
    assert again.returncode == 0, f"re-plan is not empty:\n{again.stdout[-4000:]}{again.stderr[-2000:]}"

    # read back with boto3, independently of Terraform
    ec2 = _boto(moto_reset, "ec2")
    vpc_filter = [{"Name": "vpc-id", "Values": [outputs["vpc_id"]]}]
    subnets = ec2.describe_subnets(Filters=vpc_filter)["Subnets"]
    assert len(subnets) == 6
    assert len({s["AvailabilityZone"] for s in subnets}) == 3
    assert len(ec2.describe_nat_gateways(Filters=vpc_filter)["NatGateways"]) == 1
    (flow_log,) = ec2.describe_flow_logs(Filters=[{"Name": "resource-id", "Values": [outputs["vpc_id"]]}])["FlowLogs"]
    assert flow_log["TrafficType"] == "ALL"
    destination = flow_log.get("LogGroupName") or flow_log.get("LogDestination") or ""
    assert "/aws/vpc/betterprompts-sandbox/flow-logs" in destination
    rds = _boto(moto_reset, "rds")
    (db,) = rds.describe_db_instances(DBInstanceIdentifier=outputs["rds_instance_id"])["DBInstances"]
    assert db["Engine"] == "postgres" and db["EngineVersion"].startswith("16")
    assert db["StorageEncrypted"] is True
    assert db.get("MasterUserSecret", {}).get("SecretArn"), "the master password is managed by RDS"
    assert db["DBParameterGroups"][0]["DBParameterGroupName"] == "betterprompts-sandbox-postgres-pg16"
    assert {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]} == set(outputs["private_subnet_ids"])
    eks = _boto(moto_reset, "eks")
    iam = _boto(moto_reset, "iam")
    if with_eks:
        cluster = eks.describe_cluster(name=outputs["eks_cluster_name"])["cluster"]
        assert cluster["status"] == "ACTIVE"
        assert sorted(eks.list_nodegroups(clusterName=cluster["name"])["nodegroups"]) == [
            "application",
            "gpu",
            "system",
        ]
        gpu = eks.describe_nodegroup(clusterName=cluster["name"], nodegroupName="gpu")["nodegroup"]
        assert gpu["labels"]["node_group"] == "gpu"
        assert gpu["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
        # the add-ons' IRSA roles, read back through IAM: trust the cluster's OIDC provider for exactly their
        # service account, and carry their policies; no managed add-on in moto (sandbox.tfvars)
        assert outputs["eks_managed_addons"] == {}
        roles = outputs["eks_irsa_role_arns"]
        assert set(roles) == set(IRSA_SUBJECTS)
        issuer = cluster["identity"]["oidc"]["issuer"].removeprefix("https://")
        for addon, subject in IRSA_SUBJECTS.items():
            role = iam.get_role(RoleName=f"betterprompts-sandbox-{addon}")["Role"]
            assert role["Arn"] == roles[addon]
            (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
            assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
            assert statement["Principal"]["Federated"] == outputs["eks_oidc_provider_arn"]
            assert statement["Condition"]["StringEquals"] == {
                f"{issuer}:sub": subject,
                f"{issuer}:aud": "sts.amazonaws.com",
            }
            attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
            assert len(attached) == 1, (addon, attached)
        lbc = iam.get_policy(
            PolicyArn="arn:aws:iam::123456789012:policy/betterprompts-sandbox-aws-load-balancer-controller"
        )
        document = iam.get_policy_version(PolicyArn=lbc["Policy"]["Arn"], VersionId=lbc["Policy"]["DefaultVersionId"])
        actions = {a for s in document["PolicyVersion"]["Document"]["Statement"] for a in _as_list(s["Action"])}
        assert {"elasticloadbalancing:CreateLoadBalancer", "wafv2:AssociateWebACL"} <= actions

    # targeted destroy (rds and vpc; eks too, to leave nothing behind)
    wd.run("destroy", "-auto-approve", "-input=false", *targets, *variables)
    assert [a for a in wd.state_list() if ".data." not in a] == []
    assert rds.describe_db_instances()["DBInstances"] == []
    assert ec2.describe_vpcs(Filters=vpc_filter)["Vpcs"] == []
    assert eks.list_clusters()["clusters"] == []
    assert not [r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("betterprompts-sandbox-")]
    print(f"\n[terraform timings, {'+'.join(modules)} against moto] {wd.report()}")


@pytest.mark.aws_provider
@pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_environment_plan_has_the_promised_shape(env: str, env_plans: dict[str, Future[dict[str, Any]]]) -> None:
    """The whole root planned with each environment's tfvars (against moto: data sources only, nothing created)."""
    plan = env_plans[env].result(timeout=900)
    assert all(a == ["create"] for a in actions_of(plan).values())

    # network: 3 AZs, public + private subnet in each, NAT per AZ except development
    subnets = resources_of(plan, "aws_subnet")
    assert len(subnets) == 6
    assert len({s["availability_zone"] for s in subnets.values()}) == 3
    assert len(resources_of(plan, "aws_nat_gateway")) == (1 if env == "development" else 3)
    (flow_log,) = resources_of(plan, "aws_flow_log").values()
    assert flow_log["traffic_type"] == "ALL"

    # EKS node groups: system, application (spot outside production), gpu (labelled + tainted), spot in production
    groups = {v["node_group_name"]: v for v in resources_of(plan, "aws_eks_node_group").values()}
    expected = {"system", "application", "gpu"} | ({"spot"} if env == "production" else set())
    assert set(groups) == expected
    gpu = groups["gpu"]
    assert gpu["labels"]["node_group"] == "gpu"
    assert gpu["taint"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
    assert gpu["instance_types"] and all(re.match(r"^(g4dn|g5)\.", t) for t in gpu["instance_types"])
    assert gpu["ami_type"] in ("AL2023_x86_64_NVIDIA", "AL2_x86_64_GPU", "BOTTLEROCKET_x86_64_NVIDIA")
    assert groups["application"]["capacity_type"] == ("ON_DEMAND" if env == "production" else "SPOT")
    assert groups["system"]["capacity_type"] == "ON_DEMAND"
    if env == "production":
        assert groups["spot"]["capacity_type"] == "SPOT"
    assert all(g["labels"]["node_group"] == name for name, g in groups.items())
    (cluster,) = resources_of(plan, "aws_eks_cluster").values()
    assert cluster["name"] == f"betterprompts-{env}"
    assert len(resources_of(plan, "aws_iam_openid_connect_provider")) == 1

    # RDS PostgreSQL 16: password managed by RDS, encrypted, Multi-AZ + deletion protection in production
    (db,) = resources_of(plan, "aws_db_instance").values()
    assert db["engine"] == "postgres" and db["engine_version"].startswith("16")
    assert db["manage_master_user_password"] is True
    assert db.get("password") is None
    assert db["storage_encrypted"] is True and db["publicly_accessible"] is False
    assert db["multi_az"] is (env == "production")
    assert db["deletion_protection"] is (env != "development")
    assert db["skip_final_snapshot"] is (env != "production")
    (pg,) = resources_of(plan, "aws_db_parameter_group").values()
    assert pg["family"] == "postgres16"
    params = {p["name"]: p["value"] for p in pg["parameter"]}
    assert params["rds.force_ssl"] == "1"

    # ElastiCache Redis 7: encrypted in transit and at rest; cluster mode in staging/production
    (rg,) = resources_of(plan, "aws_elasticache_replication_group").values()
    assert rg["engine"] == "redis" and rg["engine_version"].startswith("7")
    assert rg["transit_encryption_enabled"] is True
    assert rg["at_rest_encryption_enabled"] in (True, "true")  # a string in the provider schema
    if env == "development":
        assert rg["num_cache_clusters"] == 1 and rg["parameter_group_name"] == "default.redis7"
    else:
        assert rg["num_node_groups"] >= 2 and rg["parameter_group_name"] == "default.redis7.cluster.on"
        assert rg["automatic_failover_enabled"] is True

    # issue 19: customer-managed keys for RDS and ElastiCache, the AUTH token from Secrets Manager, WAF on the ALB
    assert len(resources_of(plan, "aws_kms_key")) >= 3  # EKS secrets, RDS, ElastiCache
    assert len(resources_of(plan, "aws_secretsmanager_secret")) == 1
    (acl,) = resources_of(plan, "aws_wafv2_web_acl").values()
    assert acl["scope"] == "REGIONAL"
    rules = {r["name"]: r for r in acl["rule"]}
    assert {"aws-common", "rate-limit"} <= set(rules)
    assert rules["rate-limit"]["statement"][0]["rate_based_statement"][0]["limit"] == 2000
    if env == "production":
        assert "0.0.0.0/0" not in cluster["vpc_config"][0]["public_access_cidrs"]

    # issue 20: ECR belongs to the ecr-repos step (IMMUTABLE tags), not to Terraform
    assert resources_of(plan, "aws_ecr_repository") == {} and resources_of(plan, "aws_ecr_lifecycle_policy") == {}
    assert not any(a.startswith("module.ecr") for a in actions_of(plan))
    assert set(API_OUTPUTS) <= set(plan["configuration"]["root_module"]["outputs"])
    assert "ecr_repository_urls" not in plan["configuration"]["root_module"]["outputs"]

    # the region is the environment's (migrate.toml), passed as -var aws_region; no tfvars pins one
    assert plan["variables"]["aws_region"]["value"] == env_region(env)

    # issue 20: the add-ons' IRSA roles, each trusting exactly its service account through the cluster's OIDC
    # provider (the trust documents are read at apply: the issuer is unknown until the cluster exists)
    roles = {r["name"]: r for r in resources_of(plan, "aws_iam_role").values()}
    trusts = data_reads_of(plan, "aws_iam_policy_document")
    for addon, subject in IRSA_SUBJECTS.items():
        assert f"betterprompts-{env}-{addon}" in roles, addon
        (statement,) = trusts[f'module.eks.data.aws_iam_policy_document.irsa_assume["{addon}"]']["statement"]
        assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
        assert statement["principals"][0]["type"] == "Federated"
        assert sorted(v for c in statement["condition"] for v in c["values"]) == sorted([subject, "sts.amazonaws.com"])
        assert all(c["test"] == "StringEquals" for c in statement["condition"])
    policies = {addr.split('"')[1]: json.loads(p["policy"]) for addr, p in resources_of(plan, "aws_iam_policy").items()}
    assert set(policies) == {"aws-load-balancer-controller", "cluster-autoscaler", "cost-monitor"}

    def actions(doc: dict[str, Any]) -> set[str]:
        return {a for s in doc["Statement"] for a in _as_list(s["Action"])}

    assert {"elasticloadbalancing:CreateLoadBalancer", "ec2:CreateSecurityGroup", "wafv2:AssociateWebACL"} <= actions(
        policies["aws-load-balancer-controller"]
    )
    scale = [
        dict(s, Action=sorted(_as_list(s["Action"])))
        for s in policies["cluster-autoscaler"]["Statement"]
        if "autoscaling:SetDesiredCapacity" in _as_list(s["Action"])
    ]
    assert scale == [  # only the groups this cluster owns (EKS managed node groups' ASGs carry the tag)
        {
            "Sid": "ScaleOwnedGroups",
            "Effect": "Allow",
            "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
            "Resource": "*",
            "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/betterprompts-{env}": "owned"}},
        }
    ]
    assert "autoscaling:DescribeAutoScalingGroups" in actions(policies["cluster-autoscaler"])
    assert actions(policies["cost-monitor"]) >= {"ce:GetCostAndUsage"}
    assert not any(a.split(":")[1].startswith(("Create", "Delete", "Put")) for a in actions(policies["cost-monitor"]))
    attachments = resources_of(plan, "aws_iam_role_policy_attachment").values()  # custom policies' ARNs: unknown
    (ebs,) = [a for a in attachments if "EBSCSI" in a.get("policy_arn", "")]
    assert ebs["policy_arn"] == "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"

    # issue 20: EKS managed add-ons, the VPC CNI enforcing network policies, the EBS CSI driver with its IRSA role
    addons = {a["addon_name"]: a for a in resources_of(plan, "aws_eks_addon").values()}
    assert set(addons) == MANAGED_ADDONS
    assert json.loads(addons["vpc-cni"]["configuration_values"]) == {"enableNetworkPolicy": "true"}
    assert all(a["resolve_conflicts_on_create"] == "OVERWRITE" for a in addons.values())
    assert {"eks_irsa_role_arns", "eks_managed_addons"} <= set(plan["configuration"]["root_module"]["outputs"])


@pytest.mark.aws_provider
@pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")
def test_s3_backend_with_dynamodb_lock_in_moto(moto_reset: Any, tmp_path: Path) -> None:
    bucket, table, key, workspace = "bp-tfstate-test", "bp-tflocks-test", "betterprompts/terraform.tfstate", "sandbox"
    s3 = _boto(moto_reset, "s3")
    s3.create_bucket(Bucket=bucket)
    ddb = _boto(moto_reset, "dynamodb")
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )

    wd = _workdir(tmp_path, local_backend=False)
    backend = tmp_path / "backend.s3.tfbackend"
    url = moto_reset.endpoint_url
    backend.write_text(
        f'bucket = "{bucket}"\nkey = "{key}"\nregion = "us-east-1"\ndynamodb_table = "{table}"\nencrypt = true\n'
        f"use_path_style = true\nskip_credentials_validation = true\nskip_requesting_account_id = true\n"
        f'skip_metadata_api_check = true\nendpoints = {{\n  s3 = "{url}"\n  dynamodb = "{url}"\n}}\n'
    )
    wd.init(str(backend))
    wd.run("workspace", "new", workspace)
    variables = var_args(["environments/sandbox.tfvars"], aws_endpoint_url=url, aws_region="us-east-1")
    target = "-target=module.eks.aws_iam_role.cluster"  # one IAM role: the cheapest real resource of the root
    wd.run("apply", "-auto-approve", "-input=false", target, *variables)

    # the state lives in moto's S3 (per workspace), its digest in the lock table
    state_key = f"env:/{workspace}/{key}"
    state = json.loads(s3.get_object(Bucket=bucket, Key=state_key)["Body"].read())
    assert any(r["module"] == "module.eks" for r in state["resources"] if "module" in r)
    lock_id = f"{bucket}/{state_key}"
    assert "Item" in ddb.get_item(TableName=table, Key={"LockID": {"S": f"{lock_id}-md5"}})
    assert "Item" not in ddb.get_item(TableName=table, Key={"LockID": {"S": lock_id}}), "lock released after apply"

    # someone else holds the lock: plan fails at once and names the holder
    info = {
        "ID": "5f1b2c3d-0000-4000-8000-000000000001",
        "Operation": "OperationTypeApply",
        "Info": "bpmigrate apply --step rds",
        "Who": "oncall-sre@bastion-1",
        "Version": "1.11.4",
        "Created": "2026-11-23T03:00:00Z",
        "Path": lock_id,
    }
    ddb.put_item(TableName=table, Item={"LockID": {"S": lock_id}, "Info": {"S": json.dumps(info)}})
    held = wd.run("plan", "-input=false", "-lock-timeout=0s", target, *variables, check=False)
    text = held.stdout + held.stderr
    assert held.returncode != 0
    assert "Error acquiring the state lock" in text
    assert "oncall-sre@bastion-1" in text and info["ID"] in text
    print(f"\n[terraform timings, s3 backend + dynamodb lock in moto] {wd.report()}")


@pytest.mark.aws_provider
@pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")
def test_production_plan_with_an_open_eks_endpoint_is_refused(moto_server: Any, tmp_path: Path) -> None:
    wd = _workdir(tmp_path)
    wd.init()
    variables = var_args(
        ["environments/production.tfvars"], aws_endpoint_url=moto_server.endpoint_url, aws_region="us-west-2"
    )
    proc = wd.run(
        "plan", "-input=false", "-refresh=false", *variables, "-var", 'eks_public_access_cidrs=["0.0.0.0/0"]', check=False
    )
    said = " ".join((proc.stdout + proc.stderr).replace("│", " ").split())
    assert proc.returncode != 0 and "must not be open to 0.0.0.0/0" in said, said[-2000:]
