"""Issue 18: `kill -9` anywhere converges without a human.

`bpmigrate --env sandbox apply --all --yes` over phases 1–2 of a real sandbox (moto, two PostgreSQL 16, two Redis;
the stand-in Terraform root, as the test suite uses) is killed with SIGKILL — the bpmigrate process only, as when
its host process dies: its children must notice by themselves — inside a Terraform apply, inside the COPY of
rds-restore, and at N random instants (``BPM_CHAOS_KILLS``, default 3; ``BPM_CHAOS_SEED`` replays a run). Then it
is run once more, with no manual step in between, and must:

* exit 0, every step verified or skipped as an uninterrupted run does (skipped = only the Kubernetes steps: the
  sandbox has no Kubernetes API);
* leave no orphan: after each kill no child of the killed bpmigrate survives (parent-death signal), except the
  registered redis-sync follower, which the next run adopts; at the end the only marked process of the project is
  that follower;
* leave no Terraform lock, repeat no side effect (one apply_ok per step, one AWS account per name, one follower),
  and keep the ledger's hash chain intact.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters import orphans
from migrate.adapters.proc import ledger_scope, stop_group
from migrate.adapters.terraform_lock import is_terraform_engine

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("p1_foundation", "p2_data")


def _make_project(path: Path) -> tuple[Path, set[str]]:
    """The repo's migrate.toml, phases 1–2 only (their [steps.*] sections kept), templates and terraform."""
    path.mkdir()
    ign = shutil.ignore_patterns("__pycache__", ".terraform", "*.tfstate*")
    (path / "phases").mkdir()
    for f in (ROOT / "phases").glob("*.py"):
        shutil.copy(f, path / "phases" / f.name)
    ids: set[str] = set()
    for name in PHASES:
        shutil.copytree(ROOT / "phases" / name, path / "phases" / name, ignore=ign)
        for f in (ROOT / "phases" / name).glob("*.py"):
            ids.update(re.findall(r'^    id = "([a-z0-9-]+)"', f.read_text(), re.MULTILINE))
    for name in ("templates", "runbooks", "terraform"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, path / name, ignore=ign)
    toml = (ROOT / "migrate.toml").read_text().replace('kind = "sandbox"', 'kind = "sandbox"\nsandbox = { fsync = false }', 1)
    kept, keep = [], True
    for line in toml.splitlines():
        if line.startswith("["):
            m = re.match(r"^\[(?:environments\.[^.\]]+\.)?steps\.([a-z0-9-]+)", line)
            keep = m is None or m.group(1) in ids
        if keep:
            kept.append(line)
    (path / "migrate.toml").write_text("\n".join(kept) + "\n")
    return path, ids


def _env(project: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "KUBECONFIG": str(project / "no-kubeconfig")}
    env["BPMIGRATE_SANDBOX_TERRAFORM"] = "stand-in"
    env.pop("BPMIGRATE_RUN", None)
    return env


def _argv(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "migrate.cli", "--config", str(project / "migrate.toml"), "--env", "sandbox", *args]


def _cli(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _argv(project, *args), cwd=project, env=_env(project), capture_output=True, text=True, timeout=timeout
    )


def _settled(project: Path) -> int:
    done = _cli(project, "--json", "status")
    steps = [s for ph in json.loads(done.stdout)["phases"] for s in ph["steps"]]
    return sum(1 for s in steps if s["state"] in ("verified", "skipped"))


def _children_of(pid: int) -> list[orphans.MarkedProcess]:
    return [p for p in orphans.marked_processes() if p.marker.pid == pid]


def _is_follower(p: orphans.MarkedProcess) -> bool:
    return "migrate.adapters.redis_sync follow" in p.command


