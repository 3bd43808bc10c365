"""Children of a dead bpmigrate: found by their marker, stopped, and reported (the engine records what was stopped).

Every child bpmigrate starts carries ``BPMIGRATE_RUN=<env>:<run id>:<pid of bpmigrate>`` (``migrate/adapters/proc.py``),
and so do its own children (Terraform's provider plugins inherit Terraform's environment). A process is an
**orphan** of environment E when its marker names E and the bpmigrate pid in it is gone — dead, or reused by a
process that started after the child (a parent always starts before its child). A child that was registered in the
ledger as long-lived (pid + start time, e.g. the redis-sync follower) is **adopted**, never stopped.

Orphans are stopped per process group (each child has its own, reaching its grandchildren): SIGINT first (Terraform
cancels and releases its state lock), then SIGTERM, then SIGKILL, each after a grace period.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from migrate.adapters.proc import MARKER_ENV, STOP_GRACE, Marker, parse_marker, stop_group
from migrate.redact import redact

PROC = Path("/proc")
_NEEDLE = MARKER_ENV.encode() + b"="


@dataclass(frozen=True)
class MarkedProcess:
    """A live process carrying a bpmigrate marker."""

    pid: int
    pgid: int
    start_ticks: int  # /proc/<pid>/stat field 22: start time in clock ticks since boot
    marker: Marker
    command: str  # redacted, shortened

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["marker"] = str(self.marker)
        return data


def start_ticks(pid: int, proc: Path = PROC) -> int | None:
    """The process's start time (clock ticks since boot), or None when it does not exist."""
    stat = _stat(pid, proc)
    return None if stat is None else int(stat[19])


def _stat(pid: int, proc: Path) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state), or None (gone, or a zombie)."""
    try:
        raw = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields


def marked_processes(proc: Path = PROC) -> list[MarkedProcess]:
    """Every live process on this host (that we may read) with a bpmigrate marker in its environment."""
    found: list[MarkedProcess] = []
    me = os.getpid()
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if _NEEDLE not in environ:
            continue
        value = next((v[len(_NEEDLE) :] for v in environ.split(b"\0") if v.startswith(_NEEDLE)), None)
        marker = parse_marker(value) if value else None
        stat = _stat(int(entry.name), proc)
        if marker is None or stat is None:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmdline = ""
        found.append(MarkedProcess(int(entry.name), int(stat[2]), int(stat[19]), marker, redact(cmdline)[:200]))
    return found


def _owner_gone(p: MarkedProcess, proc: Path) -> bool:
    """The bpmigrate named by the marker no longer runs (its pid is free, or reused by a younger process)."""
    owner = start_ticks(p.marker.pid, proc)
    return owner is None or owner > p.start_ticks


def find_orphans(
    env_name: str, *, scope: str = "", adopted: Iterable[tuple[int, int]] = (), proc: Path = PROC
) -> tuple[list[MarkedProcess], list[MarkedProcess]]:
    """(orphans to stop, registered long-lived children to adopt) of ``env_name`` in the ledger ``scope``
    (``proc.ledger_scope``; children of another project's environment of the same name are not ours).
    ``adopted``: (pid, start ticks) of children registered in the ledger as meant to outlive their run."""
    keep = set(adopted)
    orphans: list[MarkedProcess] = []
    kept: list[MarkedProcess] = []
    for p in marked_processes(proc):
        if p.marker.env != env_name or p.marker.scope != scope:
            continue
        if p.marker.pid == os.getpid() or not _owner_gone(p, proc):
            continue
        (kept if (p.pid, p.start_ticks) in keep else orphans).append(p)
    return orphans, kept


def stop_orphans(orphans: Sequence[MarkedProcess], *, grace: Sequence[float] = STOP_GRACE) -> list[dict[str, Any]]:
    """Stop every orphan's process group (SIGINT → SIGTERM → SIGKILL); what was stopped and by which signal."""
    stopped: list[dict[str, Any]] = []
    # never signal our own group (or init's): an orphan there is stopped by pid alone
    leaders = {p.pgid for p in orphans if p.pgid > 1 and p.pgid != os.getpgrp()}
    # whole groups first (the group of a dead bpmigrate's child: the child and its grandchildren), then stragglers
    # that live in another group (a plugin that made its own); a process whose group was stopped is reported too
    outcome: dict[int, str] = {}
    for pgid in sorted(leaders):
        outcome[pgid] = stop_group(pgid, first=signal.SIGINT, grace=grace)
    for p in orphans:
        how = outcome.get(p.pgid, "")
        if start_ticks(p.pid) == p.start_ticks:  # still there (the group stop missed it)
            how = stop_group(p.pid, first=signal.SIGINT, grace=grace)
        stopped.append({**p.to_dict(), "stopped_by": how or "gone"})
    return stopped


def registered_key(pid: int) -> tuple[int, int] | None:
    """(pid, start ticks) of a live process, to register it as a long-lived child; None when it is not running."""
    ticks = start_ticks(pid)
    return None if ticks is None else (pid, ticks)
