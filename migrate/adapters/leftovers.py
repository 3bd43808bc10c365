"""What bpmigrate may leave behind in the databases and on this host, found and (for its own schema) removed.

In a database: the schema ``_bpmigrate`` (copy plan, progress, restore and sync state), replication slots,
publications and subscriptions named with bpmigrate's prefix (``bpm_``: forward and reverse streams alike). On this
host: processes carrying this environment's bpmigrate marker (a Redis follower, a replication helper) that are not
part of the running command. Read-only except :func:`drop_internal_schema`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.adapters.postgres import INTERNAL_SCHEMA, PostgresAdapter, qident

if TYPE_CHECKING:
    from migrate.config import EnvConfig

PREFIX = "bpm_"


def database_leftovers(db: PostgresAdapter) -> dict[str, list[str]]:
    """{"schema": [...], "slots": [...], "publications": [...], "subscriptions": [...]} of bpmigrate's in ``db``
    (slots are cluster-wide: those of any database on that server are listed)."""
    like = PREFIX.replace("_", "\\_") + "%"
    return {
        "schema": [INTERNAL_SCHEMA] if db.schema_exists(INTERNAL_SCHEMA) else [],
        "slots": [
            str(r[0]) for r in db.query("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s", [like])
        ],
        "publications": [
            str(r[0]) for r in db.query("SELECT pubname FROM pg_publication WHERE pubname LIKE %s", [like])
        ],
        "subscriptions": [
            str(r[0])
            for r in db.query(
                "SELECT subname FROM pg_subscription WHERE subname LIKE %s AND subdbid = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())",
                [like],
            )
        ],
    }


def drop_internal_schema(db: PostgresAdapter) -> bool:
    """Drop ``_bpmigrate`` (and everything in it); False when it was not there."""
    if not db.schema_exists(INTERNAL_SCHEMA):
        return False
    db.execute(f"DROP SCHEMA {qident(INTERNAL_SCHEMA)} CASCADE")
    return True


def marked_processes(env_name: str) -> list[dict[str, Any]]:
    """Live processes on this host marked as bpmigrate's for ``env_name``, outside the running command's own
    process group (pid, command)."""
    from migrate.adapters.orphans import marked_processes as all_marked

    mine = os.getpgrp()
    return [
        {"pid": p.pid, "command": p.command}
        for p in all_marked()
        if p.marker.env == env_name and p.pgid != mine and p.marker.pid != os.getpid()
    ]


class Leftovers:
    def __init__(self, env_name: str) -> None:
        self.env_name = env_name

    database = staticmethod(database_leftovers)
    drop_internal_schema = staticmethod(drop_internal_schema)

    def processes(self) -> list[dict[str, Any]]:
        return marked_processes(self.env_name)


def from_config(
    env: EnvConfig, *, project_root: Path | None = None, state_dir: Path | None = None, **_: Any
) -> Leftovers:
    return Leftovers(env.name)
