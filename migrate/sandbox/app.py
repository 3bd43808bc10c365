"""The sandbox's stand-in for the BetterPrompts API: a small real HTTP process writing to PostgreSQL and Redis.

Two of them run in the sandbox: the old stack (``app-old``, configured on the source PostgreSQL/Redis) and the new
stack (``app-new``, on the target). Each reads its configuration from a JSON file (``config.json`` in its data
directory) — the file the ``process`` fence of ``data-switch`` rewrites, as Compose's env override or the EKS
ConfigMap would be rewritten in production::

    {"name": "old", "database_url": "postgresql://...", "redis_url": "redis://...", "maintenance": false,
     "generation": 3, "create_schema": true, "primary": true}

``primary = false`` (the new stack before the switch: its database is still a replication subscriber) sends writes
to a shadow table (``_bpmigrate.shadow_writes``, which validation ignores) instead of ``app.write_log``, and skips
Redis: a load test against the new stack cannot collide with the rows the subscription applies. The ``process``
fence sets ``primary = true`` when it points the stack at a database.

The process re-reads the file when it changes (every 50 ms) and, once the change is in force (maintenance on =
every in-flight write has finished; new URLs = new connections), writes ``status.json`` with the applied
``generation``: that is the acknowledgement the fence waits for.

Endpoints::

    GET  /health                       {"status": "ok", "stack", "maintenance", "generation", "database"}
    POST /api/v1/enhance | /classify   {"id": "<write id>", ...}: one row in app.write_log + Redis keys -> 200
                                       {"id", "seq", "stack"}; 503 while in maintenance
    GET  /api/v1/writes/<id>           how many rows carry that write id (reads the primary it is pointed at)
    GET  /api/v1/history               the 5 newest rows
    POST /maintenance/on | /off        the ``http`` fence kind (on returns once in-flight writes are done)
    POST /config                       {"database_url", "redis_url"}: repoint (the ``http`` fence's repoint_url)

Run: ``python -m migrate.sandbox.app --config state/sandbox/data/app-old/config.json --port 8101``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import select
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from migrate.adapters.fences import STATUS_FILE, write_config

SCHEMA_SQL = (
    "CREATE SCHEMA IF NOT EXISTS app",
    "CREATE TABLE IF NOT EXISTS app.write_log (seq bigserial PRIMARY KEY, write_id text NOT NULL, kind text NOT NULL,"
    " stack text NOT NULL, payload jsonb, created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS write_log_write_id ON app.write_log (write_id)",
)
SHADOW_SQL = (
    "CREATE SCHEMA IF NOT EXISTS _bpmigrate",
    "CREATE TABLE IF NOT EXISTS _bpmigrate.shadow_writes (write_id text, kind text, payload jsonb, "
    "created_at timestamptz NOT NULL DEFAULT now())",
)


def describe_url(url: str) -> str:
    """host:port/db of a database URL, without credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}{parts.path}"


def _alive(c: Any) -> bool:
    """An idle connection is usable: not closed, and the server sent nothing since (a termination notice or EOF is
    the only thing an idle, non-LISTENing session can receive). A poll, not a round trip."""
    if c.closed or c.broken:
        return False
    try:
        readable, _, _ = select.select([c.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class _Pool:
    """A few psycopg connections to one database URL (dropped when the URL changes)."""

    def __init__(self, url: str, size: int = 8) -> None:
        self.url = url
        self.idle: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=size)
        self.shadow_lock = threading.Lock()
        self.shadow_ready = False

    @contextlib.contextmanager
    def conn(self) -> Any:
        import psycopg

        c = None
        while c is None:
            try:
                c = self.idle.get_nowait()
            except queue.Empty:
                c = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                break
            if not _alive(c):  # the server ended it while idle (restart, pg_terminate_backend): never hand it out
                with contextlib.suppress(Exception):
                    c.close()
                c = None
        ok = False
        try:
            yield c
            ok = True
        finally:
            if ok and not c.closed:
                try:
                    self.idle.put_nowait(c)
                except queue.Full:
                    c.close()
            else:
                with contextlib.suppress(Exception):
                    c.close()

    def shadow_write(self, c: Any, row: list[str]) -> None:
        """One row into the shadow table, which is created once per pool, not once per request: concurrent
        ``CREATE … IF NOT EXISTS`` race in PostgreSQL's catalog (a unique violation on the first requests)."""
        import psycopg

        insert = "INSERT INTO _bpmigrate.shadow_writes (write_id, kind, payload) VALUES (%s, %s, %s)"
        if not self.shadow_ready:
            self._create_shadow(c)
        try:
            c.execute(insert, row)
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):  # dropped since (target-cleanup)
            self._create_shadow(c)
            c.execute(insert, row)  # the failed insert wrote nothing: safe to repeat

    def _create_shadow(self, c: Any) -> None:
        import psycopg

        with self.shadow_lock:
            for sql in SHADOW_SQL:
                try:
                    c.execute(sql)
                except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject, psycopg.errors.DuplicateSchema, psycopg.errors.DuplicateTable):
                    pass  # another process (the other stand-in) created it at the same instant
            self.shadow_ready = True

    def close(self) -> None:
        while True:
            try:
                c = self.idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                c.close()


