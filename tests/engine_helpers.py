"""Helpers for engine tests: a fresh copy of tests/engine_project and a CLI runner in a real subprocess."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

ENGINE_PROJECT = Path(__file__).parent / "engine_project"
REPO = Path(__file__).resolve().parent.parent


def make_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(ENGINE_PROJECT, project, ignore=shutil.ignore_patterns("state", "__pycache__"))
    return project


def run_cli(
    project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("BPM_TEST_KILL", None)
    full_env["PYTHONPATH"] = str(REPO)
    full_env["COLUMNS"] = "200"
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "migrate.cli", *args],
        cwd=project,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def effects(project: Path) -> list[str]:
    log = project / "state" / "work" / "effects.log"
    return log.read_text().splitlines() if log.exists() else []


def states(project: Path, env: str = "test") -> dict[str, str]:
    db = project / "state" / f"{env}.db"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT step_id, state FROM bpm_step_state WHERE env = ?", (env,)).fetchall())


def event_count(project: Path, env: str = "test") -> int:
    db = project / "state" / f"{env}.db"
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM bpm_events").fetchone()[0])
