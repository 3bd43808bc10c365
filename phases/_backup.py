"""Backups bound to what they back up (pg-backup, final-backup): when an existing dump may be reused, how a new one
is taken (beside the old one, which stays as ``.prev`` until the new one reads back) and how one is proven.

Beside every ``<dump>``: ``<dump>.sha256`` and ``<dump>.json`` — the source's identity as of the dump's snapshot
(system identifier, database, server version, WAL position, next transaction id, server time), the ledger run that
took it and why it was (re-)taken.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError, StepFailed
from migrate.step import Check, StepContext

if TYPE_CHECKING:
    from migrate.adapters.postgres import PostgresAdapter

SIDECARS = (".sha256", ".json")


def backup_staleness(
    ctx: StepContext, step_id: str, path: Path, source: PostgresAdapter, *, max_age_h: float = 0.0, reuse: bool = True
) -> str | None:
    """None when the backup at ``path`` may be reused; else why it must be re-taken. Reused only when this
    environment's ledger recorded it (same sha256), it comes from the same source (system identifier, database,
    major version) and the source has had no write since (next transaction id unchanged) — or it is younger than
    ``max_age_h`` hours by the source's clock."""
    from datetime import datetime

    from migrate.adapters.postgres import identity_drift

    if getattr(ctx, "refresh", False):
        return "re-take requested with --refresh"
    if not reuse:
        return "reuse_existing = false"
    meta_file = path.with_name(path.name + ".json")
    if not path.is_file():
        return "no backup yet"
    if not meta_file.is_file():
        return "the existing file records no source identity (taken by an older bpmigrate or by hand)"
    meta = json.loads(meta_file.read_text())
    recorded = ctx.upstream.get(step_id, {})
    if recorded.get("sha256") != meta.get("sha256"):
        return "the existing file is not the one recorded in this environment's ledger (an earlier rehearsal's?)"
    if path.stat().st_size != meta.get("size"):
        return f"the existing file's size changed since it was written ({meta.get('size')} → {path.stat().st_size})"
    then = dict(meta.get("identity") or {})
    now = source.identity()
    drift = identity_drift(then, now)
    if drift and drift.startswith("the source was written since") and max_age_h > 0:
        age_h = (datetime.fromisoformat(now["at"]) - datetime.fromisoformat(then["at"])).total_seconds() / 3600
        if age_h <= max_age_h:
            ctx.log(f"{drift}; reused: {age_h:.2f} h old, within max_age_h = {max_age_h:g}")
            return None
        return f"{drift}, and it is {age_h:.1f} h old (max_age_h = {max_age_h:g})"
    return drift


def backup_checks(source: PostgresAdapter, path: Path, sha: str, size: int, identity: Mapping[str, Any]) -> list[Check]:
    """Read-back proof of a custom-format dump against the source: pg_restore --list reads it; every table holding
    rows (plain tables and leaf partitions, matched by OID: names with spaces or quotes cannot confuse it) has a
    TABLE DATA entry; every large object a BLOB entry; and it was taken from this source."""
    from migrate.adapters.postgres import parse_toc

    try:
        toc = parse_toc(source.restore_list(path))
        error = ""
    except AdapterError as exc:  # a damaged archive is a failing check, not a crash
        toc, error = [], exc.what
    data_oids = {e.oid for e in toc if e.desc == "TABLE DATA"}
    missing = [name for oid, name in source.data_relations().items() if oid not in data_oids]
    blobs = [e for e in toc if e.desc in ("BLOB", "BLOB METADATA")]
    lo_count = source.large_object_count()
    blobs_ok = len(blobs) == lo_count if not any(e.desc == "BLOB METADATA" for e in toc) else bool(blobs)
    now = source.identity()
    same = {k: now.get(k) for k in ("system_identifier", "database")}
    then = {k: identity.get(k) for k in ("system_identifier", "database")}
    return [
        Check("pg_restore --list reads the archive", bool(toc), observed=error or f"{len(toc)} TOC entries"),
        Check(
            "every table with rows (leaf partitions included) has a TABLE DATA entry (by OID)",
            bool(toc) and not missing,
            observed=missing[:5] or "all",
            expected="all",
        ),
        Check("every large object has a BLOB entry", blobs_ok, observed=len(blobs), expected=lo_count),
        Check(
            "taken from this source (system identifier, database)",
            bool(identity) and same == then,
            observed=then,
            expected=same,
            detail=f"taken at WAL {identity.get('lsn')} ({identity.get('at')}); the source is at {now.get('lsn')}",
        ),
    ]


