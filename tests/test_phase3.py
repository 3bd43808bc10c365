"""Phase 3 steps through real StepContexts: AWS against the moto server, Kubernetes against the API-server test
double (tests/kube_double.py), service endpoints against local HTTP servers whose latency/errors the test sets.

Images: no container engine runs here, so "pushed" images are manifests put into moto's ECR with ``put_image``
(by the test, or by the step itself in a sandbox environment) — they stand for images pushed by docker/buildah.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from migrate.adapters.builder import Builder
from migrate.adapters.compose import parse_credentials as compose_credentials
from migrate.adapters.compose import rewrite_url_hosts
from migrate.adapters.proc import ProcRunner
from migrate.config import EnvConfig
from migrate.errors import ConfigError, DependencyNotReady, StepFailed
from migrate.redact import redact, redact_obj
from migrate.step import Check
from migrate.testing import make_context
from phases.p3_app._common import SERVICES
from phases.p3_app.app_smoke import AppSmoke
from phases.p3_app.ecr_repos import EcrRepos
from phases.p3_app.hpa import Hpa
from phases.p3_app.images import Images
from phases.p3_app.ingress import Ingress
from phases.p3_app.k8s_config import K8sConfig
from phases.p3_app.k8s_deploy import K8sDeploy
from tests.kube_double import KubeApiDouble
from tests.test_http_adapter import ControlledServer

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "templates" / "compose" / "docker-compose.yml"
NS = "betterprompts"
FAKE_SECRETS = (
    "fake-db-password-a41b9e",
    "fake-redis-password-77c0d3",
    "fake-jwt-signing-secret-0b8e44",
    "fake-openai-key-sk-000000000000",
    "fake-nextauth-secret-6f1d2c",
)


@pytest.fixture()
def kube(tmp_path: Path) -> Iterator[KubeApiDouble]:
    """A fresh test double of the Kubernetes API server (tests/kube_double.py), auto-ready on."""
    with KubeApiDouble(tmp_path / "kube-double") as double:
        yield double


def make_env(moto: Any = None, kube: KubeApiDouble | None = None, *, kind: str = "sandbox") -> EnvConfig:
    body: dict[str, Any] = {
        "name": "sandbox" if kind == "sandbox" else "staging",
        "kind": kind,
        "domain": "betterprompts.test",
        "postgres": {"target": {"host": "db.internal.test", "port": 5432, "dbname": "betterprompts"}},
        "redis": {"target": {"host": "cache.internal.test", "port": 6379}},
    }
    if moto is not None:
        body["aws"] = {"region": "us-east-1", "endpoint_url": moto.endpoint_url}
    if kube is not None:
        body["kube"] = {"kubeconfig": str(kube.kubeconfig_path), "namespace": NS}
    else:
        body["kube"] = {"kubeconfig": "/nonexistent/kubeconfig", "namespace": NS}
    return EnvConfig.model_validate(body)


def ecr(moto: Any) -> Any:
    return boto3.client(
        "ecr", region_name="us-east-1", endpoint_url=moto.endpoint_url, aws_access_key_id="t", aws_secret_access_key="t"
    )


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def push_manifest(moto: Any, repo: str, tag: str) -> str:
    """Stand-in for `docker push`: put a manifest for repo:tag into moto's ECR."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "a" * 64,
            "size": 1,
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": "sha256:" + tag.encode().hex().ljust(64, "0")[:64],
                "size": 2,
            }
        ],
    }
    out = ecr(moto).put_image(repositoryName=repo, imageManifest=json.dumps(manifest), imageTag=tag)
    return str(out["image"]["imageId"]["imageDigest"])


