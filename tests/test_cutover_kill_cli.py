"""SIGKILL of the bpmigrate process itself (engine, lease lock, SQLite ledger) at random points inside data-switch and
dns-cutover, then `apply` again: the engine reconciles the interrupted step and its apply resumes from the ledger's
checkpoints — same end state, every acknowledged write of the logging writer exactly once in the target."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.aws_route53 import from_config
from tests.cutover_stack import LoggingWriter, Stack, audit, stack  # noqa: F401 - fixture
from tests.engine_helpers import REPO, run_cli


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _project(tmp_path: Path, stk: Stack) -> Path:
    project = tmp_path / "project"
    (project / "cutphases").mkdir(parents=True)
    (project / "cutphases" / "p2_data.py").write_text(
        "import phases.p2_data.rds_restore as r, phases.p2_data.pg_sync as p, phases.p2_data.data_validate as v\n\n\n"
        "class RdsRestore(r.RdsRestore):\n    depends_on = ()\n\n\n"
        "class PgSyncStep(p.PgSyncStep):\n    depends_on = ('rds-restore',)\n\n\n"
        "class DataValidate(v.DataValidate):\n    depends_on = ('rds-restore',)\n"
    )
    (project / "cutphases" / "p5_cutover.py").write_text(
        "import phases.p5_cutover.data_switch as d, phases.p5_cutover.dns_cutover as n\n\n\n"
        "class DataSwitch(d.DataSwitch):\n    depends_on = ('pg-sync', 'data-validate')\n\n\n"
        "class DnsCutover(n.DnsCutover):\n    depends_on = ('data-switch',)\n"
    )
    pg = {role: stk.env.postgres[role].model_dump(exclude_none=True) for role in ("source", "target")}
    steps: dict[str, dict[str, Any]] = {
        "rds-restore": {"analyze": False},
        "data-switch": {"fences": stk.fences(), "catchup_timeout_s": 30},
        "dns-cutover": stk.dns_settings(min_sample=20),
    }
    lines = [
        '[project]\nname = "kill-test"\nphases_dir = "cutphases"\nstate_dir = "state"\ndefault_env = "rehearsal"\n',
        "[environments.rehearsal]",
        'kind = "sandbox"',
        f'domain = "{stk.env.domain}"',
        f'aws = {{ region = "us-east-1", endpoint_url = "{stk.env.aws.endpoint_url}" }}',
        f"postgres = {_toml(pg)}",
        "",
    ]
    for step, settings in steps.items():
        lines.append(f"[steps.{step}]")
        lines += [f"{k} = {_toml(v)}" for k, v in settings.items()]
        lines.append("")
    (project / "migrate.toml").write_text("\n".join(lines))
    return project


def _kill_during(project: Path, step: str, at: float) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrate.cli", "apply", "--step", step, "--yes"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        return proc.wait(at)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        return -9


@pytest.mark.slow
def test_sigkill_of_bpmigrate_inside_the_switch_and_the_dns_cutover_then_apply_again(
    stack: Stack,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    rng = random.Random(16)
    project = _project(tmp_path, stack)
    for step in ("rds-restore", "data-validate"):  # phase 2's exact proofs, taken before the app writes
        done = run_cli(project, "apply", "--step", step, "--yes", timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    with LoggingWriter(stack.router_url) as writer:
        writer.wait_acked(20)
        done = run_cli(project, "apply", "--step", "pg-sync", "--yes", timeout=300)  # copy + stream under writes
        assert done.returncode == 0, done.stdout + done.stderr
        kills = []
        for step, window in (("data-switch", 4.0), ("dns-cutover", 8.0)):
            # bpmigrate's own start-up takes ~1-2 s of the window: the kill lands inside the step's apply
            code = _kill_during(project, step, round(rng.uniform(1.5, window), 2))
            again = run_cli(project, "apply", "--step", step, "--yes", timeout=300)
            assert again.returncode == 0, again.stdout + again.stderr
            kills.append((step, code, "interrupted while applying" in again.stdout + again.stderr))
            writer.wait_acked(20)
        status = json.loads(run_cli(project, "status", "--json").stdout)
    assert any(code == -9 and mid for _, code, mid in kills), kills  # a run really died inside a step's apply
    states = {s["id"]: s["state"] for phase in status["phases"] for s in phase["steps"]}
    assert states["data-switch"] == "verified" and states["dns-cutover"] == "verified", states
    zone = from_config(stack.env).find_zone(f"api.{stack.env.domain}")
    assert zone and from_config(stack.env).weights(zone, f"api.{stack.env.domain}", "CNAME")["new-stack"] == 100
    result = audit(stack.dst, writer.log.acked)
    assert result["lost"] == 0 and result["duplicated"] == 0, (result, kills)
