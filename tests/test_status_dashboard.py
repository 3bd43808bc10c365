"""The status dashboard (issue 21): golden renders of the 0.1.0 sandbox rehearsal, fitting, summaries, --watch.

Regenerate the golden files after an intended change (a step's summary, the layout) with
``BPM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_status_dashboard.py -k golden`` and review the diff.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from migrate.render import fit, status_dashboard, watch_view
from migrate.step import summary_of
from tests.engine_helpers import REPO, make_project, run_cli

GOLDEN = REPO / "tests" / "golden"
FIXTURE = REPO / "tests" / "fixtures" / "ledger-0.1.0-sandbox.db"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The status report of the 0.1.0 sandbox rehearsal ledger under the current plan."""
    from migrate import config
    from migrate.plan import load_graph
    from migrate.status import build_status

    root = tmp_path_factory.mktemp("rehearsal")
    shutil.copy(REPO / "migrate.toml", root / "migrate.toml")
    (root / "state").mkdir()
    shutil.copy(FIXTURE, root / "state" / "sandbox.db")
    cfg = config.load(root / "migrate.toml")
    graph = load_graph(Path(os.environ.get("BPM_TEST_PHASES_DIR", REPO / "phases")))  # the repo's plan
    report = build_status(cfg, "sandbox", graph)
    report["generated_at"] = 1796457589.0 + 3600  # a fixed "now": relative times render the same every day
    return report


def render(report: dict[str, Any], width: int, *, watch: bool = False) -> str:
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None, highlight=False)
        view = watch_view(report, width, now=report["generated_at"]) if watch else status_dashboard(report, width)
        console.print(view)
        return console.file.getvalue()  # type: ignore[attr-defined]
    finally:
        if old_tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old_tz
        time.tzset()


