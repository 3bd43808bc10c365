"""doctor: each check on its own, against real servers (and one stub for the negative parity case)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from migrate.adapters import Adapters
from migrate.adapters.postgres import ExtensionUse
from migrate.config import Config, EnvConfig, ProjectSettings
from migrate.doctor import (
    CHECKS,
    DoctorContext,
    check_aws,
    check_clock,
    check_disk,
    check_extension_parity,
    check_kube,
    check_postgres,
    check_redis,
    check_replication_slots,
    run_checks,
)


def _env(pg_source: Any, pg_target: Any, redis_source: Any, redis_target: Any, moto: Any, *, cluster: bool = False) -> EnvConfig:
    def pg(server: Any, dbname: str) -> dict[str, Any]:
        return {"host": server.host, "port": server.port, "user": server.user, "dbname": dbname, "bin_dir": str(server.bin_dir)}

    return EnvConfig.model_validate(
        {
            "name": "doc",
            "kind": "sandbox",
            "aws": {"region": "us-east-1", "endpoint_url": moto.endpoint_url},
            "postgres": {"source": pg(pg_source, "postgres"), "target": pg(pg_target, "postgres")},
            "redis": {
                "source": {"host": redis_source.host, "port": redis_source.port},
                "target": {"host": redis_target.host, "port": redis_target.port, "cluster_mode": cluster},
            },
            "kube": {"kubeconfig": "/nonexistent/kubeconfig"},
        }
    )


@pytest.fixture()
def ctx(tmp_path: Path, pg_source: Any, pg_target: Any, redis_source: Any, redis_target: Any, moto_server: Any) -> DoctorContext:
    env = _env(pg_source, pg_target, redis_source, redis_target, moto_server)
    cfg = Config(project=ProjectSettings(), environments={"doc": env}, root=tmp_path)
    return DoctorContext(cfg, env, Adapters(env, project_root=tmp_path, state_dir=tmp_path / "state"), {})


def test_servers_reachable(ctx: DoctorContext) -> None:
    results = check_postgres(ctx) + check_redis(ctx)
    assert [r.status for r in results] == ["ok"] * 4, results
    assert "PostgreSQL 16" in results[0].detail


def test_aws_identity_through_moto(ctx: DoctorContext) -> None:
    (res,) = check_aws(ctx)
    assert res.status == "ok" and "emulated" in res.detail


def test_unreachable_postgres_is_blocking(tmp_path: Path, ctx: DoctorContext) -> None:
    env = ctx.env.model_copy(update={"postgres": {"source": ctx.env.postgres["source"].model_copy(update={"port": 1})}})
    bad = DoctorContext(ctx.config, env, Adapters(env, project_root=tmp_path, state_dir=tmp_path), {})
    (res, _) = check_postgres(bad)
    assert res.status == "fail" and res.blocking and res.fix


def test_cluster_mode_multi_db_finding(tmp_path: Path, ctx: DoctorContext, redis_source: Any) -> None:
    import redis

    for db in (0, 1, 2):
        redis.Redis(host=redis_source.host, port=redis_source.port, db=db).set(f"doctor:{db}", "x")
    env = ctx.env.model_copy(update={"redis": {**ctx.env.redis, "target": ctx.env.redis["target"].model_copy(update={"cluster_mode": True})}})
    c = DoctorContext(ctx.config, env, Adapters(env, project_root=tmp_path, state_dir=tmp_path), {})
    finding = [r for r in check_redis(c) if r.check == "Redis logical DBs"]
    assert finding and finding[0].status == "warn" and "db_prefix" in finding[0].fix
    for db in (0, 1, 2):
        redis.Redis(host=redis_source.host, port=redis_source.port, db=db).delete(f"doctor:{db}")


def test_extension_parity_flags_missing_extension(ctx: DoctorContext) -> None:
    class Pg(SimpleNamespace):
        needs_address = False

        def unreachable_reason(self) -> None:
            return None

    source = Pg(extension_uses=lambda: [ExtensionUse("uuid-ossp", "1.1", ["auth.users"]), ExtensionUse("vector", "0.8.0", ["ml.e"])])
    target = Pg(extensions_available=lambda: {"vector": "0.8.0", "plpgsql": "1.0"})
    stub = DoctorContext(ctx.config, ctx.env, ctx.adapters, {})
    stub.pg = lambda role: source if role == "source" else target  # type: ignore[method-assign]
    results = {r.check: r for r in check_extension_parity(stub)}
    assert results["extension uuid-ossp"].status == "fail" and results["extension uuid-ossp"].blocking
    assert "auth.users" in results["extension uuid-ossp"].detail
    assert results["extension vector"].status == "ok"


def test_extension_parity_real_servers(ctx: DoctorContext) -> None:
    results = check_extension_parity(ctx)
    assert results and all(r.status in ("ok", "warn", "fail") for r in results)


def test_disk_clock_kube_slots(ctx: DoctorContext) -> None:
    (disk,) = check_disk(ctx)
    assert disk.status == "ok" and "GB free" in disk.detail
    (clock,) = check_clock(ctx)
    assert clock.status == "ok"
    (kube,) = check_kube(ctx)
    assert kube.status == "warn" and not kube.blocking  # sandbox without a cluster
    assert check_replication_slots(ctx)[0].status in ("ok", "warn")


def test_every_check_runs_without_raising(ctx: DoctorContext) -> None:
    results = run_checks(ctx)
    assert len(results) >= len(CHECKS)
    assert {r.status for r in results} <= {"ok", "warn", "fail", "skip"}


def test_doctor_reports_a_teams_own_manifests_directory(tmp_path: Path) -> None:
    """Issue 20: `doctor` says what it found in a step's `manifests_dir` (kinds and counts), and fails on bad YAML."""
    from migrate.adapters import Adapters
    from migrate.config import load
    from migrate.doctor import DoctorContext, check_manifests_dirs

    manifests = tmp_path / "deploy"
    manifests.mkdir()
    (manifests / "api.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: api}\n"
    )
    base = (Path(__file__).resolve().parent.parent / "migrate.toml").read_text()
    config_path = tmp_path / "migrate.toml"
    config_path.write_text(base + f'\n[environments.sandbox.steps.k8s-deploy]\nmanifests_dir = "{manifests}"\n')
    cfg = load(str(config_path))
    env = cfg.env("sandbox")
    ctx = DoctorContext(cfg, env, Adapters(env, project_root=tmp_path, state_dir=tmp_path / "state"), {})
    (result,) = check_manifests_dirs(ctx)
    assert result.status == "ok" and "2 manifest(s): 1 Deployment, 1 Service" in result.detail
    (manifests / "broken.yaml").write_text("kind: [unclosed\n")
    (bad,) = check_manifests_dirs(ctx)
    assert bad.status == "fail" and "not valid YAML" in bad.detail