def _wait_until(cond: Callable[[], bool], proc: subprocess.Popen[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if cond():
            return True
        time.sleep(0.02)
    return False


def _in_terraform_apply(pid: int) -> Callable[[], bool]:
    def cond() -> bool:
        for p in _children_of(pid):
            try:
                cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
            except OSError:
                continue
            if is_terraform_engine(cmdline) and b"\0apply\0" in cmdline:
                return True
        return False

    return cond


def _in_copy(log: Path, rng: random.Random) -> Callable[[], bool]:
    started: list[float] = []
    delay = rng.uniform(0.8, 2.5)

    def cond() -> bool:
        if not started and "apply rds-restore" in log.read_text(errors="replace"):
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] >= delay

    return cond


def _after(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


@pytest.mark.slow
def test_apply_killed_anywhere_converges_without_a_human(servers_root: Path) -> None:
    from migrate import config
    from migrate.sandbox import orchestrate

    project, ids = _make_project(servers_root / "proj-chaos")
    seed = int(os.environ.get("BPM_CHAOS_SEED", random.randrange(1_000_000)))
    n_random = int(os.environ.get("BPM_CHAOS_KILLS", "3"))
    rng = random.Random(seed)
    cfg = config.load(project / "migrate.toml")
    scope = ledger_scope(cfg.ledger_url("sandbox"))
    kills: list[str] = []
    settled: list[int] = []  # steps verified or skipped after each kill
    try:
        previous = os.environ.get("BPMIGRATE_SANDBOX_TERRAFORM")
        os.environ["BPMIGRATE_SANDBOX_TERRAFORM"] = "stand-in"
        try:
            orchestrate.up(cfg, "sandbox")
        finally:  # restore, never pop: the suite's default (conftest.py) must hold for the tests after this one
            if previous is None:
                os.environ.pop("BPMIGRATE_SANDBOX_TERRAFORM", None)
            else:
                os.environ["BPMIGRATE_SANDBOX_TERRAFORM"] = previous
        endpoints = project / "state" / "sandbox" / "endpoints.json"
        doc = json.loads(endpoints.read_text())  # the phase-5/6 stand-in settings name steps this plan lacks
        doc["steps"] = {k: v for k, v in (doc.get("steps") or {}).items() if k in ids}
        endpoints.write_text(json.dumps(doc, indent=2))
        orchestrate.seed(config.load(project / "migrate.toml"), "sandbox")

        plan: list[tuple[str, float]] = [
            ("inside terraform apply", 0.0),
            # a host-like crash: Terraform frozen (SIGSTOP) when bpmigrate dies cannot act on its parent-death
            # signal and keeps the state lock: the next run must find it by its marker, stop it, record it, and
            # only then use Terraform
            ("inside terraform apply, terraform frozen", 0.0),
            ("inside the COPY of rds-restore", 0.0),
        ]
        plan += [(f"at {at:.1f}s", at) for at in (rng.uniform(0.3, 8.0) for _ in range(n_random))]
        for n, (what, at) in enumerate(plan):
            log = project / f"run-{n}.log"
            with log.open("w") as out:
                bpm = subprocess.Popen(
                    _argv(project, "apply", "--all", "--yes"),
                    cwd=project,
                    env=_env(project),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                if what.startswith("inside terraform"):
                    cond = _in_terraform_apply(bpm.pid)
                elif what.startswith("inside the COPY"):
                    cond = _in_copy(log, rng)
                else:
                    cond = _after(at)
                hit = _wait_until(cond, bpm, timeout=150)
                if not hit or bpm.poll() is not None:
                    bpm.wait(timeout=300)
                    kills.append(f"{what}: not reached (run ended with exit {bpm.returncode})")
                    continue
                frozen = [p for p in _children_of(bpm.pid) if "frozen" in what]
                for p in frozen:
                    os.kill(p.pid, signal.SIGSTOP)
                os.kill(bpm.pid, signal.SIGKILL)  # bpmigrate only: its children must notice by themselves
                bpm.wait(timeout=30)
            kills.append(what)
            if frozen:
                time.sleep(0.5)
                assert any(orphans.start_ticks(p.pid) == p.start_ticks for p in frozen), "the frozen child died"
                continue  # left for the next run's orphan cleanup
            # children die with their parent: nothing of the killed run survives but the registered follower
            deadline = time.monotonic() + 30
            while (left := [p for p in _children_of(bpm.pid) if not _is_follower(p)]) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not left, f"seed {seed}: children of a killed bpmigrate ({what}) still run: {left}"
            settled.append(_settled(project))

        # progress survives interruption: every interrupted run kept what the runs before it had settled
        assert settled == sorted(settled) and settled[-1] > 0, (settled, kills)

        final = _cli(project, "apply", "--all", "--yes", timeout=400)
        context = f"seed {seed}, kills: {kills}\n{final.stdout[-4000:]}\n{final.stderr[-3000:]}"
        assert final.returncode == 0, context
        assert sum(1 for k in kills if "not reached" not in k) >= 2, context

        # every step verified, or skipped as an uninterrupted run skips it (the sandbox has no Kubernetes API)
        status = json.loads(_cli(project, "--json", "status").stdout)
        steps = {s["id"]: s for ph in status["phases"] for s in ph["steps"]}
        assert set(steps) == ids, context
        bad = {k: s["state"] for k, s in steps.items() if s["state"] not in ("verified", "skipped")}
        assert not bad, context
        skipped = {k: s.get("reason") or "" for k, s in steps.items() if s["state"] == "skipped"}
        assert skipped and all("Kubernetes" in r for r in skipped.values()), (skipped, context)

        # no orphan: the only marked process of this project is the (adopted) redis-sync follower, exactly one
        mine = [p for p in orphans.marked_processes() if p.marker.scope == scope]
        assert [p for p in mine if not _is_follower(p)] == [], context
        followers = [p for p in mine if _is_follower(p)]
        assert len(followers) == 1, (followers, context)

        # no Terraform lock left (the local backend writes .lock.info while it holds the state lock)
        assert not list((project / "state" / "sandbox" / "terraform").rglob("*.lock.info")), context

        # no duplicate side effect: one apply_ok per step, one AWS account per name
        import sqlite3

        with sqlite3.connect(project / "state" / "sandbox.db") as conn:
            rows = conn.execute("SELECT step_id, data FROM bpm_events WHERE kind = 'transition'").fetchall()
            cleaned = conn.execute("SELECT count(*) FROM bpm_events WHERE kind = 'orphan_cleaned'").fetchone()[0]
        applied: dict[str, int] = {}
        for step_id, data in rows:
            if json.loads(data).get("event") == "apply_ok":
                applied[step_id] = applied.get(step_id, 0) + 1
        assert all(n == 1 for n in applied.values()), (applied, context)
        assert set(applied) == {k for k, s in steps.items() if s["state"] == "verified"}, context
        accounts = _moto_accounts(json.loads(endpoints.read_text()))
        assert len(accounts) == len(set(accounts)), accounts

        # the chain is intact, and a converged rehearsal re-run applies nothing
        chain = _cli(project, "history", "--verify-chain")
        assert chain.returncode == 0, chain.stdout + chain.stderr
        again = _cli(project, "--json", "apply", "--all", "--yes")
        assert again.returncode == 0, again.stderr[-2000:]
        redone = [o for o in json.loads(again.stdout).get("outcomes", []) if o["state"] != "skipped"]
        assert not redone, redone
        assert cleaned >= 1, f"the frozen Terraform was not cleaned as an orphan: {context}"
        print(f"chaos seed {seed}: kills {kills}; settled after each: {settled}; orphan_cleaned events: {cleaned}")
    finally:
        for p in orphans.marked_processes():  # the follower (and anything a failed assertion left)
            if p.marker.scope == scope:
                stop_group(p.pid, grace=(2.0, 2.0, 2.0))
        _sandbox_down(project)


def _moto_accounts(endpoints: dict[str, Any]) -> list[str]:
    from tests.servers_plugin import moto_client

    client = moto_client(endpoints["aws"]["endpoint_url"], "organizations")
    return [str(a["Name"]) for a in client.list_accounts().get("Accounts", [])]


def _sandbox_down(project: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "migrate.sandbox.cli", "down", "--wipe", "--config", str(project / "migrate.toml")],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=120,
        check=False,
    )