class App:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.cond = threading.Condition()
        self.inflight = 0
        self.maintenance = False
        self.generation = -1
        self.name = "app"
        self.database_url = ""
        self.redis_url = ""
        self.create_schema = False
        self.primary = True
        self.pool: _Pool | None = None
        self.redis: Any = None
        self._mtime = 0.0
        self.reload(force=True)

    # -- configuration -------------------------------------------------------------------------------------------
    def reload(self, force: bool = False) -> None:
        try:
            mtime = self.config_path.stat().st_mtime
        except OSError:
            return
        if not force and mtime == self._mtime:
            return
        try:
            cfg = json.loads(self.config_path.read_text())
        except (OSError, ValueError):
            return  # half-written: the next poll reads it
        self._mtime = mtime
        self.apply(cfg)

    def apply(self, cfg: dict[str, Any]) -> None:
        from migrate.adapters.redis import client_from_url

        with self.cond:
            self.name = str(cfg.get("name", self.name))
            self.create_schema = bool(cfg.get("create_schema", False))
            self.primary = bool(cfg.get("primary", True))
            want_maint = bool(cfg.get("maintenance", False))
            urls_change = (cfg.get("database_url"), cfg.get("redis_url")) != (self.database_url, self.redis_url)
            if want_maint or urls_change:
                self.maintenance = True  # no new write starts; wait for the ones in flight
                while self.inflight:
                    self.cond.wait(0.5)
            if urls_change:
                if self.pool is not None:
                    self.pool.close()
                self.database_url = str(cfg.get("database_url") or "")
                self.redis_url = str(cfg.get("redis_url") or "")
                self.pool = _Pool(self.database_url) if self.database_url else None
                self.redis = client_from_url(self.redis_url) if self.redis_url else None  # a cluster: by slot
                if self.create_schema and self.pool is not None:
                    with contextlib.suppress(Exception), self.pool.conn() as c:
                        for sql in SCHEMA_SQL:
                            c.execute(sql)
            self.maintenance = want_maint
            self.generation = int(cfg.get("generation", 0))
            self._write_status()

    def _write_status(self) -> None:
        status = {
            "generation": self.generation,
            "maintenance": self.maintenance,
            "primary": self.primary,
            "database": describe_url(self.database_url) if self.database_url else None,
            "pid": os.getpid(),
            "at": time.time(),
        }
        path = self.config_path.parent / STATUS_FILE
        tmp = path.with_name(f".{STATUS_FILE}.tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, path)

    def watch(self) -> None:
        while True:
            time.sleep(0.01)  # a stat() per 10 ms: the fence's acknowledgement comes within ~10 ms
            with contextlib.suppress(Exception):
                self.reload()

    def set(self, **values: Any) -> None:
        """HTTP control: persist to the config file (so a restart keeps it), then apply."""
        write_config(self.config_path, **values)
        self.reload(force=True)

    # -- requests ------------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "stack": self.name,
            "maintenance": self.maintenance,
            "generation": self.generation,
            "database": describe_url(self.database_url) if self.database_url else None,
        }

    def write(self, kind: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.cond:
            if self.maintenance or self.pool is None:
                return 503, {"error": "maintenance" if self.maintenance else "no database configured"}
            self.inflight += 1
            pool, rds, primary = self.pool, self.redis, self.primary
        try:
            write_id = str(body.get("id") or f"{self.name}-{time.time_ns()}")
            if not primary:
                with pool.conn() as c:
                    pool.shadow_write(c, [write_id, kind, json.dumps(body)])
                return 200, {"id": write_id, "seq": None, "stack": self.name, "shadow": True}
            with pool.conn() as c:
                row = c.execute(
                    "INSERT INTO app.write_log (write_id, kind, stack, payload) VALUES (%s, %s, %s, %s) RETURNING seq",
                    [write_id, kind, self.name, json.dumps(body)],
                ).fetchone()
            if rds is not None:
                pipe = rds.pipeline(transaction=False)
                pipe.set(f"bp:write:{write_id}", str(row[0]))
                pipe.incr("bp:writes")
                pipe.execute()
            return 200, {"id": write_id, "seq": int(row[0]), "stack": self.name}
        except Exception as exc:
            return 500, {"error": type(exc).__name__, "detail": str(exc)[:200]}
        finally:
            with self.cond:
                self.inflight -= 1
                self.cond.notify_all()

    def read(self, path: str) -> tuple[int, dict[str, Any]]:
        pool = self.pool
        if pool is None:
            return 503, {"error": "no database configured"}
        try:
            with pool.conn() as c:
                if path.startswith("/api/v1/writes/"):
                    wid = path.rsplit("/", 1)[1]
                    n = c.execute("SELECT count(*) FROM app.write_log WHERE write_id = %s", [wid]).fetchone()
                    return 200, {"id": wid, "rows": int(n[0]), "stack": self.name}
                rows = c.execute("SELECT seq, write_id FROM app.write_log ORDER BY seq DESC LIMIT 5").fetchall()
                return 200, {"recent": [[int(s), str(w)] for s, w in rows], "stack": self.name}
        except Exception as exc:
            return 500, {"error": type(exc).__name__, "detail": str(exc)[:200]}


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            n = int(self.headers.get("Content-Length") or 0)
            if not n:
                return {}
            try:
                value = json.loads(self.rfile.read(n))
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                self._send(200, app.health())
            elif path.startswith("/api/v1/"):
                self._send(*app.read(path))
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            body = self._body()
            if path in ("/api/v1/enhance", "/api/v1/classify"):
                self._send(*app.write(path.rsplit("/", 1)[1], body))
            elif path in ("/maintenance/on", "/maintenance/off"):
                app.set(maintenance=path.endswith("/on"))
                self._send(200, app.health())
            elif path == "/config":
                values = {k: str(body[k]) for k in ("database_url", "redis_url") if body.get(k)}
                app.set(**values)
                self._send(200, app.health())
            else:
                self._send(404, {"error": "not found"})

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrate.sandbox.app")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    app = App(args.config.resolve())
    threading.Thread(target=app.watch, daemon=True).start()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(app))
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
