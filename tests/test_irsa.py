"""Issue 20, the Terraform side: the add-ons' IRSA roles (one per add-on, each trusting exactly its service account),
the EKS managed add-ons, one owner for ECR, and the region coming only from the environment.

Fast tests: static checks over terraform/, the sandbox stand-in root applied for real (terraform_data, no provider),
the ``eks`` step's IAM read-back against the moto server, and the runner refusing a second region. The real modules
are planned per environment in tests/test_terraform_modules.py (aws_provider)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrate.adapters.terraform import SANDBOX_ROOT_ENV, from_config
from migrate.config import EnvConfig
from migrate.errors import ConfigError
from migrate.step import Check
from migrate.testing import make_context
from phases.p1_foundation.eks import IRSA_SERVICE_ACCOUNTS, Eks, irsa_trust
from tests.servers_plugin import moto_client
from tests.tf_provider import STANDIN_DIR, TERRAFORM_DIR, ModuleInfo, terraform_binary, tfvars_keys

REPO = Path(__file__).resolve().parent.parent
IRSA_TF = TERRAFORM_DIR / "modules" / "eks" / "irsa.tf"
APP_NAMESPACE = "betterprompts"


def _real_module_service_accounts() -> dict[str, str]:
    """add-on -> namespace:name, as terraform/modules/eks/irsa.tf binds each role (var.app_namespace = the app's)."""
    text = IRSA_TF.read_text()
    found = re.findall(
        r'"([a-z-]+)"\s*=\s*\{\s*namespace\s*=\s*("kube-system"|var\.app_namespace),?\s*service_account\s*=\s*"([^"]+)"',
        text,
    )
    return {
        addon: ("{namespace}" if ns == "var.app_namespace" else ns.strip('"')) + f":{sa}" for addon, ns, sa in found
    }


def _failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


# -- static ------------------------------------------------------------------------------------------------------------
def test_irsa_roles_bind_the_service_accounts_the_manifests_use() -> None:
    """The module, the step's verify and the bundled manifests agree on every add-on's service account."""
    assert _real_module_service_accounts() == IRSA_SERVICE_ACCOUNTS
    accounts = set()
    for path in [
        *(REPO / "templates" / "k8s" / "addons").glob("*.yaml"),
        REPO / "templates/k8s/cutover/cost-monitoring.yaml",
    ]:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ServiceAccount":
                meta = doc["metadata"]
                ns = "{namespace}" if meta["namespace"] == "${namespace}" else meta["namespace"]
                accounts.add(f"{ns}:{meta['name']}")
    manifest_addons = {k: v for k, v in IRSA_SERVICE_ACCOUNTS.items() if k != "ebs-csi-driver"}  # an EKS add-on
    assert set(manifest_addons.values()) <= accounts, sorted(accounts)
    assert Eks.output_map["irsa_role_arns"] == "eks_irsa_role_arns"
    assert Eks.output_map["managed_addons"] == "eks_managed_addons"


def test_lbc_policy_is_the_published_document_and_fits_a_managed_policy() -> None:
    doc = json.loads((TERRAFORM_DIR / "modules/eks/policies/aws-load-balancer-controller.json").read_text())
    actions = {a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"elasticloadbalancing:CreateLoadBalancer", "ec2:CreateSecurityGroup", "wafv2:AssociateWebACL"} <= actions
    assert {"elasticloadbalancing:DescribeListenerAttributes", "ec2:GetSecurityGroupsForVpc"} <= actions  # v2.8+
    assert len(json.dumps(doc, separators=(",", ":"))) < 6144, "IAM managed policies are limited to 6,144 characters"


def test_stand_in_declares_the_eks_outputs_and_no_ecr() -> None:
    real, standin = ModuleInfo.load(TERRAFORM_DIR), ModuleInfo.load(STANDIN_DIR)
    for name in ("eks_irsa_role_arns", "eks_managed_addons"):
        assert name in real.outputs() and name in standin.outputs(), name
    for root in (real, standin):
        assert "ecr" not in root.module_calls(), "ECR belongs to the ecr-repos step (IMMUTABLE tags)"
        assert not any(o.startswith("ecr_") for o in root.outputs())
    assert not (TERRAFORM_DIR / "modules" / "ecr").exists() and not (STANDIN_DIR / "modules" / "ecr").exists()


def test_region_comes_only_from_the_environment() -> None:
    variables = ModuleInfo.load(TERRAFORM_DIR).variables()
    assert "default" not in variables["aws_region"].attributes(), "no silent default region"
    for tfvars in sorted((TERRAFORM_DIR / "environments").glob("*.tfvars")):
        assert "aws_region" not in tfvars_keys(tfvars), f"{tfvars.name}: the region is aws.region in migrate.toml"
    sandbox = (TERRAFORM_DIR / "environments" / "sandbox.tfvars").read_text()
    assert re.search(r"^eks_managed_addons\s*=\s*false", sandbox, re.M), "moto has no EKS add-on API"


# -- the runner passes the environment's region and refuses a second one ----------------------------------------------
def test_runner_passes_the_region_and_refuses_a_contradicting_tfvars(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv(SANDBOX_ROOT_ENV, raising=False)
    root = tmp_path / "root"
    (root / "environments").mkdir(parents=True)
    (root / "main.tf").write_text('variable "aws_region" {\n  type = string\n}\n')
    tfvars = root / "environments" / "production.tfvars"
    env = EnvConfig.model_validate(
        {"name": "production", "aws": {"region": "eu-west-1"}, "terraform": {"root": str(root)}}
    )

    tfvars.write_text('environment = "production"\n')
    runner = from_config(env, project_root=tmp_path, state_dir=tmp_path / "state")
    assert runner.extra_vars == {"aws_region": "eu-west-1"}
    (tmp_path / "state" / "production" / "terraform").mkdir(parents=True)
    args = runner._var_args()
    assert args[-1].endswith("bpmigrate.tfvars.json")
    assert json.loads(Path(args[-1].split("=", 1)[1]).read_text()) == {"aws_region": "eu-west-1"}

    tfvars.write_text('environment = "production"\naws_region  = "eu-west-1"  # the same: fine\n')
    runner._var_args()
    tfvars.write_text('environment = "production"\naws_region  = "us-west-2"\n')
    with pytest.raises(ConfigError) as info:
        runner._var_args()
    err = info.value
    assert "aws_region = 'us-west-2'" in err.what and "'eu-west-1'" in err.what
    assert "bpmigrate plan --env production" in err.next_cmd and str(tfvars) in err.next_cmd

    # a root without the variable gets nothing extra (a team's own root may name it otherwise)
    (root / "main.tf").write_text('variable "region" {\n  type = string\n}\n')
    assert from_config(env, project_root=tmp_path, state_dir=tmp_path / "state").extra_vars == {}


# -- the stand-in root, applied for real (terraform_data only) ---------------------------------------------------------
@pytest.mark.skipif(terraform_binary() is None, reason="no terraform binary on PATH")
def test_stand_in_outputs_one_role_per_add_on(tmp_path: Path) -> None:
    root = tmp_path / "standin"
    shutil.copytree(STANDIN_DIR, root, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    rc = tmp_path / "empty.tfrc"
    rc.write_text("")
    env = {"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": str(rc), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}

    def tf(*args: str) -> str:
        done = subprocess.run(
            [str(terraform_binary()), *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    tf("init", "-input=false")
    tf("apply", "-auto-approve", "-input=false", "-target=module.eks", "-var=aws_region=eu-west-1")
    outputs = {k: v["value"] for k, v in json.loads(tf("output", "-json")).items()}
    roles = outputs["eks_irsa_role_arns"]
    assert set(roles) == set(IRSA_SERVICE_ACCOUNTS)
    assert roles["cluster-autoscaler"] == "arn:aws:iam::123456789012:role/betterprompts-sandbox-cluster-autoscaler"
    assert outputs["eks_managed_addons"] == {}
    state = json.loads(tf("show", "-json"))
    resources = state["values"]["root_module"]["child_modules"][0]["resources"]
    subjects = {r["index"]: r["values"]["input"]["service_account"] for r in resources if r["name"] == "irsa_role"}
    assert subjects == {
        k: "system:serviceaccount:" + v.replace("{namespace}", APP_NAMESPACE) for k, v in IRSA_SERVICE_ACCOUNTS.items()
    }


# -- the eks step reads the roles back through IAM (moto) ---------------------------------------------------------------
def _aws_root_env(moto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EnvConfig:
    """A sandbox env whose root is an AWS-provider root (so verify reads AWS, not the stand-in's state)."""
    monkeypatch.delenv(SANDBOX_ROOT_ENV, raising=False)
    root = tmp_path / "aws-root"
    root.mkdir()
    (root / "main.tf").write_text('terraform {\n  backend "s3" {}\n}\nresource "aws_vpc" "x" {}\n')
    (tmp_path / "mirror" / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0").mkdir(parents=True)
    return EnvConfig.model_validate(
        {
            "name": "sandbox",
            "kind": "sandbox",
            "aws": {"region": "us-east-1", "endpoint_url": moto.endpoint_url},
            "kube": {"namespace": APP_NAMESPACE},
            "terraform": {"root": str(root), "plugin_mirror": str(tmp_path / "mirror"), "sandbox_root": "project"},
        }
    )


def _irsa_roles(moto: Any, issuer: str, subjects: dict[str, str]) -> tuple[str, dict[str, str]]:
    iam = moto_client(moto.endpoint_url, "iam")
    provider = iam.create_open_id_connect_provider(Url=f"https://{issuer}", ClientIDList=["sts.amazonaws.com"])
    oidc_arn = provider["OpenIDConnectProviderArn"]
    policy = iam.create_policy(
        PolicyName="irsa-test",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "ce:GetCostAndUsage", "Resource": "*"}],
            }
        ),
    )
    arns = {}
    for addon, subject in subjects.items():
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Principal": {"Federated": oidc_arn},
                    "Condition": {"StringEquals": {f"{issuer}:sub": subject, f"{issuer}:aud": "sts.amazonaws.com"}},
                }
            ],
        }
        role = iam.create_role(RoleName=f"bp-{addon}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
        iam.attach_role_policy(RoleName=f"bp-{addon}", PolicyArn=policy["Policy"]["Arn"])
        arns[addon] = role["Arn"]
    return oidc_arn, arns


def test_eks_verify_reads_each_irsa_role_and_its_trust_subject(
    moto_reset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _aws_root_env(moto_reset, tmp_path, monkeypatch)
    issuer = "oidc.eks.us-east-1.amazonaws.com/id/IRSATEST"
    right = {
        k: "system:serviceaccount:" + v.replace("{namespace}", APP_NAMESPACE) for k, v in IRSA_SERVICE_ACCOUNTS.items()
    }
    wrong = dict(right, **{"cluster-autoscaler": "system:serviceaccount:default:cluster-autoscaler"})
    oidc_arn, arns = _irsa_roles(moto_reset, issuer, wrong)
    out = {"cluster_name": "bp", "oidc_provider_arn": oidc_arn, "irsa_role_arns": arns, "managed_addons": {}}
    eks = Eks()
    ctx = make_context(tmp_path, env, "eks", upstream={"eks": out})
    assert not eks.stand_in(ctx)
    checks = eks.verify_irsa_roles(ctx, IRSA_SERVICE_ACCOUNTS)
    assert len(checks) == 2 * len(IRSA_SERVICE_ACCOUNTS)  # trust + policy attached, per add-on
    failed = _failed(checks)
    assert [c.name for c in failed] == [
        "IRSA role of cluster-autoscaler trusts system:serviceaccount:kube-system:cluster-autoscaler"
    ]
    assert failed[0].observed["subjects"] == ["system:serviceaccount:default:cluster-autoscaler"]

    # a role recorded but gone from IAM, and an add-on without a recorded role, both fail
    moto_client(moto_reset.endpoint_url, "iam").detach_role_policy(
        RoleName="bp-cost-monitor", PolicyArn="arn:aws:iam::123456789012:policy/irsa-test"
    )
    moto_client(moto_reset.endpoint_url, "iam").delete_role(RoleName="bp-cost-monitor")
    partial = dict(out, irsa_role_arns={k: v for k, v in arns.items() if k != "ebs-csi-driver"})
    failed_names = {
        c.name
        for c in _failed(
            eks.verify_irsa_roles(make_context(tmp_path, env, "eks", upstream={"eks": partial}), IRSA_SERVICE_ACCOUNTS)
        )
    }
    assert "IRSA role of cost-monitor trusts system:serviceaccount:betterprompts:cost-monitor" in failed_names
    assert "IRSA role of ebs-csi-driver trusts system:serviceaccount:kube-system:ebs-csi-controller-sa" in failed_names

    # a root without the eks_irsa_role_arns output (a team's own): nothing to check
    bare = {"cluster_name": "bp", "irsa_role_arns": None}
    assert (
        eks.verify_irsa_roles(make_context(tmp_path, env, "eks", upstream={"eks": bare}), IRSA_SERVICE_ACCOUNTS) == []
    )


def test_eks_verify_checks_managed_addons_and_network_policy(
    moto_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto has no EKS add-on API: the read-back (AwsFoundation.eks_addon) answers from a table here."""
    from migrate.adapters.aws_foundation import AwsFoundation

    env = _aws_root_env(moto_server, tmp_path, monkeypatch)
    answers: dict[str, dict[str, Any]] = {
        "vpc-cni": {
            "status": "ACTIVE",
            "addonVersion": "v1.19.2-eksbuild.1",
            "configurationValues": '{"enableNetworkPolicy":"true"}',
        },
        "coredns": {"status": "DEGRADED", "addonVersion": "v1.11.4-eksbuild.2"},
    }
    monkeypatch.setattr(AwsFoundation, "eks_addon", lambda self, cluster, name: answers.get(name))
    out = {"cluster_name": "bp", "managed_addons": {"vpc-cni": None, "coredns": None, "kube-proxy": None}}
    checks = Eks().verify_managed_addons(make_context(tmp_path, env, "eks", upstream={"eks": out}), "bp")
    by_name = {c.name: c for c in checks}
    assert by_name["EKS add-on vpc-cni ACTIVE"].ok and by_name["VPC CNI enforces network policies"].ok
    assert not by_name["EKS add-on coredns ACTIVE"].ok and by_name["EKS add-on kube-proxy ACTIVE"].observed == "absent"

    answers["vpc-cni"]["configurationValues"] = "{}"
    checks = Eks().verify_managed_addons(make_context(tmp_path, env, "eks", upstream={"eks": out}), "bp")
    assert not {c.name: c for c in checks}["VPC CNI enforces network policies"].ok
    # no managed add-ons recorded (the sandbox): nothing to check
    none = {"cluster_name": "bp", "managed_addons": {}}
    assert Eks().verify_managed_addons(make_context(tmp_path, env, "eks", upstream={"eks": none}), "bp") == []


def test_irsa_trust_reads_lists_and_strings() -> None:
    doc = {
        "Statement": [
            {"Effect": "Allow", "Action": ["sts:AssumeRole"], "Principal": {"Service": "ec2.amazonaws.com"}},
            {
                "Effect": "Allow",
                "Action": ["sts:AssumeRoleWithWebIdentity"],
                "Principal": {"Federated": ["arn:aws:iam::1:oidc-provider/x"]},
                "Condition": {"StringEquals": {"x:sub": ["system:serviceaccount:a:b"], "x:aud": "sts.amazonaws.com"}},
            },
        ]
    }
    assert irsa_trust(doc) == {
        "providers": ["arn:aws:iam::1:oidc-provider/x"],
        "subjects": ["system:serviceaccount:a:b"],
        "audiences": ["sts.amazonaws.com"],
    }
    assert irsa_trust(None) == {"providers": [], "subjects": [], "audiences": []}
