"""Engine benchmarks: per-transition ledger cost and `bpmigrate status` wall time.

Ratios are measured in the same run against baselines:
* a transition (state update + attempt bookkeeping + hash-chained event, one durable transaction) vs a bare
  SQLite INSERT+COMMIT with the same durability settings (WAL, synchronous=FULL);
* `bpmigrate status` vs `python -c pass` (interpreter start-up) and vs `python -c "import sqlalchemy"`, with the plan
  index `status` keeps in the state directory, and without it (the first `status` after a code change).

Usage: .venv/bin/python bench/bench_engine.py [--transitions 2000] [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migrate.ledger import Ledger  # noqa: E402
from migrate.states import Event  # noqa: E402

CYCLE = [Event.BEGIN_APPLY, Event.APPLY_OK, Event.BEGIN_VERIFY, Event.VERIFY_OK, Event.BEGIN_ROLLBACK, Event.ROLLBACK_OK]


def bench_transitions(n: int, tmp: Path) -> tuple[float, float]:
    ledger = Ledger(f"sqlite:///{tmp / 'bench.db'}", "bench")
    started = time.perf_counter()
    for i in range(n):
        ledger.transition("s", CYCLE[i % len(CYCLE)], run_id=None)
    per_transition = (time.perf_counter() - started) / n
    ledger.close()
    conn = sqlite3.connect(tmp / "base.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT)")
    started = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (data) VALUES (?)", (f"event {i}",))
        conn.execute("COMMIT")
    baseline = (time.perf_counter() - started) / n
    conn.close()
    return per_transition, baseline


def _median_wall(cmd: list[str], runs: int, cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of the child): CPU is what a busy shared machine does not inflate."""
    walls, cpus = [], []
    for _ in range(runs):
        before = os.times()
        started = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        walls.append(time.perf_counter() - started)
        after = os.times()
        cpus.append((after.children_user - before.children_user) + (after.children_system - before.children_system))
    return statistics.median(walls), statistics.median(cpus)


def rehearsal_project(tmp: Path, extra_attempts: int, phases_dir: Path = REPO / "phases") -> Path:
    """The real plan (this checkout's migrate.toml + phases) with the 0.1.0 sandbox rehearsal ledger (45 steps),
    padded with ``extra_attempts`` more finished attempts (re-runs), so `status` reads hundreds of attempts."""
    project = tmp / "rehearsal"
    project.mkdir()
    shutil.copy(phases_dir.parent / "migrate.toml", project / "migrate.toml")
    shutil.copytree(phases_dir, project / "phases", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "state").mkdir()
    db = project / "state" / "sandbox.db"
    shutil.copy(REPO / "tests" / "fixtures" / "ledger-0.1.0-sandbox.db", db)
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT run_id, env, step_id, action, operator, host, started_at, ended_at, status, error, metrics FROM bpm_attempts"
        ).fetchall()
        for i in range(extra_attempts):
            row = list(rows[i % len(rows)])
            row[6] = float(row[6]) - 86400.0 * (1 + i // len(rows))  # earlier rehearsals
            row[7] = None if row[7] is None else float(row[7]) - 86400.0 * (1 + i // len(rows))
            conn.execute(
                "INSERT INTO bpm_attempts (run_id, env, step_id, action, operator, host, started_at, ended_at, status, error, metrics)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        count = conn.execute("SELECT count(*) FROM bpm_attempts").fetchone()[0]
    print(f"rehearsal ledger: 45 steps, {count} attempts")
    return project


def bench_status(runs: int, tmp: Path, extra_attempts: int, phases_dir: Path) -> dict[str, tuple[float, float]]:
    project = tmp / "project"
    shutil.copytree(REPO / "tests" / "engine_project", project)
    # as an installed bpmigrate runs: with its bytecode cached (a test or CI shell may set PYTHONDONTWRITEBYTECODE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "BPMIGRATE_ENV")}
    env["PYTHONPATH"] = str(REPO)
    subprocess.run([sys.executable, "-m", "migrate.cli", "apply", "--phase", "1", "--yes"], cwd=project, env=env, capture_output=True, check=True)
    rehearsal = rehearsal_project(tmp, extra_attempts, phases_dir)
    bpm = [sys.executable, "-m", "migrate.cli"]
    for where, args in ((project, ["status"]), (rehearsal, ["--env", "sandbox", "status"])):  # warm-up: bytecode, page cache
        warm = subprocess.run([*bpm, *args], cwd=where, env=env, capture_output=True, text=True, check=False)
        if warm.returncode != 0:
            raise SystemExit(f"`bpmigrate {' '.join(args)}` failed in {where}: {warm.stderr or warm.stdout}")
    return {
        "python_pass": _median_wall([sys.executable, "-c", "pass"], runs, project, env),
        "status_small": _median_wall([*bpm, "status"], runs, project, env),
        "status_rehearsal": _median_wall([*bpm, "--env", "sandbox", "status"], runs, rehearsal, env),
        "status_rehearsal_json": _median_wall([*bpm, "--env", "sandbox", "status", "--json"], runs, rehearsal, env),
        # the first `status` after a code change (or an upgrade): no plan index yet, every step module imported
        "status_rehearsal_cold": _median_wall(
            ["sh", "-c", 'rm -f state/.plan-index-*.json; exec "$@"', "sh", *bpm, "--env", "sandbox", "status"], runs, rehearsal, env
        ),
        "import_sqlalchemy": _median_wall([sys.executable, "-c", "import sqlalchemy"], runs, project, env),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transitions", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--attempts", type=int, default=400, help="extra attempts added to the rehearsal ledger")
    parser.add_argument("--skip-transitions", action="store_true")
    parser.add_argument("--phases-dir", type=Path, default=REPO / "phases", help="a plan next to its migrate.toml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_transitions:
            per, base = bench_transitions(args.transitions, tmp)
            print(f"ledger transition: {per * 1e3:.2f} ms  (bare durable INSERT+COMMIT: {base * 1e3:.2f} ms; ratio {per / base:.1f}x)")
        st = bench_status(args.runs, tmp, args.attempts, args.phases_dir)
        for key, label in (
            ("python_pass", "python -c pass"),
            ("import_sqlalchemy", "python -c 'import sqlalchemy'"),
            ("status_small", "bpmigrate status (6-step test project)"),
            ("status_rehearsal", "bpmigrate status (45-step rehearsal ledger)"),
            ("status_rehearsal_json", "bpmigrate status --json (same)"),
            ("status_rehearsal_cold", "bpmigrate status, plan index rebuilt (same)"),
        ):
            wall, cpu = st[key]
            print(f"{label:48s} median wall {wall:.3f} s · CPU {cpu:.3f} s")
        wall, cpu = st["status_rehearsal"]
        base_wall, base_cpu = st["python_pass"]
        print(f"status (rehearsal) − python start-up: wall {wall - base_wall:.3f} s, CPU {cpu - base_cpu:.3f} s "
              f"(target: status ≤ 0.25 s on a quiet machine; ratio to start-up {wall / base_wall:.1f}x wall)")


if __name__ == "__main__":
    main()
