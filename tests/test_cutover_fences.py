"""The writer-fence kinds as the switch drives them: compose (a fake `docker` on PATH records its argv), http (the
stand-in app's own maintenance/repoint URLs are exercised in test_cutover_standins), and the refusal of unknown kinds."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from migrate.adapters.fences import OVERRIDE_NAME, ComposeFence, DataTarget, build
from migrate.adapters.proc import ProcRunner
from migrate.errors import ConfigError, StepFailed


@pytest.fixture()
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    script = bin_dir / "docker"
    script.write_text(f'#!/bin/sh\necho "$DOCKER_HOST|$*" >> {log}\n[ -n "$FAIL" ] && exit 1\nexit 0\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_compose_fence_stops_repoints_through_an_override_and_brings_up(tmp_path: Path, fake_docker: Path) -> None:
    compose = tmp_path / "srv" / "docker-compose.yml"
    compose.parent.mkdir()
    compose.write_text("services: {api-gateway: {image: api}}\n")
    raw = {"compose_file": str(compose), "project": "bp", "services": ["api-gateway"], "docker_host": "ssh://h"}
    fence = build("old", {"kind": "compose", **raw}, proc=ProcRunner())
    assert isinstance(fence, ComposeFence)
    fence.on()
    url = "postgresql://bp:${BP_RDS_PASSWORD}@rds.example:5432/betterprompts"
    fence.point(DataTarget("target", {"DATABASE_URL": url, "REDIS_URL": "rediss://cache.example:6379/0"}))
    fence.off()
    calls = fake_docker.read_text().splitlines()
    assert calls[0] == f"ssh://h|compose -f {compose} -p bp stop api-gateway"
    override = compose.parent / OVERRIDE_NAME
    assert calls[1] == f"ssh://h|compose -f {compose} -f {override} -p bp up -d api-gateway"
    env = json.loads(override.read_text())["services"]["api-gateway"]["environment"]
    assert env["DATABASE_URL"] == url  # the password variable is left for Compose to interpolate on the host
    assert fence.state()["database_url"] == url


def test_a_failing_compose_command_fails_the_fence_and_unknown_kinds_are_refused(
    tmp_path: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("services: {}\n")
    fence = build("old", {"kind": "compose", "compose_file": str(compose), "services": ["api"]}, proc=ProcRunner())
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(StepFailed, match="docker compose stop api"):
        fence.on()
    with pytest.raises(ConfigError, match="kind 'ssh' is not known"):
        build("x", {"kind": "ssh"})
    with pytest.raises(ConfigError, match="needs compose_file and services"):
        build("x", {"kind": "compose"})