# -- pure helpers --------------------------------------------------------------------------------------------------
def test_compose_credentials_are_found_and_registered_for_redaction() -> None:
    creds = compose_credentials(COMPOSE.read_text())
    assert set(creds) == {
        "frontend",
        "api-gateway",
        "intent-classifier",
        "technique-selector",
        "prompt-generator",
        "postgres",
        "redis",
    }
    assert set(creds["api-gateway"]) == {"DATABASE_PASSWORD", "DATABASE_URL", "REDIS_PASSWORD", "JWT_SECRET"}
    assert set(creds["intent-classifier"]) == {"DATABASE_URL", "REDIS_URL", "HF_TOKEN"}  # list-form environment
    assert set(creds["prompt-generator"]) == {"DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    assert creds["redis"] == {"REDIS_PASSWORD": "fake-redis-password-77c0d3"}  # from --requirepass
    assert "PORT" not in creds["api-gateway"] and "DATABASE_HOST" not in creds["api-gateway"]
    for value in FAKE_SECRETS:
        assert value not in redact(f"leaked {value} here")


def test_rewrite_url_hosts_points_compose_hostnames_at_aws() -> None:
    hosts = {"postgres": "db.rds.test:5432", "redis": "cache.test:6379"}
    assert rewrite_url_hosts("postgres://u:p@postgres:5432/bp?sslmode=disable", hosts) == (
        "postgres://u:p@db.rds.test:5432/bp?sslmode=disable"
    )
    assert rewrite_url_hosts("redis://:pw@redis:6379/2", hosts) == "redis://:pw@cache.test:6379/2"
    assert rewrite_url_hosts("plain-value", hosts) == "plain-value"
    assert rewrite_url_hosts("https://other:1/x", hosts) == "https://other:1/x"


# -- builder -------------------------------------------------------------------------------------------------------
def fake_tool(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_builder_reports_docker_cli_without_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(
        tmp_path, "docker", 'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2\nexit 1\n'
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    info = Builder(ProcRunner()).detect()
    assert not info.available
    assert any("docker CLI present but no engine" in r and "Cannot connect" in r for r in info.reasons)
    assert "buildah not on PATH" in info.reasons


def test_builder_uses_a_docker_engine_that_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.log"
    fake_tool(tmp_path, "docker", f'echo "$@" >> {log}\nif [ "$1" = info ]; then echo 27.3.1; fi\ncat > /dev/null\n')
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    builder = Builder(ProcRunner())
    info = builder.detect()
    assert info.tool == "docker" and info.version == "27.3.1"
    builder.login("123.dkr.ecr.us-east-1.amazonaws.com", "AWS", "s3cr3t-token")
    builder.build(tmp_path, "repo/api:1", build_args={"VERSION": "1"})
    builder.push("repo/api:1")
    calls = log.read_text().splitlines()
    assert calls[1] == "login --username AWS --password-stdin 123.dkr.ecr.us-east-1.amazonaws.com"  # not on argv
    assert calls[2] == f"build -t repo/api:1 --build-arg VERSION=1 {tmp_path}"
    assert calls[3] == "push repo/api:1"


def test_builder_on_this_machine_never_claims_a_dead_engine() -> None:
    info = Builder(ProcRunner()).detect()
    if info.tool == "docker":  # an engine really answers here
        assert info.version
    else:
        assert info.reasons


# -- ecr-repos + images --------------------------------------------------------------------------------------------
def test_ecr_repos_create_verify_and_rollback(tmp_path: Path, moto_reset: Any) -> None:
    env = make_env(moto_reset)
    step = EcrRepos()
    plan = step.plan(make_context(tmp_path, env, step.id))
    assert [c.action for c in plan.changes] == ["create"] * 5
    assert failed(step.verify(make_context(tmp_path, env, step.id))), "verify fails before apply"
    out = step.apply(make_context(tmp_path, env, step.id, plan=plan))
    assert set(out["repositories"]) == set(SERVICES)
    assert out["repositories"]["api-gateway"]["uri"].endswith("/betterprompts/api-gateway")
    again = step.apply(make_context(tmp_path, env, step.id))  # idempotent
    assert again == out
    assert step.plan(make_context(tmp_path, env, step.id)).is_noop
    checks = step.verify(make_context(tmp_path, env, step.id))
    assert not failed(checks) and len(checks) == 15
    # independent read: scan-on-push and lifecycle policy really set
    repo = ecr(moto_reset).describe_repositories(repositoryNames=["betterprompts/frontend"])["repositories"][0]
    assert repo["imageScanningConfiguration"]["scanOnPush"] is True
    policy = json.loads(
        ecr(moto_reset).get_lifecycle_policy(repositoryName="betterprompts/frontend")["lifecyclePolicyText"]
    )
    assert [r["selection"]["tagStatus"] for r in policy["rules"]] == ["untagged", "any"]
    # drift is detected by verify and planned as an update
    ecr(moto_reset).put_image_scanning_configuration(
        repositoryName="betterprompts/frontend", imageScanningConfiguration={"scanOnPush": False}
    )
    assert [c.name for c in failed(step.verify(make_context(tmp_path, env, step.id)))] == [
        "ecr:betterprompts/frontend scan-on-push"
    ]
    assert [c.action for c in step.plan(make_context(tmp_path, env, step.id)).changes] == ["update"]
    step.apply(make_context(tmp_path, env, step.id))
    # rollback keeps a repository holding images, deletes empty ones; a second rollback is a no-op
    push_manifest(moto_reset, "betterprompts/api-gateway", "v1")
    rctx = make_context(tmp_path, env, step.id)
    step.rollback(rctx)
    left = [r["repositoryName"] for r in ecr(moto_reset).describe_repositories()["repositories"]]
    assert left == ["betterprompts/api-gateway"]
    assert any("holds 1 tagged image" in line for line in rctx.recorded_logs)
    step.rollback(make_context(tmp_path, env, step.id))


def test_images_sandbox_without_builder_puts_stand_in_manifests(tmp_path: Path, moto_reset: Any) -> None:
    env = make_env(moto_reset)
    repos = EcrRepos().apply(make_context(tmp_path, env, "ecr-repos"))
    up = {"ecr-repos": repos}
    step = Images()
    settings = {"tags": {"api-gateway": "v2.0.1"}, "tag": "v2.0.0"}
    plan = step.plan(make_context(tmp_path, env, step.id, settings=settings, upstream=up))
    if plan.data["mode"] != "pushed-tags":
        pytest.skip("a working container engine is present: the no-builder path is not exercised")
    assert any("container builder unavailable" in f.message for f in plan.findings)
    assert any("put_image" in f.message for f in plan.findings)
    assert {c.target for c in plan.changes} == {
        f"betterprompts/{s}:{'v2.0.1' if s == 'api-gateway' else 'v2.0.0'}" for s in SERVICES
    }
    out = step.apply(make_context(tmp_path, env, step.id, settings=settings, upstream=up))
    assert out["images"]["api-gateway"]["image"].endswith("/betterprompts/api-gateway:v2.0.1")
    assert out["images"]["frontend"]["digest"].startswith("sha256:")
    listed = ecr(moto_reset).list_images(repositoryName="betterprompts/frontend")["imageIds"]
    assert [i["imageTag"] for i in listed] == ["v2.0.0"]
    again = step.apply(make_context(tmp_path, env, step.id, settings=settings, upstream=up))
    assert again == out  # no second manifest
    up2 = {**up, "images": out}
    assert not failed(step.verify(make_context(tmp_path, env, step.id, settings=settings, upstream=up2)))
    assert step.plan(make_context(tmp_path, env, step.id, settings=settings, upstream=up)).is_noop
    assert all(i["stand_in"] for i in out["images"].values())
    # rollback removes the stand-ins (they are not images), so ecr-repos can delete its empty repositories
    step.rollback(make_context(tmp_path, env, step.id, settings=settings, upstream=up2))
    assert ecr(moto_reset).list_images(repositoryName="betterprompts/frontend")["imageIds"] == []
    EcrRepos().rollback(make_context(tmp_path, env, "ecr-repos"))
    assert ecr(moto_reset).describe_repositories()["repositories"] == []


def test_images_outside_the_sandbox_require_pushed_tags(tmp_path: Path, moto_reset: Any) -> None:
    env = make_env(moto_reset, kind="aws")
    repos = EcrRepos().apply(make_context(tmp_path, env, "ecr-repos"))
    up = {"ecr-repos": repos}
    step = Images()
    if step.plan(make_context(tmp_path, env, step.id, settings={"tag": "x"}, upstream=up)).data["mode"] == "build":
        pytest.skip("a working container engine is present")
    digests = {svc: push_manifest(moto_reset, f"betterprompts/{svc}", "v3") for svc in SERVICES if svc != "frontend"}
    settings = {"tag": "v3"}
    plan = step.plan(make_context(tmp_path, env, step.id, settings=settings, upstream=up))
    assert [f.message for f in plan.blocking] == [
        f"image betterprompts/frontend:v3 is not in ECR and no builder is available ({plan.data['builder']})"
    ]
    with pytest.raises(StepFailed, match="betterprompts/frontend:v3 is not in ECR"):
        step.apply(make_context(tmp_path, env, step.id, settings=settings, upstream=up))
    assert ecr(moto_reset).list_images(repositoryName="betterprompts/frontend")["imageIds"] == []  # no stand-in
    digests["frontend"] = push_manifest(moto_reset, "betterprompts/frontend", "v3")
    out = step.apply(make_context(tmp_path, env, step.id, settings=settings, upstream=up))
    assert {svc: i["digest"] for svc, i in out["images"].items()} == digests
    # verify by DescribeImages: a tag that disappears fails verification
    up2 = {**up, "images": out}
    assert not failed(step.verify(make_context(tmp_path, env, step.id, settings=settings, upstream=up2)))
    ecr(moto_reset).batch_delete_image(repositoryName="betterprompts/frontend", imageIds=[{"imageTag": "v3"}])
    bad = failed(step.verify(make_context(tmp_path, env, step.id, settings=settings, upstream=up2)))
    assert [c.name for c in bad] == ["image betterprompts/frontend:v3 in ECR"]
    # rollback never deletes pushed images
    assert not any(i["stand_in"] for i in out["images"].values())
    step.rollback(make_context(tmp_path, env, step.id, settings=settings, upstream=up2))
    assert len(ecr(moto_reset).list_images(repositoryName="betterprompts/api-gateway")["imageIds"]) == 1
    plan = step.plan(make_context(tmp_path, env, step.id, settings={}, upstream=up))
    assert len(plan.blocking) == 5 and "no image tag configured" in plan.blocking[0].message


PUSH_TO_MOTO = """
import json, os, sys, boto3
ref = sys.argv[1]
repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
ecr = boto3.client("ecr", region_name="us-east-1", endpoint_url=os.environ["FAKE_DOCKER_MOTO"],
                   aws_access_key_id="t", aws_secret_access_key="t")
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "b" * 64,
                       "size": 1}, "layers": [], "annotations": {"built-from": ref}}
ecr.put_image(repositoryName=repo, imageManifest=json.dumps(manifest), imageTag=tag)
"""


def test_images_build_and_push_with_a_working_builder(
    tmp_path: Path, moto_reset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake `docker` whose engine answers and whose `push` writes the manifest into moto's ECR (no engine here)."""
    import sys

    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "docker.log"
    (tmp_path / "push.py").write_text(PUSH_TO_MOTO)
    script = (
        f'echo "$@" >> {log}\n'
        'case "$1" in\n'
        "  info) echo 27.3.1 ;;\n"
        "  login) cat > /dev/null ;;\n"
        f'  push) {sys.executable} {tmp_path / "push.py"} "$2" || exit 1 ;;\n'
        "esac\n"
    )
    fake_tool(fake, "docker", script)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_MOTO", moto_reset.endpoint_url)
    env = make_env(moto_reset, kind="aws")
    two = {"services": ["frontend", "api-gateway"]}  # two services keep the fake pushes (python processes) cheap
    up = {"ecr-repos": EcrRepos().apply(make_context(tmp_path, env, "ecr-repos", settings=two))}
    settings = {
        **two,
        "source_dir": str(tmp_path / "src"),
        "tag": "v9",
        "contexts": {"api-gateway": "backend/api-gateway"},
    }
    step = Images()
    plan = step.plan(make_context(tmp_path, env, step.id, settings=settings, upstream=up))
    assert plan.data["mode"] == "build" and plan.data["builder"] == "docker 27.3.1"
    assert {c.detail for c in plan.changes} == {"build and push with docker 27.3.1"} and len(plan.changes) == 2
    ctx = make_context(tmp_path, env, step.id, settings=settings, upstream=up)
    out = step.apply(ctx)
    calls = [c for c in log.read_text().splitlines() if not c.startswith("info ")]  # detection: once per context
    uri = out["images"]["api-gateway"]["uri"]
    assert calls[0].startswith("login --username AWS --password-stdin ")  # the token never on the command line
    assert f"build -t {uri}:v9 {tmp_path / 'src' / 'backend' / 'api-gateway'}" in calls
    assert f"push {uri}:v9" in calls
    assert sum(c.startswith("push ") for c in calls) == 2
    assert out["mode"] == "build" and not any(i["stand_in"] for i in out["images"].values())
    assert "registry-login" in [a for a, _ in ctx.recorded_intents]
    # idempotent: the tags are in ECR now, nothing is rebuilt
    step.apply(make_context(tmp_path, env, step.id, settings=settings, upstream=up))
    assert sum(c.startswith("build ") for c in log.read_text().splitlines()) == 2
    assert step.plan(make_context(tmp_path, env, step.id, settings=settings, upstream=up)).is_noop


# -- Kubernetes steps ----------------------------------------------------------------------------------------------
def test_kube_steps_skip_without_a_cluster(tmp_path: Path) -> None:
    env = make_env(None)
    for step in (K8sConfig(), K8sDeploy(), Hpa(), Ingress()):
        ctx = make_context(tmp_path, env, step.id)
        reason = step.skip_reason(ctx)  # asked by the engine before plan (plan itself does not repeat it)
        assert reason and "no Kubernetes cluster" in reason and "kubeconfig" in reason


def test_k8s_config_moves_compose_credentials_to_secrets_manager(
    tmp_path: Path, moto_reset: Any, kube: KubeApiDouble
) -> None:
    env = make_env(moto_reset, kube)
    up = {
        "rds": {"endpoint": "bp.abc.us-east-1.rds.amazonaws.com:5432"},
        "elasticache": {"endpoint": "bp.cache.test", "port": 6380},
    }
    step = K8sConfig()
    pctx = make_context(tmp_path, env, step.id, upstream=up)
    plan = step.plan(pctx)
    blob = json.dumps(plan.to_dict())
    assert all(v not in blob for v in FAKE_SECRETS), "plan must not carry secret values"
    assert "Secrets Manager betterprompts/sandbox/compose/api-gateway" in {c.target for c in plan.changes}
    assert f"Secret/{NS}/api-gateway-secrets" in {c.target for c in plan.changes}
    ctx = make_context(tmp_path, env, step.id, upstream=up, plan=plan)
    out = step.apply(ctx)
    # nothing secret in outputs, logs or intents
    recorded = json.dumps([out, ctx.recorded_logs, ctx.recorded_intents], default=str)
    assert all(v not in recorded for v in FAKE_SECRETS)
    assert out["moved_count"] == 15
    # the outputs survive the ledger's redaction intact (no secret-looking keys hiding useful values)
    assert redact_obj(out) == out
    assert redact(json.dumps([c.target for c in plan.changes])) == json.dumps([c.target for c in plan.changes])
    assert out["secrets"]["api-gateway"]["keys"] == [
        "DATABASE_PASSWORD",
        "DATABASE_URL",
        "JWT_SECRET",
        "REDIS_PASSWORD",
    ]
    # Secrets Manager holds the Compose values verbatim
    sm = boto3.client(
        "secretsmanager",
        region_name="us-east-1",
        endpoint_url=moto_reset.endpoint_url,
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    stored = json.loads(sm.get_secret_value(SecretId="betterprompts/sandbox/compose/api-gateway")["SecretString"])
    assert stored["JWT_SECRET"] == "fake-jwt-signing-secret-0b8e44"
    assert "postgres:5432" in stored["DATABASE_URL"]
    # the Kubernetes Secret carries them, pointed at RDS / ElastiCache
    secret = kube.get_object("v1", "Secret", "api-gateway-secrets", NS)
    assert secret is not None
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["JWT_SECRET"] == "fake-jwt-signing-secret-0b8e44"
    assert "@bp.abc.us-east-1.rds.amazonaws.com:5432/betterprompts" in data["DATABASE_URL"]
    ic = kube.get_object("v1", "Secret", "intent-classifier-secrets", NS)
    assert ic is not None
    assert base64.b64decode(ic["data"]["REDIS_URL"]).decode().endswith("@bp.cache.test:6380/1")
    cm = kube.get_object("v1", "ConfigMap", "betterprompts-config", NS)
    assert cm is not None
    assert cm["data"]["DATABASE_HOST"] == "bp.abc.us-east-1.rds.amazonaws.com"
    assert cm["data"]["REDIS_PORT"] == "6380"
    assert kube.get_object("v1", "Namespace", NS) is not None
    assert {r.query.get("fieldManager") for r in kube.apply_requests()} == {"bpmigrate"}
    vctx = make_context(tmp_path, env, step.id, upstream=up)
    assert not failed(step.verify(vctx))
    # re-apply: converges, no new Secrets Manager version
    versions = len(sm.list_secret_version_ids(SecretId="betterprompts/sandbox/compose/api-gateway")["Versions"])
    step.apply(make_context(tmp_path, env, step.id, upstream=up))
    assert len(sm.list_secret_version_ids(SecretId="betterprompts/sandbox/compose/api-gateway")["Versions"]) == versions
    assert step.plan(make_context(tmp_path, env, step.id, upstream=up)).is_noop
    # tampering with a Kubernetes Secret is caught (values compared, never shown)
    secret["data"]["JWT_SECRET"] = base64.b64encode(b"tampered").decode()
    kube.put_object(secret)
    bad = failed(step.verify(make_context(tmp_path, env, step.id, upstream=up)))
    assert [c.name for c in bad] == [f"Secret/{NS}/api-gateway-secrets"]
    assert "fake-jwt" not in json.dumps([c.observed for c in bad])
    # rollback removes ConfigMaps and Secrets, keeps Secrets Manager; idempotent
    step.rollback(make_context(tmp_path, env, step.id, upstream=up))
    assert kube.get_object("v1", "Secret", "api-gateway-secrets", NS) is None
    assert kube.get_object("v1", "ConfigMap", "betterprompts-config", NS) is None
    assert sm.describe_secret(SecretId="betterprompts/sandbox/compose/api-gateway")["Name"]
    step.rollback(make_context(tmp_path, env, step.id, upstream=up))


def test_k8s_config_uses_the_target_database_secret(tmp_path: Path, moto_reset: Any, kube: KubeApiDouble) -> None:
    body = make_env(moto_reset, kube).model_dump()
    body["postgres"] = {"target": {"host": "db.rds.test", "user": "bp_app", "password_secret": "bp/sandbox/rds"}}
    env = EnvConfig.model_validate(body)
    step = K8sConfig()
    with pytest.raises(DependencyNotReady, match="bp/sandbox/rds"):
        step.plan(make_context(tmp_path, env, step.id))
    sm = boto3.client(
        "secretsmanager",
        region_name="us-east-1",
        endpoint_url=moto_reset.endpoint_url,
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    sm.create_secret(Name="bp/sandbox/rds", SecretString=json.dumps({"password": "rds-Pa$$word-91x"}))
    out = step.apply(make_context(tmp_path, env, step.id))
    assert "rds-Pa$$word-91x" not in json.dumps(out)
    secret = kube.get_object("v1", "Secret", "api-gateway-secrets", NS)
    assert secret is not None
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["DATABASE_PASSWORD"] == "rds-Pa$$word-91x"
    assert (
        data["DATABASE_URL"] == "postgres://bp_app:rds-Pa%24%24word-91x@db.rds.test:5432/betterprompts?sslmode=disable"
    )
    assert data["REDIS_PASSWORD"] == "fake-redis-password-77c0d3"  # not a database credential: unchanged
    pg = kube.get_object("v1", "Secret", "prompt-generator-secrets", NS)
    assert pg is not None
    assert "rds-Pa%24%24word-91x@db.rds.test" in base64.b64decode(pg["data"]["DATABASE_URL"]).decode()
    assert not failed(step.verify(make_context(tmp_path, env, step.id)))


def test_k8s_config_refuses_the_sample_compose_file_outside_the_sandbox(
    tmp_path: Path, moto_reset: Any, kube: KubeApiDouble
) -> None:
    env = make_env(moto_reset, kube, kind="aws")
    step = K8sConfig()
    with pytest.raises(ConfigError, match="compose_file is not set"):
        step.plan(make_context(tmp_path, env, step.id))
    with pytest.raises(ConfigError, match="bundled sample"):
        step.apply(make_context(tmp_path, env, step.id, settings={"compose_file": str(COMPOSE)}))
    real = tmp_path / "docker-compose.yml"
    real.write_text("services:\n  api-gateway:\n    environment:\n      JWT_SECRET: real-looking-secret-123\n")
    out = step.apply(make_context(tmp_path, env, step.id, settings={"compose_file": str(real)}))
    assert out["secrets"]["api-gateway"]["keys"] == ["JWT_SECRET"] and out["moved_count"] == 1


def test_k8s_config_needs_the_data_endpoints(tmp_path: Path, moto_reset: Any, kube: KubeApiDouble) -> None:
    env = EnvConfig.model_validate(
        {**make_env(moto_reset, kube).model_dump(), "postgres": {"target": {"host": "from-terraform"}}}
    )
    step = K8sConfig()
    plan = step.plan(make_context(tmp_path, env, step.id))
    assert any("RDS endpoint" in u for u in plan.unknown)
    with pytest.raises(DependencyNotReady, match="RDS endpoint"):
        step.apply(make_context(tmp_path, env, step.id))


def images_output(tag: str) -> dict[str, Any]:
    return {
        "images": {
            svc: {"image": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/betterprompts/{svc}:{tag}", "tag": tag}
            for svc in SERVICES
        }
    }


def deployment_image(kube: KubeApiDouble, name: str) -> str:
    obj = kube.get_object("apps/v1", "Deployment", name, NS)
    assert obj is not None
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def test_k8s_deploy_rollout_and_quick_rollback(tmp_path: Path, kube: KubeApiDouble) -> None:
    env = make_env(None, kube)
    step = K8sDeploy()
    up1 = {"images": images_output("v1")}
    plan = step.plan(make_context(tmp_path, env, step.id, upstream=up1))
    assert not plan.blocking, [f.message for f in plan.blocking]  # the security check passes the templates
    assert [c.action for c in plan.changes] == ["create"] * 10
    out1 = step.apply(make_context(tmp_path, env, step.id, upstream=up1))
    assert out1["previous_images"] == dict.fromkeys(SERVICES)
    assert deployment_image(kube, "api-gateway").endswith("api-gateway:v1")
    assert not failed(step.verify(make_context(tmp_path, env, step.id, upstream=up1)))
    assert step.plan(make_context(tmp_path, env, step.id, upstream=up1)).is_noop
    # deploy v2: the v1 manifests are recorded first
    up2 = {"images": images_output("v2")}
    plan2 = step.plan(make_context(tmp_path, env, step.id, upstream=up2))
    assert [c.action for c in plan2.changes] == ["update"] * 5
    ctx2 = make_context(tmp_path, env, step.id, upstream=up2)
    out2 = step.apply(ctx2)
    assert out2["previous_images"]["frontend"].endswith("frontend:v1")
    assert any(kind == "k8s-previous-manifests" for kind, *_ in ctx2.recorded_artifacts)
    assert [a for a, _ in ctx2.recorded_intents][:2] == ["record-previous-manifests", "kube-apply"]
    # verify notices a Deployment running another image
    assert failed(step.verify(make_context(tmp_path, env, step.id, upstream=up1)))
    # quick rollback: v1 restored everywhere
    step.rollback(make_context(tmp_path, env, step.id, upstream=up2))
    assert {deployment_image(kube, s).rsplit(":", 1)[1] for s in SERVICES} == {"v1"}
    assert not failed(step.verify(make_context(tmp_path, env, step.id, upstream=up1)))
    step.rollback(make_context(tmp_path, env, step.id, upstream=up2))  # idempotent
    assert {deployment_image(kube, s).rsplit(":", 1)[1] for s in SERVICES} == {"v1"}


def test_k8s_deploy_rollout_timeout_names_the_pod_reason_then_rolls_back(tmp_path: Path, kube: KubeApiDouble) -> None:
    env = make_env(None, kube)
    step = K8sDeploy()
    up1 = {"images": images_output("v1")}
    step.apply(make_context(tmp_path, env, step.id, upstream=up1))
    kube.never_ready("Deployment", NS, "api-gateway", reason="ImagePullBackOff")
    up2 = {"images": images_output("v2-broken")}
    settings = {"rollout_timeout": 1}
    with pytest.raises(StepFailed) as err:
        step.apply(make_context(tmp_path, env, step.id, upstream=up2, settings=settings))
    text = str(err.value)
    assert "api-gateway" in text and "ImagePullBackOff" in text
    assert "bpmigrate rollback --step k8s-deploy" in err.value.next_cmd
    # a retry of the failed deployment keeps the same way back (the v1 manifests), not the half-applied v2
    with pytest.raises(StepFailed):
        step.apply(make_context(tmp_path, env, step.id, upstream=up2, settings=settings))
    kube.set_ready("Deployment", NS, "api-gateway")  # the broken pods go away with the old ReplicaSet
    step.rollback(make_context(tmp_path, env, step.id, settings=settings))
    assert {deployment_image(kube, s).rsplit(":", 1)[1] for s in SERVICES} == {"v1"}


def test_k8s_deploy_rollback_of_a_first_deployment_deletes_it(tmp_path: Path, kube: KubeApiDouble) -> None:
    env = make_env(None, kube)
    step = K8sDeploy()
    step.rollback(make_context(tmp_path, env, step.id))  # nothing applied yet: no-op
    step.apply(make_context(tmp_path, env, step.id, upstream={"images": images_output("v1")}))
    step.rollback(make_context(tmp_path, env, step.id))
    assert kube.objects("Deployment") == [] and kube.objects("Service") == []


def test_k8s_deploy_needs_images(tmp_path: Path, kube: KubeApiDouble) -> None:
    env = make_env(None, kube)
    plan = K8sDeploy().plan(make_context(tmp_path, env, "k8s-deploy"))
    assert plan.unknown and plan.changes
    with pytest.raises(DependencyNotReady):
        K8sDeploy().apply(make_context(tmp_path, env, "k8s-deploy"))


def test_hpa_verify_requires_metrics(tmp_path: Path, kube: KubeApiDouble) -> None:
    env = make_env(None, kube)
    step = Hpa()
    settings = {"metrics_wait_s": 0}
    out = step.apply(make_context(tmp_path, env, step.id, settings=settings))
    assert len(out["hpas"]) == 5
    hpa = kube.get_object("autoscaling/v2", "HorizontalPodAutoscaler", "api-gateway", NS)
    assert hpa is not None
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    checks = step.verify(make_context(tmp_path, env, step.id, settings=settings))
    assert {c.name for c in failed(checks)} == {f"HorizontalPodAutoscaler/{NS}/{s} reads metrics" for s in SERVICES}
    for svc in SERVICES:
        kube.set_status(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            NS,
            svc,
            {
                "currentReplicas": 2,
                "desiredReplicas": 2,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}
                ],
            },
        )
    checks = step.verify(make_context(tmp_path, env, step.id, settings=settings))
    assert not failed(checks)
    assert "cpu 12 %" in {str(c.observed) for c in checks}
    step.rollback(make_context(tmp_path, env, step.id))
    assert kube.objects("HorizontalPodAutoscaler") == []


def create_alb(moto: Any) -> tuple[str, str]:
    """An ALB in moto (what the Load Balancer Controller creates): (DNS name, canonical hosted zone id)."""
    kw = {"region_name": "us-east-1", "endpoint_url": moto.endpoint_url}
    ec2 = boto3.client("ec2", aws_access_key_id="t", aws_secret_access_key="t", **kw)
    vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.99.{i}.0/24", AvailabilityZone=f"us-east-1{az}")["Subnet"][
            "SubnetId"
        ]
        for i, az in ((1, "a"), (2, "b"))
    ]
    elb = boto3.client("elbv2", aws_access_key_id="t", aws_secret_access_key="t", **kw)
    lb = elb.create_load_balancer(Name="k8s-betterpr-betterpr", Subnets=subnets, Type="application")["LoadBalancers"][0]
    return str(lb["DNSName"]), str(lb["CanonicalHostedZoneId"])


def test_ingress_with_acm_certificate(tmp_path: Path, moto_reset: Any, kube: KubeApiDouble) -> None:
    env = make_env(moto_reset, kube)
    step = Ingress()
    plan = step.plan(make_context(tmp_path, env, step.id))
    assert {c.target for c in plan.changes} == {"acm:api.betterprompts.test", f"Ingress/{NS}/betterprompts"}
    # no Load Balancer Controller: the Ingress gets no ALB address, apply fails after alb_timeout naming the cause
    with pytest.raises(StepFailed, match="no ALB address") as err:
        step.apply(make_context(tmp_path, env, step.id, settings={"alb_timeout": 0.5}))
    assert "describe ingress betterprompts" in err.value.next_cmd
    alb, zone = create_alb(moto_reset)
    kube.set_ingress_hostname(alb)  # the controller provisions the ALB and writes its address
    ctx = make_context(tmp_path, env, step.id)
    out = step.apply(ctx)
    assert out["certificate_status"] == "ISSUED" and out["host"] == "api.betterprompts.test"
    assert out["alb_dns_name"] == out["alb_hostname"] == alb  # what dns-cutover reads
    assert out["alb_zone_id"] == zone  # for a Route53 alias record to the ALB
    assert str(out["alb_arn"]).startswith("arn:aws:elasticloadbalancing:")  # observability's ALB alarms
    assert any("ACM validation record" in line for line in ctx.recorded_logs)
    ing = kube.get_object("networking.k8s.io/v1", "Ingress", "betterprompts", NS)
    assert ing is not None
    assert ing["spec"]["ingressClassName"] == "alb"
    assert ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/certificate-arn"] == out["certificate_arn"]
    assert ing["spec"]["rules"][0]["host"] == "api.betterprompts.test"
    assert not failed(step.verify(make_context(tmp_path, env, step.id)))
    assert step.apply(make_context(tmp_path, env, step.id))["certificate_arn"] == out["certificate_arn"]  # reused
    step.rollback(make_context(tmp_path, env, step.id))
    assert kube.get_object("networking.k8s.io/v1", "Ingress", "betterprompts", NS) is None
    acm = boto3.client(
        "acm",
        region_name="us-east-1",
        endpoint_url=moto_reset.endpoint_url,
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    assert acm.list_certificates()["CertificateSummaryList"] == []
    assert failed(step.verify(make_context(tmp_path, env, step.id)))


# -- HTTP steps ----------------------------------------------------------------------------------------------------
def test_http_steps_skip_without_endpoints(tmp_path: Path) -> None:
    env = make_env(None)
    for step in (AppSmoke(),):  # load-test: tests/test_load.py
        ctx = make_context(tmp_path, env, step.id)
        reason = step.skip_reason(ctx)
        assert reason and "configured" in reason and "migrate.toml" in reason  # the engine asks before plan


def test_app_smoke_passes_and_fails(tmp_path: Path) -> None:
    env = make_env(None)
    step = AppSmoke()
    with ControlledServer() as gw, ControlledServer() as front:
        settings = {
            "endpoints": {"api-gateway": gw.url, "frontend": front.url},
            "health_paths": {"frontend": "/api/health"},
            "checks": [
                {
                    "name": "enhance",
                    "service": "api-gateway",
                    "path": "/api/v1/enhance",
                    "method": "POST",
                    "json": {"text": "hi"},
                    "expect_contains": "ok",
                }
            ],
        }
        plan = step.plan(make_context(tmp_path, env, step.id, settings=settings))
        assert [c.target for c in plan.changes] == [
            f"GET {gw.url}/health",
            f"GET {front.url}/api/health",
            f"POST {gw.url}/api/v1/enhance",
        ]
        assert gw.count == 0 and front.count == 0  # plan sends nothing
        out = step.apply(make_context(tmp_path, env, step.id, settings=settings))
        assert out["passed"] == 3 and all(c["ok"] for c in out["checks"])
        assert front.paths == ["/api/health"] and gw.paths == ["/health", "/api/v1/enhance"]
        assert not failed(step.verify(make_context(tmp_path, env, step.id, settings=settings)))
        gw.fail_every = 1
        gw.fail_status = 503
        with pytest.raises(StepFailed, match="2 of 3 smoke check"):
            step.apply(make_context(tmp_path, env, step.id, settings=settings))
        assert [c.name for c in failed(step.verify(make_context(tmp_path, env, step.id, settings=settings)))] == [
            "api-gateway health"
        ]


# -- bring your own manifests; the schema check in plan ----------------------------------------------------------------
USER_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: team-api, namespace: betterprompts}
spec:
  replicas: 2
  selector: {matchLabels: {app: team-api}}
  template:
    metadata: {labels: {app: team-api}}
    spec:
      securityContext: {runAsNonRoot: true}
      containers:
        - name: api
          image: registry.example.com/team/api:1.2.3
          command: ["sh", "-c", "exec api --home $HOME"]
          resources: {limits: {cpu: 500m, memory: 256Mi}}
          securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}
---
apiVersion: v1
kind: Service
metadata: {name: team-api, namespace: betterprompts}
spec:
  selector: {app: team-api}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_k8s_deploy_applies_and_rolls_back_a_user_manifests_dir(tmp_path: Path, kube: KubeApiDouble) -> None:
    env = make_env(None, kube)
    own = tmp_path / "deploy"
    own.mkdir()
    (own / "app.yaml").write_text(USER_DEPLOYMENT)
    settings = {"manifests_dir": str(own)}
    step = K8sDeploy()
    plan = step.plan(make_context(tmp_path, env, step.id, settings=settings))  # no images needed: the team's own
    assert not plan.blocking, plan.blocking
    assert [(c.action, c.target) for c in plan.changes] == [
        ("create", f"Deployment/{NS}/team-api"),
        ("create", f"Service/{NS}/team-api"),
    ]
    out = step.apply(make_context(tmp_path, env, step.id, settings=settings))
    assert out["deployments"] == [f"Deployment/{NS}/team-api"]
    live = kube.get_object("apps/v1", "Deployment", "team-api", NS)
    assert live is not None and "$HOME" in live["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert not failed(step.verify(make_context(tmp_path, env, step.id, settings=settings)))
    assert step.plan(make_context(tmp_path, env, step.id, settings=settings)).is_noop
    # a change is planned as an update naming the changed field
    (own / "app.yaml").write_text(USER_DEPLOYMENT.replace("replicas: 2", "replicas: 3"))
    [change] = step.plan(make_context(tmp_path, env, step.id, settings=settings)).changes
    assert change.action == "update" and "spec.replicas: 2 -> 3" in change.detail
    step.rollback(make_context(tmp_path, env, step.id, settings=settings))
    assert kube.objects("Deployment") == [] and kube.objects("Service") == []
    # a manifest the API server would reject (unknown field) is a blocking finding, naming the field
    (own / "app.yaml").write_text(USER_DEPLOYMENT.replace("replicas: 2", "replicas: 2\n  replicaz: 3"))
    blocks = step.plan(make_context(tmp_path, env, step.id, settings=settings)).blocking
    assert any("schema (Kubernetes 1.30)" in f.message and "replicaz" in f.message for f in blocks), blocks


def test_hpa_takes_only_the_autoscalers_of_a_user_manifests_dir(tmp_path: Path, kube: KubeApiDouble) -> None:
    own = tmp_path / "deploy"
    own.mkdir()
    hpa = (ROOT / "templates/k8s/app/30-hpa.yaml").read_text().replace("${namespace}", NS)
    (own / "all.yaml").write_text(USER_DEPLOYMENT + "---\n" + hpa)
    docs = Hpa().manifests(make_context(tmp_path, make_env(None, kube), "hpa", settings={"manifests_dir": str(own)}))
    assert {d["kind"] for d in docs} == {"HorizontalPodAutoscaler"} and len(docs) == 5
