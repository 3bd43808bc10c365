"""Ledger backups: the migration's memory must survive a lost laptop or a truncated file.

* Before every mutating command (``Engine.session``), once the lock is held: an online snapshot with the sqlite3
  backup API (consistent under WAL, readers and writers keep going) into ``state/<env>/ledger-backups/``, written
  to a temporary name, fsynced, renamed; the newest ``ledger_backups.keep`` are kept.
* After each mutating run, for an environment with an AWS account: a fresh snapshot copied to the environment's
  Terraform state bucket (the ``bucket`` output ``tf-state-backend`` recorded: versioned, encrypted), one key per
  environment, so every run is a new object version.
* ``bpmigrate ledger restore [--from FILE|s3://BUCKET/KEY]`` checks the candidate (integrity, schema, hash chain)
  before it replaces anything, keeps the damaged ledger aside, and records the restore as a chained event.

A PostgreSQL team ledger is not copied: it is covered by the database's own backups (PITR / snapshots).
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.errors import BpmError, LedgerError, LockHeld, UsageError
from migrate.ledger_read import LedgerReader

if TYPE_CHECKING:
    from migrate.config import Config
    from migrate.engine import Engine

BACKUP_DIR = "ledger-backups"
OFFSITE_PREFIX = "bpmigrate/ledger"
#: at most this many backups are opened when looking for the newest good one (newest first)
_SCAN_LIMIT = 25
_LABEL_RE = re.compile(r"[^a-z0-9]+")


def sqlite_file(url: str) -> Path | None:
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def backups_dir(db: Path, env: str) -> Path:
    """``state/<env>/ledger-backups`` for the default ``state/<env>.db`` (next to any other SQLite ledger file)."""
    return db.parent / env / BACKUP_DIR


def offsite_key(env: str) -> str:
    return f"{OFFSITE_PREFIX}/{env}.db"


# -- snapshots -----------------------------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def snapshot(db: Path, dest: Path) -> Path:
    """An online, consistent copy of the SQLite ledger ``db`` as one self-contained file ``dest`` (atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    src = sqlite3.connect(db, timeout=15)
    try:
        out = sqlite3.connect(part)
        try:
            src.backup(out)
            out.execute("PRAGMA journal_mode=DELETE")  # the copy needs no -wal file next to it
        finally:
            out.close()
    finally:
        src.close()
    _fsync(part)
    os.replace(part, dest)
    _fsync(dest.parent)
    return dest


def _label(command: str) -> str:
    """The command's verb for the file name: ``bpmigrate --env x apply --step y`` → ``apply``."""
    tokens = command.split()[1:]
    verb = "run"
    while tokens:
        token = tokens.pop(0)
        if token in ("--env", "-e", "--config", "-c"):
            tokens = tokens[1:]
        elif not token.startswith("-"):
            verb = token
            break
    return _LABEL_RE.sub("-", verb.lower()).strip("-")[:24] or "run"


def list_backups(db: Path, env: str) -> list[Path]:
    """Backups of ``env``'s ledger, newest first."""
    folder = backups_dir(db, env)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"{env}-*.db") if p.is_file()]
    return sorted(found, key=lambda p: p.name, reverse=True)


