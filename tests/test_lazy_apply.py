"""Issue 18: `apply --yes` plans lazily — each step is planned (or its recent recorded plan reused), shown and recorded
right before its own apply — so a run interrupted anywhere keeps the steps before it, and no step is planned twice
when `bpmigrate plan` just recorded a plan whose inputs are unchanged. Through the CLI, on a throw-away project."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

from tests.engine_helpers import run_cli

STEPS = '''
"""Steps that count their plans (state/plans.log) and create a file; `lazy-b` can die in its apply."""
from __future__ import annotations
import os, signal
from migrate.step import Change, Check, PlanResult, Step, StepContext

def _log(ctx, line):
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    (ctx.state_dir / "plans.log").open("a").write(line + "\\n")

class _Base(Step):
    phase = 1
    def plan(self, ctx: StepContext) -> PlanResult:
        _log(ctx, self.id)
        done = (ctx.state_dir / self.id).exists()
        return PlanResult(in_place=[self.id] if done else [], changes=[] if done else [Change("create", self.id)],
                          data={"stamp": os.environ.get("BPM_LAZY_STAMP", "")})
    def plan_still_current(self, ctx, shown):  # like Terraform's: the recorded inputs are still those of now
        return shown.data.get("stamp") == os.environ.get("BPM_LAZY_STAMP", "")
    def apply(self, ctx):
        if os.environ.get("BPM_LAZY_DIE") == self.id:
            os.kill(os.getpid(), signal.SIGKILL)
        (ctx.state_dir / self.id).write_text("x")
        return {}
    def verify(self, ctx):
        return [Check("exists", (ctx.state_dir / self.id).exists())]
    def rollback(self, ctx):
        (ctx.state_dir / self.id).unlink(missing_ok=True)

class A(_Base):
    """Step a."""
    id = "lazy-a"

class B(_Base):
    """Step b."""
    id = "lazy-b"
    depends_on = ("lazy-a",)
'''


def _project(tmp_path: Path, reuse: float = 900) -> Path:
    project = tmp_path / "lazy"
    (project / "lazyphases").mkdir(parents=True)
    (project / "lazyphases" / "p1_lazy.py").write_text(STEPS)
    (project / "migrate.toml").write_text(
        textwrap.dedent(f"""
        [project]
        name = "lazy"
        phases_dir = "lazyphases"
        state_dir = "state"
        default_env = "test"

        [environments.test]
        kind = "aws"
        plan_reuse_seconds = {reuse}
        """)
    )
    return project


def _plans(project: Path) -> list[str]:
    log = project / "state" / "plans.log"
    return log.read_text().split() if log.exists() else []


def _events(project: Path) -> list[tuple[str | None, str, str]]:
    with sqlite3.connect(project / "state" / "test.db") as conn:
        rows = conn.execute("SELECT step_id, kind, data FROM bpm_events ORDER BY id").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_yes_plans_and_records_each_step_right_before_its_apply(tmp_path: Path) -> None:
    project = _project(tmp_path)
    # killed inside lazy-b's apply: lazy-a was planned, recorded, applied and verified before lazy-b was even planned
    died = run_cli(project, "--env", "test", "apply", "--all", "--yes", env={"BPM_LAZY_DIE": "lazy-b"})
    assert died.returncode == -9
    assert _plans(project) == ["lazy-a", "lazy-b"]
    order = [(sid, kind) for sid, kind, data in _events(project) if kind == "plan_recorded" or '"begin_apply"' in data]
    assert order == [
        ("lazy-a", "plan_recorded"),
        ("lazy-a", "transition"),
        ("lazy-b", "plan_recorded"),
        ("lazy-b", "transition"),
    ]
    status = run_cli(project, "--env", "test", "--json", "status")
    assert '"lazy-a"' in status.stdout and "verified" in status.stdout

    # resumed: lazy-b's plan recorded just before it died is reused (its inputs are unchanged), not re-planned
    done = run_cli(project, "--env", "test", "apply", "--all", "--yes")
    assert done.returncode == 0, done.stderr
    assert _plans(project) == ["lazy-a", "lazy-b"]
    assert "reusing the plan recorded" in done.stdout


def test_a_plan_recorded_by_plan_is_reused_only_while_fresh_and_unchanged(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert run_cli(project, "--env", "test", "plan", env={"BPM_LAZY_STAMP": "1"}).returncode == 0
    assert _plans(project) == ["lazy-a", "lazy-b"]
    # inputs changed for both (stamp 2): re-planned before apply, and the stale operator plan is refused
    stale = run_cli(project, "--env", "test", "apply", "--all", "--yes", env={"BPM_LAZY_STAMP": "2"})
    assert stale.returncode != 0 and "stale" in stale.stderr
    assert _plans(project) == ["lazy-a", "lazy-b", "lazy-a"]
    # unchanged inputs: lazy-a is applied from its recorded plan without planning again; lazy-b's recorded plan
    # was incomplete (it waited for lazy-a), so it is planned now
    assert run_cli(project, "--env", "test", "plan", env={"BPM_LAZY_STAMP": "3"}).returncode == 0
    before = len(_plans(project))
    done = run_cli(project, "--env", "test", "apply", "--all", "--yes", env={"BPM_LAZY_STAMP": "3"})
    assert done.returncode == 0, done.stderr
    assert _plans(project)[before:] == ["lazy-b"]


def test_plan_reuse_can_be_switched_off(tmp_path: Path) -> None:
    project = _project(tmp_path, reuse=0)
    assert run_cli(project, "--env", "test", "plan").returncode == 0
    assert run_cli(project, "--env", "test", "apply", "--all", "--yes").returncode == 0
    assert _plans(project) == ["lazy-a", "lazy-b", "lazy-a", "lazy-b"]
