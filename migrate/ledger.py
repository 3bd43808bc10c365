"""The ledger: the ONE module that writes bpmigrate's durable record.

SQLite (WAL, synchronous=FULL, BEGIN IMMEDIATE) by default at ``state/<env>.db``; any SQLAlchemy URL (e.g.
PostgreSQL) for a shared team ledger. Every write is one short transaction; every state change goes through
:func:`migrate.states.transition` inside the transaction that also appends the hash-chained event, so a process
killed at any instant leaves either the old state or the new one, never a half.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, insert, select, text, update
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError

from migrate import ledger_schema as t
from migrate.errors import LedgerError, LockHeld
from migrate.ledger_read import normalize_url
from migrate.redact import redact, redact_obj
from migrate.states import Event, State, transition

GENESIS = "0" * 64

#: transitions that open an attempt, and the action they record
_OPENS = {Event.BEGIN_APPLY: "apply", Event.BEGIN_VERIFY: "verify", Event.BEGIN_ROLLBACK: "rollback"}
#: transitions that close the open attempt, and the status they give it
_CLOSES = {
    Event.APPLY_OK: "ok",
    Event.APPLY_FAIL: "failed",
    Event.VERIFY_OK: "ok",
    Event.VERIFY_FAIL: "failed",
    Event.ROLLBACK_OK: "ok",
    Event.ROLLBACK_FAIL: "failed",
    Event.RECOVER_APPLIED: "recovered",
    Event.RECOVER_APPLY_FAILED: "interrupted",
    Event.RECOVER_ROLLED_BACK: "recovered",
    Event.RECOVER_ROLLBACK_FAILED: "interrupted",
    Event.RECOVER_VERIFY: "interrupted",
}


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock from a name."""
    digest = hashlib.sha256(f"bpmigrate:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


#: schema migrations of the ledger itself (defined in ledger_schema): MIGRATIONS[n] upgrades version n to n+1
MIGRATIONS = t.MIGRATIONS


def _dumps(obj: Any) -> str:
    return json.dumps(redact_obj(obj), sort_keys=True, default=str, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def event_hash(prev_hash: str, ts: float, env: str, run_id: int | None, step_id: str | None, kind: str, data: str) -> str:
    material = f"{prev_hash}|{ts!r}|{env}|{run_id}|{step_id}|{kind}|{data}"
    return hashlib.sha256(material.encode()).hexdigest()


def os_account() -> str:
    """The OS account running bpmigrate: $LOGNAME/$USER/… as getpass reads them, else the uid's passwd entry.

    Never a placeholder: in a container whose uid has no passwd entry it is ``uid:<n>``, still a precise name."""
    import getpass

    try:
        name = getpass.getuser()
    except (OSError, KeyError, ImportError):
        name = ""
    if name:
        return name
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid:{os.getuid()}"


def operator_name() -> str:
    """Who runs the command: ``$BPMIGRATE_OPERATOR`` (a person or role named by the operator), else the OS account."""
    return os.environ.get("BPMIGRATE_OPERATOR", "").strip() or os_account()


def host_name() -> str:
    return os.environ.get("BPMIGRATE_HOST_ID") or socket.gethostname()


@dataclass(frozen=True)
class LockInfo:
    token: str
    holder: str
    host: str
    pid: int
    command: str
    acquired_at: float
    heartbeat_at: float
    expires_at: float

    @property
    def expired(self) -> bool:
        return time.time() > self.expires_at


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=15000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


class Ledger:
    """Writes (and reads) one environment's ledger."""

    def __init__(self, url: str, env: str, *, create: bool = True) -> None:
        self.url = url
        self.env = env
        self.operator = operator_name()
        self.host = host_name()
        path = sqlite_path(url)
        if path is not None:
            if not create and not path.exists():
                raise LedgerError(
                    f"no ledger for environment {env!r} at {path}",
                    "nothing has been recorded in this environment yet",
                    f"bpmigrate plan --env {env}",
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = create_engine(normalize_url(url), future=True, pool_pre_ping=path is None)
        except Exception as exc:  # noqa: BLE001 - bad URL / missing driver
            raise LedgerError(f"cannot open the ledger at {redact(url)}", redact(str(exc)), "check ledger_url in migrate.toml") from None
        if path is not None:
            _sqlite_setup(self.engine)
        self._ensure_schema()

    # -- plumbing --------------------------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except (DatabaseError, OperationalError) as exc:
            raise self._ledger_error(exc) from None

    def _ledger_error(self, exc: SQLAlchemyError) -> LedgerError:
        text = str(getattr(exc, "orig", exc))
        if "malformed" in text or "not a database" in text or "file is encrypted" in text:
            from migrate.ledger_backup import restore_hint

            return LedgerError(
                f"the ledger {redact(self.url)} is corrupt: {text}",
                "the file was truncated or overwritten outside bpmigrate",
                restore_hint(self.url, self.env),
            )
        if "locked" in text or "busy" in text:
            return LedgerError(
                f"the ledger {redact(self.url)} stayed busy for 15 s: {text}",
                "another bpmigrate process holds a long write transaction",
                "retry the command; if it persists run `bpmigrate status` to see who holds the lock",
            )
        return LedgerError(f"ledger error: {redact(text)}", "the ledger database rejected a statement", "bpmigrate ledger check")

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _ensure_schema(self) -> None:
        try:
            if self.is_postgres:  # two processes creating the schema at once must not collide
                with self.engine.begin() as conn:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _advisory_key("schema")})
                    t.metadata.create_all(conn)
            else:
                t.metadata.create_all(self.engine)
            with self._tx() as conn:
                row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "schema_version").with_for_update()).first()
                if row is None:
                    conn.execute(insert(t.meta).values(key="schema_version", value=str(t.SCHEMA_VERSION)))
                    conn.execute(insert(t.meta).values(key="chain_head", value=GENESIS))
                    conn.execute(insert(t.meta).values(key="created_at", value=repr(time.time())))
                    return
                found = int(row[0])
                if found > t.SCHEMA_VERSION:
                    raise LedgerError(
                        f"the ledger was written by a newer bpmigrate (schema {found} > {t.SCHEMA_VERSION})",
                        "an older bpmigrate must not write a newer ledger",
                        "upgrade bpmigrate: pip install -U bpmigrate",
                    )
                for version in range(found, t.SCHEMA_VERSION):
                    MIGRATIONS[version](conn)  # each step in the same transaction as the version bump
                    conn.execute(update(t.meta).where(t.meta.c.key == "schema_version").values(value=str(version + 1)))
                    self._append(conn, "ledger_schema_migrated", {"from": version, "to": version + 1})
        except (DatabaseError, OperationalError) as exc:
            raise self._ledger_error(exc) from None

    # -- PostgreSQL session lock (shared team ledger) --------------------------------------------------------
    def try_session_lock(self) -> Connection | None:
        """PostgreSQL only: take the environment's session advisory lock on a dedicated connection.

        The lock lives exactly as long as that database session: a killed client's lock is released by the
        server, so a stale lease row can be taken over safely. Returns the connection holding it, or None when
        another session holds it.
        """
        conn = self.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _advisory_key(self.env)}).scalar()
        conn.commit()
        if got:
            return conn
        conn.close()
        return None

    def release_session_lock(self, conn: Connection) -> None:
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _advisory_key(self.env)})
            conn.commit()
        finally:
            conn.close()

    def _append(
        self,
        conn: Connection,
        kind: str,
        data: dict[str, Any],
        *,
        run_id: int | None = None,
        step_id: str | None = None,
    ) -> None:
        head_row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "chain_head").with_for_update()).first()
        prev = head_row[0] if head_row else GENESIS
        ts = time.time()
        payload = _dumps(data)
        digest = event_hash(prev, ts, self.env, run_id, step_id, kind, payload)
        conn.execute(
            insert(t.events).values(
                env=self.env,
                ts=ts,
                run_id=run_id,
                step_id=step_id,
                kind=kind,
                operator=self.operator,
                host=self.host,
                data=payload,
                prev_hash=prev,
                hash=digest,
            )
        )
        conn.execute(update(t.meta).where(t.meta.c.key == "chain_head").values(value=digest))

    # -- runs ------------------------------------------------------------------------------------------------
    def start_run(self, command: str) -> int:
        with self._tx() as conn:
            result = conn.execute(
                insert(t.runs).values(
                    env=self.env,
                    command=redact(command),
                    operator=self.operator,
                    host=self.host,
                    pid=os.getpid(),
                    started_at=time.time(),
                    status="running",
                )
            )
            run_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            data: dict[str, Any] = {"command": command, "pid": os.getpid()}
            if self.operator != os_account():  # BPMIGRATE_OPERATOR named someone: keep the OS account too
                data["os_account"] = os_account()
            self._append(conn, "run_started", data, run_id=run_id)
            return run_id

    def record_caller(self, run_id: int, identity: dict[str, Any]) -> None:
        """The AWS identity this run acts as (``sts get-caller-identity``): on the run row and as a chained event.

        ``identity``: ``{"arn", "account", "user_id"}``, or ``{"error": ...}`` when it could not be asked."""
        with self._tx() as conn:
            if identity.get("arn"):
                conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(caller_arn=str(identity["arn"])))
                self._append(conn, "caller_identity", identity, run_id=run_id)
            else:
                self._append(conn, "caller_identity_unknown", identity, run_id=run_id)

    def end_run(self, run_id: int, status: str) -> None:
        with self._tx() as conn:
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(ended_at=time.time(), status=status))
            self._append(conn, "run_ended", {"status": status}, run_id=run_id)

    # -- the state machine -----------------------------------------------------------------------------------
    def transition(
        self,
        step_id: str,
        ev: Event,
        *,
        run_id: int | None,
        data: dict[str, Any] | None = None,
        reason: str | None = None,
        outputs: dict[str, Any] | None = None,
        definition_checksum: str | None = None,
        error: str | None = None,
        skip_kind: str | None = None,
    ) -> State:
        """Apply ``ev`` to the step: decide with states.transition, update state, append the event — atomically."""
        with self._tx() as conn:
            row = conn.execute(
                select(t.step_state.c.state, t.step_state.c.attempt_id)
                .where(t.step_state.c.env == self.env, t.step_state.c.step_id == step_id)
                .with_for_update()
            ).first()
            current = State(row[0]) if row else State.PENDING
            attempt_id = row[1] if row else None
            target = transition(current, ev, step_id)  # raises IllegalTransition: nothing written
            now = time.time()
            values: dict[str, Any] = {"state": target.value, "updated_at": now}
            if ev in _OPENS:
                result = conn.execute(
                    insert(t.attempts).values(
                        run_id=run_id or 0,
                        env=self.env,
                        step_id=step_id,
                        action=_OPENS[ev],
                        operator=self.operator,
                        host=self.host,
                        started_at=now,
                        status="running",
                    )
                )
                values["attempt_id"] = int(result.inserted_primary_key[0])  # type: ignore[index]
                attempt_id = values["attempt_id"]
            elif ev in _CLOSES and attempt_id is not None:
                conn.execute(
                    update(t.attempts)
                    .where(t.attempts.c.id == attempt_id)
                    .values(ended_at=now, status=_CLOSES[ev], error=redact(error) if error else None)
                )
                values["attempt_id"] = None
            if target in (State.SKIPPED, State.APPLY_FAILED, State.VERIFY_FAILED, State.ROLLBACK_FAILED):
                values["reason"] = redact(reason or error or "")[:2000]
            else:
                values["reason"] = redact(reason)[:2000] if reason else None
            values["skip_kind"] = skip_kind if target == State.SKIPPED else None
            if target == State.APPLIED:
                values["applied_at"] = now
                if definition_checksum:
                    values["definition_checksum"] = definition_checksum
            if outputs is not None:
                self._put_outputs(conn, step_id, outputs, now)
            if target == State.ROLLED_BACK:
                conn.execute(delete(t.outputs).where(t.outputs.c.env == self.env, t.outputs.c.step_id == step_id))
                conn.execute(
                    delete(t.checkpoints).where(t.checkpoints.c.env == self.env, t.checkpoints.c.step_id == step_id)
                )
                values["applied_at"] = None
            if row is None:
                conn.execute(insert(t.step_state).values(env=self.env, step_id=step_id, **values))
            else:
                result = conn.execute(
                    update(t.step_state)
                    .where(
                        t.step_state.c.env == self.env,
                        t.step_state.c.step_id == step_id,
                        t.step_state.c.state == current.value,
                    )
                    .values(**values)
                )
                if result.rowcount != 1:  # alembic-style guard: exactly one row must change
                    raise LedgerError(
                        f"step {step_id}: state changed underneath this process",
                        "another process wrote the ledger without holding the lock",
                        "bpmigrate status",
                    )
            event_data: dict[str, Any] = {"from": current.value, "to": target.value, "event": ev.value}
            if attempt_id is not None:
                event_data["attempt_id"] = attempt_id
            if reason:
                event_data["reason"] = reason
            if error:
                event_data["error"] = error
            if data:
                event_data.update(data)
            self._append(conn, "transition", event_data, run_id=run_id, step_id=step_id)
            return target

    def _put_outputs(self, conn: Connection, step_id: str, outputs: dict[str, Any], now: float) -> None:
        payload = _dumps(outputs)
        conn.execute(delete(t.outputs).where(t.outputs.c.env == self.env, t.outputs.c.step_id == step_id))
        conn.execute(insert(t.outputs).values(env=self.env, step_id=step_id, data=payload, updated_at=now))

    # -- plans, intents, artifacts, checkpoints, metrics, audit ----------------------------------------------
    def record_plan(self, step_id: str, summary: dict[str, Any], fingerprint: str, complete: bool, run_id: int | None) -> None:
        now = time.time()
        with self._tx() as conn:
            conn.execute(delete(t.plans).where(t.plans.c.env == self.env, t.plans.c.step_id == step_id))
            conn.execute(
                insert(t.plans).values(
                    env=self.env,
                    step_id=step_id,
                    fingerprint=fingerprint,
                    complete=1 if complete else 0,
                    summary=_dumps(summary),
                    created_at=now,
                )
            )
            self._append(
                conn, "plan_recorded", {"fingerprint": fingerprint, "complete": complete}, run_id=run_id, step_id=step_id
            )

    def consume_plan(self, step_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                update(t.plans)
                .where(t.plans.c.env == self.env, t.plans.c.step_id == step_id, t.plans.c.consumed_at.is_(None))
                .values(consumed_at=time.time())
            )

    def record_intent(self, step_id: str, attempt_id: int, action: str, data: dict[str, Any], run_id: int | None) -> None:
        with self._tx() as conn:
            conn.execute(
                insert(t.intents).values(
                    env=self.env, step_id=step_id, attempt_id=attempt_id, action=action, data=_dumps(data), ts=time.time()
                )
            )
            self._append(conn, "intent", {"action": action, "attempt_id": attempt_id, **data}, run_id=run_id, step_id=step_id)

    def record_artifact(self, step_id: str, kind: str, path: Path, sha256: str, size: int, run_id: int | None) -> None:
        with self._tx() as conn:
            conn.execute(
                insert(t.artifacts).values(
                    env=self.env, step_id=step_id, kind=kind, path=str(path), sha256=sha256, size=size, created_at=time.time()
                )
            )
            self._append(
                conn, "artifact", {"kind": kind, "path": str(path), "sha256": sha256, "size": size}, run_id=run_id, step_id=step_id
            )

    def put_checkpoint(self, step_id: str, key: str, data: dict[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute(
                delete(t.checkpoints).where(
                    t.checkpoints.c.env == self.env, t.checkpoints.c.step_id == step_id, t.checkpoints.c.key == key
                )
            )
            conn.execute(insert(t.checkpoints).values(env=self.env, step_id=step_id, key=key, data=_dumps(data), ts=time.time()))

    def clear_checkpoints(self, step_id: str) -> None:
        with self._tx() as conn:
            conn.execute(delete(t.checkpoints).where(t.checkpoints.c.env == self.env, t.checkpoints.c.step_id == step_id))

    def record_progress(self, step_id: str, attempt_id: int, snapshot: dict[str, Any]) -> None:
        """The attempt's latest progress report (replaces the previous one; read by ``status --watch``)."""
        with self._tx() as conn:
            conn.execute(delete(t.progress).where(t.progress.c.attempt_id == attempt_id))
            conn.execute(
                insert(t.progress).values(
                    attempt_id=attempt_id, env=self.env, step_id=step_id, data=_dumps(snapshot), updated_at=time.time()
                )
            )

    def record_metrics(self, attempt_id: int, metrics: dict[str, float]) -> None:
        with self._tx() as conn:
            row = conn.execute(select(t.attempts.c.metrics).where(t.attempts.c.id == attempt_id)).first()
            merged = dict(_loads(row[0]) or {}) if row else {}
            merged.update(metrics)
            conn.execute(update(t.attempts).where(t.attempts.c.id == attempt_id).values(metrics=_dumps(merged)))

    def audit(self, kind: str, data: dict[str, Any], *, step_id: str | None = None, run_id: int | None = None) -> None:
        with self._tx() as conn:
            self._append(conn, kind, data, run_id=run_id, step_id=step_id)

    # -- long-lived children (adopted by the next run, never cleaned as orphans: migrate/adapters/orphans.py) ----
    def register_child(
        self, step_id: str, pid: int, start_ticks: int, purpose: str, run_id: int | None = None
    ) -> None:
        """Record a child process meant to outlive this run (pid + start time, so a reused pid never matches)."""
        data = {"pid": pid, "start_ticks": start_ticks, "purpose": purpose}
        self.audit("child_registered", data, step_id=step_id, run_id=run_id)

    def release_child(self, step_id: str, pid: int, run_id: int | None = None) -> None:
        """The registered child was stopped on purpose (or is no longer meant to outlive runs)."""
        self.audit("child_released", {"pid": pid}, step_id=step_id, run_id=run_id)

    # -- the lease lock --------------------------------------------------------------------------------------
    def acquire_lock(self, token: str, command: str, ttl: float, *, takeover_if: Any = None) -> LockInfo | None:
        """Take the environment's lock. Returns the previous (dead/expired) holder when it was taken over.

        ``takeover_if(info) -> str | None``: a reason to take a stale lock over (e.g. its pid is dead on this host).
        """
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(select(t.locks).where(t.locks.c.env == self.env)).first()
            previous: LockInfo | None = None
            if row is not None:
                info = LockInfo(
                    token=row.token,
                    holder=row.holder,
                    host=row.host,
                    pid=row.pid,
                    command=row.command,
                    acquired_at=row.acquired_at,
                    heartbeat_at=row.heartbeat_at,
                    expires_at=row.expires_at,
                )
                if info.token != token:
                    why = takeover_if(info) if takeover_if else None
                    if why is None:
                        raise lock_held_error(self.env, info)
                    previous = info
                    self._append(conn, "lock_taken_over", {"reason": why, "previous": _lock_dict(info)})
                conn.execute(delete(t.locks).where(t.locks.c.env == self.env))
            conn.execute(
                insert(t.locks).values(
                    env=self.env,
                    token=token,
                    holder=self.operator,
                    host=self.host,
                    pid=os.getpid(),
                    command=redact(command),
                    acquired_at=now,
                    heartbeat_at=now,
                    expires_at=now + ttl,
                )
            )
            self._append(conn, "lock_acquired", {"pid": os.getpid(), "command": command, "ttl": ttl})
            return previous

    def heartbeat(self, token: str, ttl: float) -> bool:
        now = time.time()
        with self._tx() as conn:
            result = conn.execute(
                update(t.locks)
                .where(t.locks.c.env == self.env, t.locks.c.token == token)
                .values(heartbeat_at=now, expires_at=now + ttl)
            )
            return bool(result.rowcount == 1)

    def release_lock(self, token: str) -> None:
        with self._tx() as conn:
            result = conn.execute(delete(t.locks).where(t.locks.c.env == self.env, t.locks.c.token == token))
            if result.rowcount:
                self._append(conn, "lock_released", {"pid": os.getpid()})

    def force_unlock(self, reason: str) -> LockInfo | None:
        with self._tx() as conn:
            row = conn.execute(select(t.locks).where(t.locks.c.env == self.env)).first()
            if row is None:
                return None
            info = LockInfo(row.token, row.holder, row.host, row.pid, row.command, row.acquired_at, row.heartbeat_at, row.expires_at)
            conn.execute(delete(t.locks).where(t.locks.c.env == self.env))
            self._append(conn, "lock_forced", {"reason": reason, "previous": _lock_dict(info)})
            return info

    def close(self) -> None:
        self.engine.dispose()


def _lock_dict(info: LockInfo) -> dict[str, Any]:
    return {"holder": info.holder, "host": info.host, "pid": info.pid, "command": info.command, "heartbeat_at": info.heartbeat_at}


def lock_held_error(env: str, info: LockInfo) -> LockHeld:
    age = time.time() - info.heartbeat_at
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.acquired_at))
    if info.expired:
        return LockHeld(
            f"environment {env!r} is locked by {info.holder}@{info.host} (pid {info.pid}, `{info.command}`, since {since})",
            f"its heartbeat expired {age:.0f}s ago: the holder probably died on another machine",
            f"make sure that run is gone, then: bpmigrate --env {env} unlock --force --reason '...'",
        )
    return LockHeld(
        f"environment {env!r} is locked by {info.holder}@{info.host} (pid {info.pid}, `{info.command}`, since {since})",
        f"another operator's command is running (last heartbeat {age:.0f}s ago)",
        f"wait for it, or ask {info.holder}; watch it with: bpmigrate --env {env} status --watch",
    )


