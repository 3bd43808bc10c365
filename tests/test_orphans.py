"""Issue 18: children die with bpmigrate; orphans of a killed bpmigrate are found by their marker, stopped and
recorded; registered long-lived children are adopted. Real processes, real signals, real /proc."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters import orphans, proc
from tests.engine_helpers import REPO, make_project, run_cli

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")

# a stand-in for bpmigrate: names its environment/run, spawns one child through the helper, prints its pid, waits
PARENT = """
import signal, sys, time
from migrate.adapters import proc
proc.set_run_marker({env!r}, {run!r}, scope={scope!r})
child = proc.spawn({argv!r}, pdeathsig={sig}, stdout=None)
print(child.pid, flush=True)
time.sleep(120)
"""
# a child that records which signal ended it (SIGINT for Terraform, SIGTERM for the others)
TRAP = """
import signal, sys, time
def on(sig, _):
    open(sys.argv[1], "w").write(signal.Signals(sig).name)
    sys.exit(0)
signal.signal(signal.SIGINT, on)
signal.signal(signal.SIGTERM, on)
open(sys.argv[1] + ".ready", "w").write("1")
time.sleep(120)
"""


def _parent(
    tmp: Path, argv: list[str], *, sig: str, env: str = "orph", run: str = "7", scope: str = ""
) -> tuple[subprocess.Popen[str], int]:
    scope = scope or f"t{os.getpid()}"  # never another test session's (or project's) children
    code = PARENT.format(env=env, run=run, argv=argv, sig=sig, scope=scope)
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=tmp,
    )
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if orphans.start_ticks(pid) is None:
            return True
        time.sleep(0.05)
    return False


def _wait_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    return ""


@pytest.mark.parametrize("sig,expected", [("signal.SIGINT", "SIGINT"), ("signal.SIGTERM", "SIGTERM")])
def test_child_gets_its_parent_death_signal_when_bpmigrate_is_killed(tmp_path: Path, sig: str, expected: str) -> None:
    """SIGKILL of the parent: the kernel sends the child its PR_SET_PDEATHSIG (SIGINT: Terraform cancels and
    releases its lock; SIGTERM: the others)."""
    (tmp_path / "trap.py").write_text(TRAP)
    out = tmp_path / "signal.txt"
    parent, child = _parent(tmp_path, [sys.executable, str(tmp_path / "trap.py"), str(out)], sig=sig)
    assert _wait_file(Path(str(out) + ".ready"))
    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
    assert f"BPMIGRATE_RUN=orph@t{os.getpid()}:7:{parent.pid}".encode() in environ
    assert os.getpgid(child) == child != os.getpgid(parent.pid)  # its own process group
    parent.kill()
    parent.wait()
    assert _wait_file(out) == expected
    assert _gone(child)


def test_marker_is_set_replaced_or_left_out() -> None:
    proc.set_run_marker("envx", 3, scope="ab12cd34")
    try:
        env = proc.child_env({"BPMIGRATE_RUN": "stale:1:1"})
        assert env["BPMIGRATE_RUN"] == f"envx@ab12cd34:3:{os.getpid()}"
        assert "BPMIGRATE_RUN" not in proc.child_env({"BPMIGRATE_RUN": "stale:1:1"}, marker=None)
        assert proc.parse_marker(env["BPMIGRATE_RUN"]) == proc.Marker("envx", "3", os.getpid(), "ab12cd34")
        assert proc.parse_marker("a:b:c:12") == proc.Marker("a:b", "c", 12)  # an env name may hold ':'
        assert proc.parse_marker("garbage") is None
        done = proc.run([sys.executable, "-c", "import os; print(os.environ['BPMIGRATE_RUN'])"])
        assert done.stdout.strip() == f"envx@ab12cd34:3:{os.getpid()}"
    finally:
        proc.set_run_marker("", None, scope="")


def _fake_proc(root: Path, pid: int, *, start: int, marker: str | None, cmd: str = "sleep 60", pgid: int = 0) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    fields = ["S", "1", str(pgid or pid), str(pgid or pid)] + ["0"] * 15 + [str(start)] + ["0"] * 10
    (d / "stat").write_text(f"{pid} (x) " + " ".join(fields))
    env = [b"PATH=/bin"] + ([f"BPMIGRATE_RUN={marker}".encode()] if marker else [])
    (d / "environ").write_bytes(b"\0".join(env) + b"\0")
    (d / "cmdline").write_bytes(cmd.replace(" ", "\0").encode() + b"\0")


def test_orphan_rules_on_a_fake_proc_tree(tmp_path: Path) -> None:
    """Orphan = marker of this environment whose bpmigrate is gone (dead, or its pid reused by a younger process);
    a registered long-lived child is adopted; other environments and live owners are left alone."""
    root = tmp_path / "proc"
    _fake_proc(root, 100, start=1000, marker=None, cmd="python -m migrate.cli apply")  # a live bpmigrate
    _fake_proc(root, 200, start=5000, marker=None, cmd="bash")  # pid 200 reused by a younger process
    _fake_proc(root, 11, start=2000, marker="sb:4:100", cmd="terraform apply")  # owner 100 alive: not an orphan
    _fake_proc(root, 12, start=2000, marker="sb:4:999", cmd="terraform apply")  # owner dead
    _fake_proc(root, 13, start=2001, marker="sb:4:999", cmd="terraform-provider-aws_v5", pgid=12)  # its plugin
    _fake_proc(root, 14, start=3000, marker="sb:5:200", cmd="pg_dump")  # owner pid reused by a younger process
    _fake_proc(root, 15, start=3000, marker="other:1:999", cmd="sleep 1")  # another environment
    _fake_proc(root, 16, start=3500, marker="sb:6:999", cmd="python -m migrate.adapters.redis_sync follow")
    found, adopted = orphans.find_orphans("sb", adopted=[(16, 3500), (17, 1)], proc=root)
    assert sorted(p.pid for p in found) == [12, 13, 14]
    assert [p.pid for p in adopted] == [16]
    by_pid = {p.pid: p for p in found}
    assert by_pid[13].pgid == 12 and by_pid[13].marker == proc.Marker("sb", "4", 999)
    assert "terraform-provider-aws" in by_pid[13].command


def test_orphans_are_stopped_by_group_and_reported(tmp_path: Path) -> None:
    """A child that outlived its killed parent (no parent-death signal), with a grandchild in its group: found,
    stopped with SIGINT first (its trap records it), and the whole group is gone."""
    (tmp_path / "trap.py").write_text(TRAP)
    out = tmp_path / "signal.txt"
    # the child starts a grandchild `sleep` in its own group, then traps signals
    launcher = f"import subprocess, sys, runpy; subprocess.Popen(['sleep', '300']); sys.argv = ['t', {str(out)!r}]; runpy.run_path({str(tmp_path / 'trap.py')!r})"
    parent, child = _parent(tmp_path, [sys.executable, "-c", launcher], sig="None", env="orph-stop")
    assert _wait_file(Path(str(out) + ".ready"))
    parent.kill()
    parent.wait()
    time.sleep(0.2)
    found, adopted = orphans.find_orphans("orph-stop", scope=f"t{os.getpid()}")
    pids = {p.pid for p in found}
    assert child in pids and len(pids) == 2 and not adopted  # the child and its sleep (marker inherited)
    stopped = orphans.stop_orphans(found, grace=(5.0, 2.0, 2.0))
    assert _wait_file(out) == "SIGINT"
    assert all(_gone(pid) for pid in pids)
    assert {s["pid"] for s in stopped} == pids and all(s["marker"].startswith("orph-stop@") for s in stopped)
    assert orphans.find_orphans("orph-stop", scope=f"t{os.getpid()}") == ([], [])


def _ledger_events(project: Path, kind: str) -> list[dict[str, Any]]:
    with sqlite3.connect(project / "state" / "test.db") as conn:
        rows = conn.execute("SELECT data FROM bpm_events WHERE kind = ? ORDER BY id", (kind,)).fetchall()
    return [json.loads(r[0]) for r in rows]


def test_next_mutating_command_cleans_orphans_records_them_and_adopts_registered_children(tmp_path: Path) -> None:
    """End to end through the CLI: a killed bpmigrate of env `test` left two children; the one registered in the
    ledger as long-lived (pid + start time) is adopted, the other is stopped and an `orphan_cleaned` event names it."""
    from migrate.ledger import Ledger

    project = make_project(tmp_path)
    assert run_cli(project, "--env", "test", "apply", "--step", "touch-a", "--yes").returncode == 0
    scope = proc.ledger_scope(f"sqlite:///{project / 'state' / 'test.db'}")
    stray_parent, stray = _parent(tmp_path, ["sleep", "300"], sig="None", env="test", run="1", scope=scope)
    keep_parent, keep = _parent(tmp_path, ["sleep", "300"], sig="None", env="test", run="1", scope=scope)
    other_parent, other = _parent(tmp_path, ["sleep", "300"], sig="None", env="other", run="1", scope=scope)
    try:
        ledger = Ledger(f"sqlite:///{project / 'state' / 'test.db'}", "test")
        key = orphans.registered_key(keep)
        assert key is not None
        ledger.register_child("touch-a", key[0], key[1], "a follower meant to outlive runs")
        ledger.close()
        for p in (stray_parent, keep_parent, other_parent):
            p.kill()
            p.wait()
        done = run_cli(project, "--env", "test", "apply", "--step", "touch-b", "--yes")
        assert done.returncode == 0, done.stderr
        assert _gone(stray), "the orphan was not stopped"
        assert orphans.start_ticks(keep) == key[1], "the registered child must be adopted, not stopped"
        assert orphans.start_ticks(other) is not None, "another environment's orphan is not ours to stop"
        assert [e["pid"] for e in _ledger_events(project, "child_adopted")] == [keep]
        events = _ledger_events(project, "orphan_cleaned")
        assert len(events) == 1 and [p["pid"] for p in events[0]["processes"]] == [stray]
        assert "orphaned process" in done.stdout + done.stderr and f"adopted pid {keep}" in done.stdout + done.stderr
        verify = run_cli(project, "--env", "test", "history", "--verify-chain")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        for pid in (stray, keep, other):
            with_suppress_kill(pid)


def with_suppress_kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
