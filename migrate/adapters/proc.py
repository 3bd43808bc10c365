"""Subprocesses: run a command, capture and redact its output, translate failures into AdapterError."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError
from migrate.redact import redact

if TYPE_CHECKING:
    from migrate.config import EnvConfig


@dataclass(frozen=True)
class ProcResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


class ProcRunner:
    def which(self, name: str) -> str | None:
        return shutil.which(name)

    def run(
        self,
        args: Sequence[str | Path],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float | None = None,
        input_text: str | None = None,
        service: str = "",
    ) -> ProcResult:
        argv = [str(a) for a in args]
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        shown = redact(" ".join(argv))
        try:
            done = subprocess.run(
                argv,
                cwd=cwd,
                env=full_env,
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input_text,
                check=False,
            )
        except FileNotFoundError as exc:
            raise AdapterError(
                f"command not found: {argv[0]}",
                str(exc),
                f"install {Path(argv[0]).name} or put it on PATH, then run `bpmigrate doctor`",
                service=service or Path(argv[0]).name,
            ) from None
        except subprocess.TimeoutExpired:
            raise AdapterError(
                f"`{shown}` did not finish within {timeout:.0f}s",
                "the command hung or the work is larger than the timeout allows",
                "raise the step's timeout in migrate.toml or investigate the command by hand",
                service=service or Path(argv[0]).name,
            ) from None
        result = ProcResult(argv, done.returncode, redact(done.stdout), redact(done.stderr))
        if check and done.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-15:]) or result.stdout.strip()[-2000:]
            raise AdapterError(
                f"`{shown}` failed with exit code {done.returncode}",
                tail or "no output",
                "read the output above; fix the cause and re-run the same bpmigrate command (it resumes)",
                service=service or Path(argv[0]).name,
            )
        return result


def from_config(env: EnvConfig, **_: Any) -> ProcRunner:
    return ProcRunner()