@pytest.mark.parametrize("width", [80, 120])
def test_golden(rehearsal: dict[str, Any], width: int) -> None:
    text = render(rehearsal, width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    if width == 80:
        assert len(lines) <= 60, f"{len(lines)} lines at 80 columns"
    assert "{'" not in text and "['" not in text and '{"' not in text  # no dict/list dumps
    assert "remaining 0.0s" not in text
    path = GOLDEN / f"status-rehearsal-{width}.txt"
    if os.environ.get("BPM_UPDATE_GOLDEN") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"render differs from {path} (BPM_UPDATE_GOLDEN=1 to accept)"


def test_rehearsal_facts(rehearsal: dict[str, Any]) -> None:
    text = render(rehearsal, 80)
    kube = [g for g in rehearsal["skip_reasons"] if len(g["steps"]) > 1]
    assert kube and len(kube[0]["steps"]) == 14
    assert " ".join(text.split()).count("no kubeconfig at /root/.kube/config") == 1  # the shared reason once, below
    assert "[1]" in text
    steps = {s["id"]: s for p in rehearsal["phases"] for s in p["steps"]}
    # the duration is the last *apply* attempt's, not the verify that came after it
    assert steps["rds-restore"]["apply_duration"] == pytest.approx(steps["rds-restore"]["apply_duration"])
    assert steps["rds-restore"]["last_attempt"]["action"] == "verify"
    assert steps["rds-restore"]["apply_duration"] > steps["rds-restore"]["last_attempt"]["duration"]
    cutover = next(p for p in rehearsal["phases"] if p["downtime_steps"])
    assert "downtime ≈" in next(line for line in text.splitlines() if line.startswith(f"phase {cutover['number']} "))
    finished = [p for p in rehearsal["phases"] if p["done"] == p["total"]]
    assert finished and all(p["eta_seconds"] is None for p in finished)  # nothing left: no ETA


def test_json_keeps_its_shape_and_gains_summary(rehearsal: dict[str, Any]) -> None:
    for key in ("project", "env", "ledger", "lock", "counts", "phases", "warnings", "next", "generated_at"):
        assert key in rehearsal
    for phase in rehearsal["phases"]:
        assert {"number", "name", "steps", "estimate_seconds", "downtime_seconds"} <= set(phase)
        for step in phase["steps"]:
            assert {"id", "title", "state", "reason", "definition_changed", "outputs_summary", "outputs", "estimate",
                    "estimate_seconds", "last_attempt", "summary"} <= set(step)
            assert "\n" not in step["summary"]
    json.dumps(rehearsal, default=str)


def test_default_summary_is_compact_and_never_a_dump() -> None:
    outputs = {
        "accounts": {"development": "219725087959"}, "adopted": [], "rows": 400115, "mb_per_s": 86.7,
        "path": "/tmp/x/y.dump", "ok": True, "name": "betterprompts-sandbox-postgres", "note": "x" * 80,
    }
    text = summary_of(outputs)
    assert text == "rows=400,115 · mb_per_s=86.7 · ok=yes · name=betterprompts-sandbox-postgres"[:60] or len(text) <= 60
    assert len(text) <= 60 and "{" not in text and "[" not in text and "/tmp" not in text
    assert summary_of({}) == ""


@given(st.lists(st.text(alphabet="ab ·-:/", min_size=1, max_size=12), min_size=1, max_size=8), st.integers(1, 60))
def test_fit_never_cuts_inside_a_token(parts: list[str], width: int) -> None:
    text = " · ".join(" ".join(p.split()) for p in parts if p.split())
    out = fit(text, width)
    assert len(out) <= width
    tokens = set(text.split())
    bare = {t.rstrip(",;:·") for t in tokens}
    for token in out.split():
        core = token.rstrip("…").rstrip(",;:·")
        assert token in ("…", "·") or token in tokens or core in bare or not core, (text, width, out)


def test_80_columns_two_lines_at_most_per_step(rehearsal: dict[str, Any]) -> None:
    report = json.loads(json.dumps(rehearsal, default=str))
    step = report["phases"][1]["steps"][4]
    step["state"], step["reason"] = "apply_failed", "copy failed: " + "connection reset by peer " * 8
    text = render(report, 80)
    assert text.count("apply failed: copy failed") == 1
    assert all(len(line) <= 80 for line in text.splitlines())


def test_attention_panel(tmp_path: Path) -> None:
    """A failed step, a gate waiting and a fence ahead come first, each with the command to run."""
    project = make_project(tmp_path)
    assert run_cli(project, "apply", "--phase", "1", "--yes").returncode == 0
    report = json.loads(run_cli(project, "status", "--json").stdout)
    kinds = {(a["kind"], a.get("step")) for a in report["attention"]}
    assert ("fence", "fence") in kinds  # the next step is one-way
    assert run_cli(project, "apply", "--step", "fence", "--yes").returncode == 0
    report = json.loads(run_cli(project, "status", "--json").stdout)
    gate = next(a for a in report["attention"] if a["kind"] == "gate")
    assert gate["step"] == "gated" and gate["command"].startswith("bpmigrate --env test approve gated --reason")
    assert report["next"] == gate["command"]
    text = run_cli(project, "status", env={"NO_COLOR": "1", "COLUMNS": "80"}).stdout
    assert "\x1b[" not in text  # NO_COLOR / non-TTY: plain text
    assert text.splitlines()[1].startswith("⏸ gated waits for approval")
    assert all(len(line) <= 80 for line in text.splitlines())


def test_watch_updates_while_another_process_applies(tmp_path: Path) -> None:
    """`status --watch` in one process, `apply` in another: the watcher shows the step running with its progress
    (rate, done/total) and then verified, and never takes the lock (the apply succeeds)."""
    project = make_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BPM_", "BPMIGRATE_"))}
    env.update(PYTHONPATH=str(REPO), COLUMNS="100", NO_COLOR="1")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "migrate.cli", "status", "--watch", "--interval", "0.3"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        apply = run_cli(project, "apply", "--step", "touch-a", "--yes", env={"BPM_TEST_PROGRESS": "touch-a:12"})
        assert apply.returncode == 0, apply.stderr + apply.stdout
        time.sleep(1.5)
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=20)
    snapshots = [s for s in out.split("─" * 80) if s.strip()]
    assert len(snapshots) >= 5
    first_running = next(i for i, s in enumerate(snapshots) if "▶ apply touch-a" in s)
    assert any(re.search(r"copy rows .*\d+% \d+/12 rows · \d[\d,]* rows/s", s) for s in snapshots[first_running:])
    assert "· touch-a" in snapshots[0] and "pending" in snapshots[0]
    assert re.search(r"✓ touch-a\s+\d", snapshots[-1])
    assert "transition" in snapshots[-1]  # the last events


def test_status_imports_no_orm_nor_cloud_clients(tmp_path: Path) -> None:
    """`status` stays within its budget by reading SQLite with the stdlib: no SQLAlchemy, boto3, kubernetes, psycopg."""
    project = make_project(tmp_path)
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0
    probe = (
        "import sys\nfrom migrate import cli\ntry:\n    cli.main(['status'])\nexcept SystemExit as exc:\n    assert not exc.code\n"
        "heavy = ('sqlalchemy', 'boto3', 'botocore', 'kubernetes', 'psycopg', 'redis', 'httpx')\n"
        "print('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], cwd=project, env={**os.environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout[-300:]