def backup_now(db: Path, env: str, command: str, keep: int) -> Path:
    """Snapshot now and drop the oldest beyond ``keep``. Names sort by time: ``<env>-<UTC time>-<command>.db``."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}Z"
    dest = snapshot(db, backups_dir(db, env) / f"{env}-{stamp}-{_label(command)}.db")
    for old in list_backups(db, env)[keep:]:
        old.unlink(missing_ok=True)
    return dest


# -- checking ------------------------------------------------------------------------------------------------------
@dataclass
class BackupCheck:
    path: Path
    ok: bool
    events: int = 0
    schema_version: int | None = None
    problems: list[str] = field(default_factory=list)


def check_file(path: Path, env: str) -> BackupCheck:
    """What ``bpmigrate ledger check`` verifies, for any ledger file: integrity, schema version, hash chain."""
    if not path.is_file() or path.stat().st_size == 0:
        return BackupCheck(path, False, problems=["missing or empty"])
    try:
        reader = LedgerReader(f"sqlite:///{path}", env)
    except BpmError as exc:
        return BackupCheck(path, False, problems=[exc.what])
    try:
        problems = reader.problems()
        return BackupCheck(path, not problems, len(reader.events()), reader.schema_version(), problems)
    except BpmError as exc:
        return BackupCheck(path, False, problems=[exc.what])
    finally:
        reader.close()


def newest_good(db: Path, env: str, *, exclude: Path | None = None) -> BackupCheck | None:
    for path in list_backups(db, env)[:_SCAN_LIMIT]:
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        result = check_file(path, env)
        if result.ok:
            return result
    return None


def restore_command(env: str, source: Path | str, config_path: str | Path | None = None) -> str:
    cfg = f" --config {shlex.quote(str(config_path))}" if config_path else ""
    return f"bpmigrate --env {shlex.quote(env)}{cfg} ledger restore --from {shlex.quote(str(source))}"


def restore_hint(url: str, env: str, config_path: str | Path | None = None) -> str:
    """The next command for a corrupt ledger: restore the newest good backup (named), exactly as it must run."""
    db = sqlite_file(url)
    if db is None:
        return "restore the ledger database from its own backups (PostgreSQL point-in-time recovery)"
    good = newest_good(db, env)
    if good is not None:
        return restore_command(env, good.path.resolve(), config_path)
    folder = backups_dir(db, env)
    return (
        f"no good backup in {folder}: restore one from the off-site copy "
        f"({restore_command(env, 's3://<tf-state bucket>/' + offsite_key(env), config_path)}), "
        f"or move {db} aside to start a new ledger"
    )


# -- restore -------------------------------------------------------------------------------------------------------
@dataclass
class Restored:
    source: str
    path: Path
    events: int
    schema_version: int | None
    kept_aside: list[Path]


def _fetch(config: Config, env_name: str, source: str, db: Path) -> Path:
    """A local file for ``source`` (an S3 object is downloaded next to the backups)."""
    if source.startswith("s3://"):
        from migrate.adapters import Adapters
        from migrate.adapters.ledger_store import parse_s3_url

        bucket, key = parse_s3_url(source)
        dest = backups_dir(db, env_name) / f"download-{int(time.time())}-{Path(key).name}"
        adapters = Adapters(config.env(env_name), project_root=config.root, state_dir=config.state_dir)
        try:
            adapters.get("ledger_store").get(bucket, key, dest)
        finally:
            adapters.close()
        return dest
    path = Path(source).expanduser()
    if not path.is_file():
        raise UsageError(
            f"no backup file at {path}",
            "--from names a ledger backup file or an s3://BUCKET/KEY object",
            f"list them: ls {backups_dir(db, env_name)}",
        )
    return path


def _healthy(db: Path, env: str) -> BackupCheck | None:
    if not db.exists():
        return None
    result = check_file(db, env)
    return result if result.ok else None


def restore(config: Config, env_name: str, source: str | None = None, *, force: bool = False) -> Restored:
    """Replace ``env_name``'s SQLite ledger by a verified backup; the replaced file is kept aside, never deleted."""
    url = config.ledger_url(env_name)
    db = sqlite_file(url)
    if db is None:
        raise UsageError(
            f"the ledger of {env_name!r} is a database server ({url.split(':', 1)[0]}), not a file",
            "a PostgreSQL team ledger is backed up by the database's own backups, not by bpmigrate",
            "restore it with the database's point-in-time recovery, then: bpmigrate ledger check",
        )
    if source is None:
        good = newest_good(db, env_name)
        if good is None:
            raise LedgerError(
                f"no good backup of the {env_name!r} ledger in {backups_dir(db, env_name)}",
                "backups are taken before every mutating command; none exists or none passes the check",
                restore_command(env_name, f"s3://<tf-state bucket>/{offsite_key(env_name)}"),
            )
        source = str(good.path)
    candidate = _fetch(config, env_name, source, db)
    try:
        return _restore_from(url, db, env_name, source, candidate, force=force)
    finally:
        if candidate.name.startswith("download-"):
            candidate.unlink(missing_ok=True)


