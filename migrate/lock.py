"""The lease lock over the ledger: one mutating command per environment at a time.

The holder heartbeats from a background thread; a lock whose holder process is dead on this host is taken over
automatically (with an audit event); a lock held from another host whose heartbeat expired needs
``bpmigrate unlock --force`` (also audited). Read-only commands never take it.
"""

from __future__ import annotations

import os
import threading
import uuid
from types import TracebackType
from typing import Any

from sqlalchemy import Connection

from migrate.errors import LockHeld
from migrate.ledger import Ledger, LockInfo, lock_held_error
from migrate.ledger_read import LedgerReader


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _current(ledger: Ledger) -> LockInfo | None:
    reader = LedgerReader(ledger.url, ledger.env)
    try:
        row = reader.lock()
    finally:
        reader.close()
    if row is None:
        return None
    return LockInfo("", row["holder"], row["host"], row["pid"], row["command"], row["acquired_at"], row["heartbeat_at"], row["expires_at"])


def _takeover_reason(ledger: Ledger) -> Any:
    def decide(info: LockInfo) -> str | None:
        if info.host == ledger.host and not pid_alive(info.pid):
            return f"holder pid {info.pid} on this host ({info.host}) is no longer running"
        return None

    return decide


class LeaseLock:
    def __init__(self, ledger: Ledger, command: str, ttl: float) -> None:
        self.ledger = ledger
        self.command = command
        self.ttl = ttl
        self.token = uuid.uuid4().hex
        self.previous: LockInfo | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False
        self._session: Connection | None = None

    def acquire(self) -> None:
        takeover = _takeover_reason(self.ledger)
        if self.ledger.is_postgres:
            self._session = self.ledger.try_session_lock()
            if self._session is None:
                info = _current(self.ledger)
                if info is not None:
                    raise lock_held_error(self.ledger.env, info)
                raise LockHeld(
                    f"environment {self.ledger.env!r} is locked by another session",
                    "another bpmigrate process holds the ledger's advisory lock",
                    f"bpmigrate --env {self.ledger.env} status",
                )

            def takeover(info: LockInfo) -> str | None:  # we hold the advisory lock: the row's holder is gone
                return f"the previous holder's database session ({info.holder}@{info.host} pid {info.pid}) has ended"

        self.previous = self.ledger.acquire_lock(self.token, self.command, self.ttl, takeover_if=takeover)
        self._thread = threading.Thread(target=self._beat, name="bpmigrate-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = max(1.0, self.ttl / 3)
        while not self._stop.wait(interval):
            try:
                if not self.ledger.heartbeat(self.token, self.ttl):
                    self.lost = True  # someone forced the lock away: the engine checks this between steps
                    return
            except Exception:  # noqa: BLE001 - a missed beat is retried; expiry protects the others
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.ledger.release_lock(self.token)
        except Exception:  # noqa: BLE001 - never mask the command's own outcome
            pass
        if self._session is not None:
            try:
                self.ledger.release_session_lock(self._session)
            except Exception:  # noqa: BLE001
                pass
            self._session = None

    def __enter__(self) -> LeaseLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