def human_size(n: int) -> str:
    """1.2 GB / 21.9 MB / 84 KB / 512 B."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if unit != "KB" else f"{n / size:.0f} KB"
    return f"{n} B"


def take_or_retake(why: str) -> str:
    """How a plan says it: "take" the first time, "re-take (why)" otherwise."""
    return "take" if why == "no backup yet" else f"re-take ({why})"


def read_meta(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.with_name(path.name + ".json").read_text()))


def take_backup(ctx: StepContext, source: PostgresAdapter, path: Path, reason: str, *, kind: str) -> dict[str, Any]:
    """pg_dump -Fc of ``source`` at one exported snapshot (whose identity it records) into ``path``: written as
    ``<path>.new``, read back, then renamed into place; the previous dump is kept as ``.prev`` until then."""
    from migrate.adapters.pgcopy import ExportedSnapshot
    from migrate.adapters.postgres import file_sha256

    path.parent.mkdir(parents=True, exist_ok=True)
    ctx.intent("pg-dump", source=source.endpoint, path=str(path), reason=reason)
    started = time.monotonic()
    new = path.with_name(path.name + ".new")
    snap = ExportedSnapshot(source)
    try:
        source.dump(new, fmt="c", snapshot=snap.id)
        identity = snap.identity
    finally:
        snap.close()
    sha, size = file_sha256(new)
    meta = {
        "path": str(path),
        "sha256": sha,
        "size": size,
        "identity": identity,
        "run_id": ctx.run_id,
        "reason": reason,
        "seconds": round(time.monotonic() - started, 2),
    }
    failed = [c for c in backup_checks(source, new, sha, size, identity) if not c.ok]
    if failed:
        new.unlink(missing_ok=True)
        raise StepFailed(
            f"the new backup does not read back: {failed[0].name} (observed {failed[0].observed})",
            "pg_dump wrote an archive that pg_restore cannot list completely; the previous backup is untouched",
            f"bpmigrate apply --step {ctx.step_id} --env {ctx.env_name}",
        )
    if path.exists():
        os.replace(path, path.with_name(path.name + ".prev"))
    os.replace(new, path)
    for ext in SIDECARS:
        side = path.with_name(path.name + ext)
        if side.exists():
            os.replace(side, path.with_name(path.name + ".prev" + ext))
    path.with_name(path.name + ".sha256").write_text(sha + "\n")
    path.with_name(path.name + ".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    for ext in ("", *SIDECARS):
        path.with_name(path.name + ".prev" + ext).unlink(missing_ok=True)
    ctx.log(f"pg_dump -Fc: {size / (1 << 20):.1f} MB in {meta['seconds']}s ({reason})")
    ctx.artifact(kind, path, sha, size)
    ctx.metrics(bytes=float(size))
    return meta


def reusable(
    ctx: StepContext, source: PostgresAdapter, path: Path, *, max_age_h: float, reuse: bool
) -> tuple[str | None, dict[str, Any]]:
    """(why it must be re-taken | None, its recorded metadata when reusable): the staleness rules plus a full
    sha256 re-read of the file."""
    from migrate.adapters.postgres import file_sha256

    why = backup_staleness(ctx, ctx.step_id, path, source, max_age_h=max_age_h, reuse=reuse)
    if why is not None:
        return why, {}
    meta = read_meta(path)
    if file_sha256(path)[0] != meta["sha256"]:
        return "the existing file does not match its recorded sha256 (modified or truncated)", {}
    return None, meta