def _restore_from(url: str, db: Path, env_name: str, source: str, candidate: Path, *, force: bool) -> Restored:
    from migrate.ledger import Ledger
    from migrate.ledger_schema import SCHEMA_VERSION

    checked = check_file(candidate, env_name)
    if not checked.ok:
        other = newest_good(db, env_name, exclude=candidate)
        raise LedgerError(
            f"the backup {source} fails the ledger check: {'; '.join(checked.problems[:3])}",
            "restoring it would replace one damaged ledger by another",
            restore_command(env_name, other.path.resolve()) if other else "choose another backup (--from FILE|s3://…)",
        )
    if (checked.schema_version or 0) > SCHEMA_VERSION:
        raise LedgerError(
            f"the backup {source} was written by a newer bpmigrate (schema {checked.schema_version} > {SCHEMA_VERSION})",
            "an older bpmigrate must not write a newer ledger",
            "upgrade bpmigrate (pip install -U bpmigrate), then run the restore again",
        )
    current = _healthy(db, env_name)
    if current is not None:
        reader = LedgerReader(url, env_name)
        try:
            lock = reader.lock()
        finally:
            reader.close()
        if lock is not None and not lock["expired"]:
            raise LockHeld(
                f"environment {env_name!r} is locked by {lock['holder']}@{lock['host']} (`{lock['command']}`)",
                "a command is running against this ledger",
                f"wait for it (bpmigrate --env {env_name} status), then restore",
            )
        if not force:
            raise UsageError(
                f"the ledger of {env_name!r} is healthy ({current.events} events; the backup has {checked.events})",
                "restoring would set the record back to the backup and drop what was recorded since",
                restore_command(env_name, source) + " --force",
            )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside: list[Path] = []
    for suffix in ("", "-wal", "-shm", "-journal"):
        old = Path(f"{db}{suffix}")
        if old.exists():
            kept = backups_dir(db, env_name) / f"replaced-{stamp}-{db.name}{suffix}"
            kept.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, kept)
            aside.append(kept)
    snapshot(candidate, db)
    ledger = Ledger(url, env_name)  # migrates an older schema forward, in one transaction
    try:
        ledger.force_unlock("ledger restored from a backup: the lease recorded in it belongs to the run that made it")
        ledger.audit(
            "ledger_restored",
            {"from": source, "events": checked.events, "schema_version": checked.schema_version, "kept_aside": [str(p) for p in aside]},
        )
    finally:
        ledger.close()
    return Restored(source, db, checked.events, checked.schema_version, aside)


# -- engine hooks (never fail the command: a failed backup is a warning and an audited event) -------------------
def before_command(engine: Engine, command: str) -> Path | None:
    """Snapshot the ledger before a mutating command changes anything (the lock is held)."""
    db = sqlite_file(engine.ledger_url)
    if db is None or not db.exists():
        return None
    try:
        return backup_now(db, engine.env_name, command, engine.env.ledger_backups.keep)
    except (OSError, sqlite3.Error) as exc:
        engine.reporter.message("warn", f"ledger backup failed ({exc}); continuing without one")
        return None


def offsite_bucket(engine: Engine) -> str | None:
    """The environment's Terraform state bucket, as ``tf-state-backend`` recorded it (None before it exists)."""
    if not (engine.env.ledger_backups.offsite and engine.env.has_aws_account):
        return None
    reader = engine.reader()
    try:
        recorded = reader.outputs().get("tf-state-backend", {})
    finally:
        reader.close()
    bucket = recorded.get("bucket")
    return str(bucket) if bucket else None


def after_run(engine: Engine) -> dict[str, Any] | None:
    """Copy the ledger as it is now to the environment's Terraform state bucket (versioned, encrypted)."""
    db = sqlite_file(engine.ledger_url)
    if db is None or not db.exists():
        return None
    try:
        bucket = offsite_bucket(engine)
        if bucket is None:
            return None
        copy = snapshot(db, backups_dir(db, engine.env_name) / f"offsite-{os.getpid()}.db")
        try:
            sent = engine.adapters.get("ledger_store").put(bucket, offsite_key(engine.env_name), copy)
        finally:
            copy.unlink(missing_ok=True)
        record = {"url": sent.url, "version_id": sent.version_id, "sha256": sent.sha256, "size": sent.size}
        engine.ledger.audit("ledger_backup_offsite", record, run_id=engine.run_id)
        return record
    except (BpmError, OSError, sqlite3.Error) as exc:
        what = exc.what if isinstance(exc, BpmError) else str(exc)
        engine.reporter.message("warn", f"off-site ledger copy failed: {what}")
        try:
            engine.ledger.audit("ledger_backup_offsite_failed", {"error": what}, run_id=engine.run_id)
        except BpmError:
            pass
        return None


def record_caller(engine: Engine) -> dict[str, Any] | None:
    """For a run against AWS: record who the credentials are (``sts get-caller-identity``) on the run."""
    if not engine.env.has_aws_account or engine.run_id is None:
        return None
    try:
        identity: dict[str, Any] = dict(engine.adapters.aws().caller_identity())
    except BpmError as exc:
        identity = {"error": exc.what}
        engine.reporter.message("warn", f"could not ask AWS who this run is ({exc.what}); recorded as unknown")
    engine.ledger.record_caller(engine.run_id, identity)
    return identity
