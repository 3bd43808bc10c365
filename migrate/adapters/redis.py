"""Redis through redis-py: connections per logical DB, SCAN, MIGRATE, DUMP/PTTL/RESTORE, normalized reads.

redis-py errors are translated here into ``AdapterError`` / ``TransientError`` with secrets redacted. Keys and
values are bytes throughout (binary-safe). The copy loop lives in :mod:`migrate.adapters.redis_copy`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from migrate.errors import AdapterError, ConfigError, TransientError
from migrate.redact import redact

if TYPE_CHECKING:
    from migrate.config import EnvConfig, RedisEndpoint

T = TypeVar("T")


def _translate(exc: BaseException, what: str, endpoint: str) -> AdapterError:
    import redis

    message = redact(str(exc).strip() or type(exc).__name__)
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)):
        return TransientError(
            f"{what} on Redis {endpoint} failed: {message}",
            "the server is unreachable, loading or timed out",
            "check the server (`bpmigrate sandbox status` in the sandbox) and re-run the same command (it resumes)",
            service="redis",
        )
    return AdapterError(
        f"{what} on Redis {endpoint} failed: {message}",
        f"{type(exc).__name__} from the server",
        "fix the cause shown above and re-run the same bpmigrate command",
        service="redis",
    )


class RedisAdapter:
    def __init__(
        self,
        *,
        role: str,
        host: str,
        port: int,
        password: str | None = None,
        tls: bool = False,
        cluster_mode: bool = False,
        dbs: Sequence[int] = (0, 1, 2),
    ) -> None:
        self.role = role
        self.host = host
        self.port = port
        self._password = password
        self.tls = tls
        self.cluster_mode = cluster_mode
        self.dbs = list(dbs)
        self._clients: dict[int, Any] = {}
        self._cluster_enabled: bool | None = None
        self._script_sha: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def has_password(self) -> bool:
        return bool(self._password)

    def auth_for_migrate(self) -> str | None:
        """The password the SOURCE server must send (MIGRATE ... AUTH) to write into this server (never logged)."""
        return self._password

    @property
    def needs_address(self) -> bool:
        return self.host in ("", "from-terraform")

    def with_address(self, host: str, port: int | None = None) -> RedisAdapter:
        return RedisAdapter(
            role=self.role,
            host=host,
            port=int(port or self.port),
            password=self._password,
            tls=self.tls,
            cluster_mode=self.cluster_mode,
            dbs=self.dbs,
        )

    # -- connections -------------------------------------------------------------------------------------------
    def client(self, db: int = 0) -> Any:
        if self.needs_address:
            raise ConfigError(
                f"Redis {self.role} host is {self.host!r}: the address comes from Terraform",
                "the step that provisions it (elasticache) has not recorded its endpoint output yet",
                "bpmigrate apply --step elasticache",
            )
        if db not in self._clients:
            import redis

            kwargs: dict[str, Any] = {
                "host": self.host,
                "port": self.port,
                "password": self._password,
                "ssl": self.tls,
                "socket_timeout": 60,
                "socket_connect_timeout": 10,
            }
            if self.cluster_mode and db == 0 and self.is_real_cluster():
                from redis.cluster import RedisCluster

                kwargs.pop("socket_connect_timeout")
                self._clients[db] = RedisCluster(**kwargs)
            else:
                self._clients[db] = redis.Redis(db=db, **kwargs)
        return self._clients[db]

    def is_real_cluster(self) -> bool:
        """True when the server runs with cluster-enabled (needs slot routing); False for a single node."""
        if self._cluster_enabled is None:
            import redis

            probe = redis.Redis(
                host=self.host, port=self.port, password=self._password, ssl=self.tls, socket_timeout=10
            )
            try:
                info = self.call(lambda: probe.info("cluster"), "INFO cluster")
                self._cluster_enabled = bool(info.get("cluster_enabled"))
            finally:
                probe.close()
        return self._cluster_enabled

    def call(self, fn: Callable[[], T], what: str = "command") -> T:
        import redis

        try:
            return fn()
        except redis.RedisError as exc:
            raise _translate(exc, what, self.endpoint) from None

    @contextmanager
    def translated(self, what: str) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.RedisError as exc:
            raise _translate(exc, what, self.endpoint) from None

    def close(self) -> None:
        for client in self._clients.values():
            try:
                client.close()
            except Exception:
                pass
        self._clients.clear()

    # -- reads -------------------------------------------------------------------------------------------------
    def ping(self) -> bool:
        return bool(self.call(lambda: self.client(0).ping(), "PING"))

    def unreachable_reason(self) -> str | None:
        if self.needs_address:
            return f"{self.role} address not known yet (comes from the elasticache step output)"
        try:
            self.ping()
        except AdapterError as exc:
            return exc.what
        return None

    def server_version(self) -> str:
        info = self.call(lambda: self.client(0).info("server"), "INFO server")
        return str(info.get("redis_version", "?"))

    def dbsize(self, db: int) -> int:
        return int(self.call(lambda: self.client(db).dbsize(), f"DBSIZE (db {db})"))

    def keyspace(self) -> dict[int, int]:
        info = self.call(lambda: self.client(0).info("keyspace"), "INFO keyspace")
        out: dict[int, int] = {}
        for name, value in info.items():
            if str(name).startswith("db") and isinstance(value, dict):
                out[int(str(name)[2:])] = int(value.get("keys", 0))
        return out

    def scan(self, db: int, cursor: int, count: int = 1000, match: bytes | None = None) -> tuple[int, list[bytes]]:
        client = self.client(db)
        with self.translated(f"SCAN (db {db})"):
            if match is not None:
                next_cursor, keys = client.scan(cursor=cursor, count=count, match=match)
            else:
                next_cursor, keys = client.scan(cursor=cursor, count=count)
        return int(next_cursor), list(keys)

    def scan_all(self, db: int, count: int = 1000, match: bytes | None = None) -> Iterator[list[bytes]]:
        cursor = 0
        while True:
            cursor, keys = self.scan(db, cursor, count, match)
            if keys:
                yield keys
            if cursor == 0:
                return

    def count_matching(self, db: int, prefix: bytes) -> int:
        return sum(len(b) for b in self.scan_all(db, 1000, match=_glob_escape(prefix) + b"*"))

    def random_keys(self, db: int, n: int) -> list[bytes]:
        """Up to n distinct keys drawn by RANDOMKEY (pipelined)."""
        with self.translated(f"RANDOMKEY (db {db})"):
            pipe = self.client(db).pipeline(transaction=False)
            for _ in range(n):
                pipe.randomkey()
            return sorted({k for k in pipe.execute() if k is not None})

    def pttl_many(self, db: int, keys: Sequence[bytes]) -> list[int]:
        with self.translated(f"PTTL (db {db})"):
            pipe = self.client(db).pipeline(transaction=False)
            for k in keys:
                pipe.pttl(k)
            return [int(x) for x in pipe.execute()]

    def exists_many(self, db: int, keys: Sequence[bytes]) -> list[bool]:
        with self.translated(f"EXISTS (db {db})"):
            pipe = self.client(db).pipeline(transaction=False)
            for k in keys:
                pipe.exists(k)
            return [bool(x) for x in pipe.execute()]

    def read_values(self, db: int, keys: Sequence[bytes]) -> list[tuple[str, Any]]:
        """(type, normalized value) per key, for comparisons independent of the RDB encoding."""
        client = self.client(db)
        with self.translated(f"TYPE (db {db})"):
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.type(k)
            types = [t.decode() if isinstance(t, bytes) else str(t) for t in pipe.execute()]
            pipe = client.pipeline(transaction=False)
            for k, t in zip(keys, types, strict=True):
                if t == "string":
                    pipe.get(k)
                elif t == "hash":
                    pipe.hgetall(k)
                elif t == "list":
                    pipe.lrange(k, 0, -1)
                elif t == "set":
                    pipe.smembers(k)
                elif t == "zset":
                    pipe.zrange(k, 0, -1, withscores=True)
                elif t == "stream":
                    pipe.xrange(k)
                elif t == "none":
                    pipe.exists(k)
                else:
                    pipe.dump(k)
            raw = pipe.execute()
        out: list[tuple[str, Any]] = []
        for t, v in zip(types, raw, strict=True):
            if t == "hash":
                v = sorted(v.items())
            elif t == "set":
                v = sorted(v)
            elif t == "none":
                v = None
            out.append((t, v))
        return out

    # -- writes (target only; steps never call these on the source) -----------------------------------------------
    def migrate_keys(
        self,
        db: int,
        keys: Sequence[bytes],
        *,
        host: str,
        port: int,
        dest_db: int,
        timeout_ms: int,
        password: str | None,
    ) -> str:
        """``MIGRATE host port "" dest_db timeout COPY REPLACE [AUTH pw] KEYS ...`` run ON THIS (source) server.

        COPY keeps the keys on this server: nothing is written here.
        """
        args: list[Any] = ["MIGRATE", host, port, "", dest_db, timeout_ms, "COPY", "REPLACE"]
        if password:
            args += ["AUTH", password]
        args += ["KEYS", *keys]
        result = self.call(
            lambda: self.client(db).execute_command(*args), f"MIGRATE (db {db} -> {host}:{port}/{dest_db})"
        )
        return result.decode() if isinstance(result, bytes) else str(result)

    def migrate_then_scan(
        self,
        db: int,
        keys: Sequence[bytes],
        *,
        host: str,
        port: int,
        dest_db: int,
        timeout_ms: int,
        password: str | None,
        cursor: int,
        count: int,
    ) -> tuple[int, list[bytes]]:
        """MIGRATE ``keys`` and SCAN from ``cursor`` in ONE round trip (pipelined); returns the SCAN result.

        A failed MIGRATE raises (translated) even though the SCAN in the same pipeline succeeded.
        """
        args: list[Any] = ["MIGRATE", host, port, "", dest_db, timeout_ms, "COPY", "REPLACE"]
        if password:
            args += ["AUTH", password]
        args += ["KEYS", *keys]
        with self.translated(f"MIGRATE (db {db} -> {host}:{port}/{dest_db})"):
            pipe = self.client(db).pipeline(transaction=False)
            pipe.execute_command(*args)
            pipe.scan(cursor=cursor, count=count)
            migrated, scanned = pipe.execute(raise_on_error=False)
            if isinstance(migrated, Exception):
                raise migrated
            if isinstance(scanned, Exception):
                raise scanned
        next_cursor, found = scanned
        return int(next_cursor), list(found)

    def migrate_scan_server_side(
        self,
        db: int,
        cursor: int,
        count: int,
        *,
        host: str,
        port: int,
        dest_db: int,
        timeout_ms: int,
        password: str | None,
    ) -> tuple[int, int]:
        """One SCAN batch MIGRATEd (COPY REPLACE) by a Lua script ON THIS (source) server: the keys never cross
        into bpmigrate (no reply parsing per key). Returns (next cursor, keys in the batch).

        Reads only: MIGRATE ... COPY leaves the source keys untouched; the script is cached by SHA (SCRIPT LOAD),
        which is server memory, not data.
        """
        client = self.client(db)
        args: list[Any] = [cursor, min(max(1, count), 5000), host, port, dest_db, timeout_ms]
        if password:
            args.append(password)
        with self.translated(f"MIGRATE script (db {db} -> {host}:{port}/{dest_db})"):
            if self._script_sha is None:
                self._script_sha = str(client.script_load(_MIGRATE_LUA))
            try:
                next_cursor, n = client.evalsha(self._script_sha, 0, *args)
            except Exception as exc:
                if "NOSCRIPT" not in str(exc):
                    raise
                self._script_sha = str(client.script_load(_MIGRATE_LUA))
                next_cursor, n = client.evalsha(self._script_sha, 0, *args)
        return int(next_cursor), int(n)

    def dump_many(self, db: int, keys: Sequence[bytes]) -> list[tuple[bytes, bytes | None, int]]:
        """(key, DUMP payload or None when gone, PTTL) in one pipelined round trip."""
        with self.translated(f"DUMP (db {db})"):
            pipe = self.client(db).pipeline(transaction=False)
            for k in keys:
                pipe.dump(k)
                pipe.pttl(k)
            raw = pipe.execute()
        return [(k, raw[2 * i], int(raw[2 * i + 1])) for i, k in enumerate(keys)]

    def restore_many(self, db: int, items: Sequence[tuple[bytes, bytes, int]]) -> int:
        """RESTORE key ttl payload REPLACE, pipelined; ttl 0 = no expiry. Returns the number restored."""
        if not items:
            return 0
        with self.translated(f"RESTORE (db {db})"):
            pipe = self.client(db).pipeline(transaction=False)
            for key, payload, ttl in items:
                pipe.restore(key, ttl, payload, replace=True)
            pipe.execute()
        return len(items)

    def delete_many(self, db: int, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        return int(self.call(lambda: self.client(db).unlink(*keys), f"UNLINK (db {db})"))


# SCAN one batch and MIGRATE it COPY REPLACE to ARGV[3]:ARGV[4] db ARGV[5] (AUTH ARGV[7] when given)
_MIGRATE_LUA = """
local r = redis.call('SCAN', ARGV[1], 'COUNT', ARGV[2])
local keys = r[2]
if #keys > 0 then
  if ARGV[7] then
    redis.call('MIGRATE', ARGV[3], ARGV[4], '', ARGV[5], ARGV[6], 'COPY', 'REPLACE', 'AUTH', ARGV[7], 'KEYS', unpack(keys))
  else
    redis.call('MIGRATE', ARGV[3], ARGV[4], '', ARGV[5], ARGV[6], 'COPY', 'REPLACE', 'KEYS', unpack(keys))
  end
