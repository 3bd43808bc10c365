"""The plan index `status` reads (issue 14's budget): same report as the loaded plan, no step module imported while
the code is unchanged, rebuilt on any edit, summaries kept per outputs digest, never a secret in the file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from migrate import config
from migrate.plan import load_graph
from migrate.plan_index import PlanIndex, plan_index
from migrate.status import build_status
from tests.engine_helpers import REPO, make_project, run_cli

FIXTURE = REPO / "tests" / "fixtures" / "ledger-0.1.0-sandbox.db"


def _index_files(state_dir: Path) -> list[Path]:
    return sorted(state_dir.glob(".plan-index-*.json"))


def _stable(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "generated_at"}


def test_index_gives_the_same_report_as_the_loaded_plan(tmp_path: Path) -> None:
    """The 0.1.0 rehearsal ledger under the repo's plan: every row, summary, phase and hint is the same."""
    root = tmp_path / "rehearsal"
    (root / "state").mkdir(parents=True)
    shutil.copy(REPO / "migrate.toml", root / "migrate.toml")
    shutil.copy(FIXTURE, root / "state" / "sandbox.db")
    cfg = config.load(root / "migrate.toml")
    phases = REPO / "phases"
    loaded = build_status(cfg, "sandbox", load_graph(phases))
    first = plan_index(phases, cfg.state_dir)  # built from the loader, then summaries learnt
    assert _stable(build_status(cfg, "sandbox", first)) == _stable(loaded)
    first.save()
    cached = plan_index(phases, cfg.state_dir)
    assert not cached.dirty and cached.summaries, "the second read comes from the file, summaries included"
    assert _stable(build_status(cfg, "sandbox", cached)) == _stable(loaded)
    assert any(row["summary"] for phase in loaded["phases"] for row in phase["steps"])


def test_second_status_imports_no_step_module(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    assert run_cli(project, "apply", "--phase", "1", "--yes").returncode == 0
    first = run_cli(project, "status", "--json")
    assert first.returncode == 0, first.stderr
    assert len(_index_files(project / "state")) == 1
    probe = (
        "import json, sys\n"
        "from migrate.cli import main\n"
        "try:\n    main(['status', '--json'])\nexcept SystemExit:\n    pass\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('testphases') or m in ('migrate.step', 'migrate.plan'))\n"
        "print(json.dumps(loaded), file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    second = subprocess.run([sys.executable, "-c", probe], cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert json.loads(second.stderr.strip().splitlines()[-1]) == []
    assert json.loads(second.stdout) == json.loads(first.stdout) | {"generated_at": json.loads(second.stdout)["generated_at"]}


def test_an_edited_step_module_rebuilds_the_index(tmp_path: Path) -> None:
    project = make_project(tmp_path)

    def row(step_id: str) -> dict[str, Any]:
        done = run_cli(project, "status", "--json")
        assert done.returncode == 0, done.stderr
        return next(r for p in json.loads(done.stdout)["phases"] for r in p["steps"] if r["id"] == step_id)

    assert row("touch-a")["title"] == "Create file a."
    module = project / "testphases" / "p1_alpha.py"
    module.write_text(module.read_text().replace('"""Create file a."""', '"""Create file a, again."""'))
    assert row("touch-a")["title"] == "Create file a, again."
    document = json.loads(_index_files(project / "state")[0].read_text())
    assert [s["title"] for s in document["steps"] if s["id"] == "touch-a"] == ["Create file a, again."]


def test_summaries_follow_the_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(tmp_path)
    phases, state = project / "testphases", project / "state"
    index = plan_index(phases, state)
    assert index.summary("touch-a", {"rows": 3}) == "rows=3"
    index.save()
    reread = plan_index(phases, state)

    def no_import(*_args: object) -> None:
        raise AssertionError("a cached summary imported its step module")

    monkeypatch.setattr("migrate.plan.load_step", no_import)
    assert reread.summary("touch-a", {"rows": 3}) == "rows=3"
    monkeypatch.undo()
    assert reread.summary("touch-a", {"rows": 4}) == "rows=4"  # other outputs: summarised again
    assert reread.dirty


def test_no_secret_in_the_index(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    phases, state = project / "testphases", project / "state"
    index = plan_index(phases, state)
    text = index.summary("touch-a", {"dsn": "postgresql://app:hunter2secret@db:5432/x"})
    index.save()
    assert "hunter2secret" not in text
    assert "hunter2secret" not in "".join(p.read_text() for p in _index_files(state))


@pytest.mark.parametrize("damage", ["garbage", "wrong-shape"])
def test_a_damaged_index_is_rebuilt(tmp_path: Path, damage: str) -> None:
    project = make_project(tmp_path)
    phases, state = project / "testphases", project / "state"
    built = plan_index(phases, state)
    path = _index_files(state)[0]
    if damage == "garbage":
        path.write_text("{not json")
    else:
        document = json.loads(path.read_text())
        document["steps"] = [{"id": "touch-a"}]  # right fingerprint, missing fields
        path.write_text(json.dumps(document))
    again = plan_index(phases, state)
    assert isinstance(again, PlanIndex) and again.ids == built.ids
    assert json.loads(path.read_text())["steps"][0]["title"]


def test_unwritable_state_dir_still_reports(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    blocker = project / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    index = plan_index(project / "testphases", blocker)
    assert index.ids and index.dirty  # nothing written, nothing broken