def copy_ledger(src_url: str, dst_url: str, env: str) -> dict[str, int]:
    """Copy an environment's whole ledger (history, hashes, outputs, plans, …) to another URL, e.g. SQLite → PostgreSQL.

    Refuses a destination that already holds events for ``env``. Ids and hashes are kept, so the chain stays valid.
    """
    src = Ledger(src_url, env, create=False)
    dst = Ledger(dst_url, env)
    counts: dict[str, int] = {}
    try:
        with dst._tx() as out:
            existing = out.execute(select(t.events.c.id).where(t.events.c.env == env).limit(1)).first()
            if existing is not None:
                raise LedgerError(
                    f"the destination ledger already has history for environment {env!r}",
                    "copying would interleave two histories and break the hash chain",
                    "point --to at an empty database (or a new one)",
                )
            with src.engine.connect() as inp:
                for table in t.metadata.sorted_tables:
                    if table is t.locks:  # the lease belongs to the old ledger
                        continue
                    if table is t.meta:
                        rows = [dict(r._mapping) for r in inp.execute(select(table))]
                        for row in rows:
                            out.execute(delete(t.meta).where(t.meta.c.key == row["key"]))
                            out.execute(insert(t.meta).values(**row))
                        counts[table.name] = len(rows)
                        continue
                    query = select(table).where(table.c.env == env) if "env" in table.c else select(table)
                    rows = [dict(r._mapping) for r in inp.execute(query)]
                    if rows:
                        out.execute(insert(table), rows)
                    counts[table.name] = len(rows)
            if dst.is_postgres:  # explicit ids were inserted: move the sequences past them
                for table in (t.runs, t.attempts, t.events, t.intents, t.artifacts):
                    out.execute(
                        text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table.name}")
                    )
            dst._append(out, "ledger_copied", {"from": redact(src_url), "counts": counts})
    finally:
        src.close()
        dst.close()
    return counts