end
return {r[1], #keys}
"""


def _glob_escape(prefix: bytes) -> bytes:
    out = bytearray()
    for ch in prefix:
        if ch in b"*?[]\\":
            out += b"\\"
        out.append(ch)
    return bytes(out)


def from_config(env: EnvConfig, *, project_root: Path, state_dir: Path, role: str = "source") -> RedisAdapter:
    from migrate.adapters.secrets import resolve

    endpoint: RedisEndpoint | None = env.redis.get(role)  # type: ignore[call-overload]
    if endpoint is None:
        raise ConfigError(
            f"environment {env.name} has no redis.{role} endpoint",
            "the data phase needs both redis.source and redis.target",
            f"add [environments.{env.name}.redis.{role}] to migrate.toml (sandbox: `bpmigrate sandbox up`)",
        )
    aws = None
    if endpoint.password_secret:
        from migrate.adapters.aws import from_config as aws_from_config

        aws = aws_from_config(env, project_root=project_root, state_dir=state_dir)
    password = resolve(env_var=endpoint.password_env, secret_ref=endpoint.password_secret, aws=aws)
    return RedisAdapter(
        role=role,
        host=endpoint.host,
        port=endpoint.port,
        password=password,
        tls=endpoint.tls,
        cluster_mode=endpoint.cluster_mode,
        dbs=endpoint.dbs,
    )
