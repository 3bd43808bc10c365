"""Issue 10 end to end: `--env sandbox` applies the project's own terraform/ modules to the sandbox's moto server.

Through the real CLI in subprocesses, against a throw-away project whose migrate.toml is the repository's (so
``terraform.sandbox_root = "auto"`` decides): the state lives in the moto S3 bucket and the lock in the moto DynamoDB
table that ``tf-state-backend`` created; ``status`` names the state object; verify reads the moto resources and the
state object back with boto3; rollback is a real targeted destroy. Needs the hashicorp/aws provider in a local
filesystem mirror (skipped with the reason otherwise) and takes about two minutes, mostly provider waiters.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.terraform import SANDBOX_ROOT_ENV
from tests.servers_plugin import moto_client
from tests.tf_provider import provider_skip_reason

ROOT = Path(__file__).resolve().parents[1]
_SKIP = provider_skip_reason()

pytestmark = [
    pytest.mark.aws_provider,
    pytest.mark.slow,
    pytest.mark.skipif(_SKIP is not None, reason=_SKIP or ""),
]


@pytest.fixture(scope="module")
def project(servers_root: Path) -> Iterator[Path]:
    root = servers_root / "proj-tf"
    root.mkdir()
    toml = (ROOT / "migrate.toml").read_text()
    assert 'sandbox_root = "auto"' in toml, "the sandbox's default must be auto (the real modules when possible)"
    (root / "migrate.toml").write_text(toml.replace('kind = "sandbox"', 'kind = "sandbox"\nsandbox = { fsync = false }', 1))
    ignore = shutil.ignore_patterns("__pycache__", ".terraform", "*.tfstate*", ".terraform.lock.hcl")
    for name in ("phases", "templates", "runbooks", "terraform"):
        shutil.copytree(ROOT / name, root / name, ignore=ignore)
    from migrate import config
    from migrate.sandbox import orchestrate

    orchestrate.up(config.load(root / "migrate.toml"), "sandbox")
    try:
        yield root
    finally:
        orchestrate.down(config.load(root / "migrate.toml"), "sandbox", wipe=True)


def bpm(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != SANDBOX_ROOT_ENV}  # migrate.toml decides (auto)
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200", KUBECONFIG=str(project / "no-kubeconfig"))
    return subprocess.run(
        [sys.executable, "-m", "migrate.cli", "--config", str(project / "migrate.toml"), "--env", "sandbox", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def boto(project: Path, service: str) -> Any:
    endpoints = json.loads((project / "state/sandbox/endpoints.json").read_text())
    return moto_client(endpoints["aws"]["endpoint_url"], service)


def step_status(project: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads(ok(bpm(project, "--json", "status")))
    return {s["id"]: s for phase in doc["phases"] for s in phase["steps"]}


def test_sandbox_applies_the_project_modules_to_moto(project: Path) -> None:
    ok(bpm(project, "apply", "--step", "tf-state-backend", "--yes"))

    # plan names the real root and the provider source; the plan is Terraform's own against moto
    planned = ok(bpm(project, "plan", "vpc"))
    assert "the project's terraform/ root against moto" in planned
    assert "hashicorp/aws from filesystem mirror" in planned
    assert "stand-in" not in planned
    assert "module.vpc.aws_vpc.this" in planned

    # apply uses the plan recorded moments ago by `plan` (nothing changed in between): no second terraform plan
    applied = ok(bpm(project, "apply", "--step", "vpc", "--yes"))
    assert "reusing the plan recorded" in applied or "applying the plan shown above" in applied, applied[-2000:]
    ok(bpm(project, "apply", "--step", "elasticache", "--yes"))

    steps = step_status(project)
    backend = steps["tf-state-backend"]["outputs"]
    bucket, key = backend["bucket"], f"env:/sandbox/{backend['state_key']}"
    for step_id in ("vpc", "elasticache"):
        st = steps[step_id]
        assert st["state"] == "verified", st
        assert st["outputs"]["terraform_state"] == f"s3://{bucket}/{key}"
        assert st["outputs"]["terraform_providers"] == "mirror"
        assert st["outputs"]["terraform_root"] == str((project / "terraform").resolve())
        assert st["outputs_summary"].startswith(f"terraform_state=s3://{bucket}/{key}")

    # the state is really in moto's S3, its digest in moto's DynamoDB lock table (and no lock left behind)
    state = json.loads(boto(project, "s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    modules = {r.get("module") for r in state["resources"] if r["mode"] == "managed"}
    assert {"module.vpc", "module.elasticache"} <= modules
    ddb = boto(project, "dynamodb")
    lock_id = f"{bucket}/{key}"
    assert "Item" in ddb.get_item(TableName=backend["lock_table"], Key={"LockID": {"S": f"{lock_id}-md5"}})
    assert "Item" not in ddb.get_item(TableName=backend["lock_table"], Key={"LockID": {"S": lock_id}})
    # locally only Terraform's backend settings (TF_DATA_DIR/terraform.tfstate), pointing at moto's S3
    backend_cache = json.loads((project / "state/sandbox/terraform/data/terraform.tfstate").read_text())
    assert backend_cache["backend"]["type"] == "s3" and backend_cache["backend"]["config"]["bucket"] == bucket
    assert not (project / "state/sandbox/terraform/workspaces").exists(), "no local state file"

    # verify reads the moto resources and the state object back (boto3, not Terraform)
    verified = json.loads(ok(bpm(project, "--json", "verify", "vpc")))
    checks = {c["name"]: c for e in verified["events"] if e["event"] == "checks" for c in e["checks"]}
    assert checks["Terraform state in S3 records module.vpc"]["ok"]
    assert f"s3://{bucket}/{key}" in checks["Terraform state in S3 records module.vpc"]["detail"]
    assert checks["VPC exists"]["ok"] and checks["subnets exist in the VPC"]["observed"] == 6

    # the data steps still connect to the local Redis (moto's group has no server), and the step says so
    cache = steps["elasticache"]["outputs"]
    endpoints = json.loads((project / "state/sandbox/endpoints.json").read_text())
    assert (cache["endpoint"], cache["port"]) == (endpoints["redis"]["target"]["host"], endpoints["redis"]["target"]["port"])
    assert str(cache["aws_endpoint"]).endswith(".cache.amazonaws.com")
    assert "moto has no server behind it" in cache["endpoint_source"]
    group = boto(project, "elasticache").describe_replication_groups(ReplicationGroupId=cache["replication_group_id"])
    assert group["ReplicationGroups"][0]["Status"] == "available"

    # rollback is a real targeted destroy of the module, recorded; the state object keeps module.vpc
    ok(bpm(project, "rollback", "--step", "elasticache", "--yes"))
    assert step_status(project)["elasticache"]["state"] == "rolled_back"
    assert boto(project, "elasticache").describe_replication_groups()["ReplicationGroups"] == []
    state = json.loads(boto(project, "s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    modules = {r.get("module") for r in state["resources"] if r["mode"] == "managed"}
    assert "module.elasticache" not in modules and "module.vpc" in modules
