"""Test-only side effects: files under the project's state/work directory, each created at most once.

`effects.log` gets one line per REAL creation, so a test can prove no side effect ran twice.
BPM_TEST_KILL="step:point" makes the process SIGKILL itself at that point (crash tests).
BPM_TEST_FAIL="step" makes apply raise; BPM_TEST_VERIFY_FAIL="step" makes verify report a failing check.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from migrate.step import StepContext


def work(ctx: StepContext) -> Path:
    path = ctx.state_dir / "work"
    path.mkdir(parents=True, exist_ok=True)
    return path


def maybe_die(step_id: str, point: str) -> None:
    if os.environ.get("BPM_TEST_KILL") == f"{step_id}:{point}":
        os.kill(os.getpid(), signal.SIGKILL)


def create_once(ctx: StepContext, name: str, content: str) -> bool:
    target = work(ctx) / name
    try:
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    with open(work(ctx) / "effects.log", "a") as log:
        log.write(f"create {name}\n")
    return True


def remove(ctx: StepContext, name: str) -> bool:
    target = work(ctx) / name
    if not target.exists():
        return False
    target.unlink()
    with open(work(ctx) / "effects.log", "a") as log:
        log.write(f"remove {name}\n")
    return True


def exists(ctx: StepContext, name: str) -> bool:
    return (work(ctx) / name).exists()
