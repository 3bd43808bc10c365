"""Engine benchmarks: per-transition ledger cost and `bpmigrate status` wall time.

Ratios are measured in the same run against baselines:
* a transition (state update + attempt bookkeeping + hash-chained event, one durable transaction) vs a bare
  SQLite INSERT+COMMIT with the same durability settings (WAL, synchronous=FULL);
* `bpmigrate status` vs `python -c pass` (interpreter start-up) and vs `python -c "import sqlalchemy"`.

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


def _median_wall(cmd: list[str], runs: int, cwd: Path) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_status(runs: int, tmp: Path) -> dict[str, float]:
    project = tmp / "project"
    shutil.copytree(REPO / "tests" / "engine_project", project)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "migrate.cli", "apply", "--phase", "1", "--yes"], cwd=project, env=env, capture_output=True, check=True)
    bpm = shutil.which("bpmigrate") or str(Path(sys.executable).parent / "bpmigrate")
    return {
        "status_small": _median_wall([bpm, "status"], runs, project),
        "status_repo": _median_wall([bpm, "--env", "sandbox", "status"], runs, REPO),
        "python_pass": _median_wall([sys.executable, "-c", "pass"], runs, project),
        "import_sqlalchemy": _median_wall([sys.executable, "-c", "import sqlalchemy"], runs, project),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transitions", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        per, base = bench_transitions(args.transitions, tmp)
        print(f"ledger transition: {per * 1e3:.2f} ms  (bare durable INSERT+COMMIT: {base * 1e3:.2f} ms; ratio {per / base:.1f}x)")
        st = bench_status(args.runs, tmp)
        print(f"bpmigrate status (6-step test project): median {st['status_small']:.3f} s")
        print(f"bpmigrate status (the real plan, sandbox env): median {st['status_repo']:.3f} s")
        print(f"baselines: python -c pass {st['python_pass']:.3f} s; python -c 'import sqlalchemy' {st['import_sqlalchemy']:.3f} s")
        print(f"ratio status/python-start-up: {st['status_repo'] / st['python_pass']:.1f}x")


if __name__ == "__main__":
    main()
