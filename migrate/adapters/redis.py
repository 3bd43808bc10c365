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
    # a cluster that cannot be reached, has a slot uncovered or is failing over: also worth a retry
    cluster = (redis.exceptions.ClusterDownError, redis.exceptions.RedisClusterException)
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, *cluster)):
        return TransientError(
            f"{what} on Redis {endpoint} failed: {message}",
            "the server is unreachable, loading or timed out (a cluster: down, failing over or a slot not served)",
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
        tls_ca_file: str | None = None,
        cluster_mode: bool = False,
        dbs: Sequence[int] = (0, 1, 2),
    ) -> None:
        self.role = role
        self.host = host
        self.port = port
        self._password = password
        self.tls = tls
        self.tls_ca_file = tls_ca_file  # CA bundle to verify the server (None: the system's, as for ElastiCache)
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
            tls_ca_file=self.tls_ca_file,
            cluster_mode=self.cluster_mode,
            dbs=self.dbs,
        )

    # -- connections -------------------------------------------------------------------------------------------
    def _connect_kwargs(self) -> dict[str, Any]:
        """redis-py connection options (the ONE place: clients, cluster nodes, probes, the follower's pub/sub)."""
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "password": self._password,
            "ssl": self.tls,
            "socket_timeout": 60,
            "socket_connect_timeout": 10,
        }
        if self.tls and self.tls_ca_file:
            options["ssl_ca_certs"] = self.tls_ca_file
        return options

    def client(self, db: int = 0) -> Any:
        """A client for logical DB ``db``: a slot-routing ``RedisCluster`` when the server is a Redis Cluster."""
        if self.needs_address:
            raise ConfigError(
                f"Redis {self.role} host is {self.host!r}: the address comes from Terraform",
                "the step that provisions it (elasticache) has not recorded its endpoint output yet",
                "bpmigrate apply --step elasticache",
            )
        if db not in self._clients:
            import redis

            kwargs = self._connect_kwargs()
            if self.clustered:
                if db != 0:
                    raise ConfigError(
                        f"Redis {self.role} {self.endpoint} is a Redis Cluster: it has only DB 0 (asked for DB {db})",
                        "cluster mode has a single keyspace; source DBs are mapped to key prefixes in DB 0",
                        "set [steps.redis-migrate] db_prefix for every source DB (see `bpmigrate show redis-migrate`)",
                    )
                from redis.cluster import RedisCluster

                self._clients[db] = self.call(lambda: RedisCluster(**kwargs), "connect to the cluster")
            else:
                self._clients[db] = redis.Redis(db=db, **kwargs)
        return self._clients[db]

    @property
    def clustered(self) -> bool:
        """True when this server is a Redis Cluster (keys routed by slot over several primaries).

        ``cluster_mode = true`` against a single node (a cluster-mode-disabled rehearsal) keeps one plain client:
        DB n still maps to a prefix in DB 0, only the routing differs. A cluster configured ``cluster_mode = false``
        is refused (its DB numbers and counts would be wrong)."""
        real = self.is_real_cluster()
        if real and not self.cluster_mode:
            raise ConfigError(
                f"Redis {self.role} {self.endpoint} is a Redis Cluster but migrate.toml says cluster_mode = false",
                "a cluster has only DB 0 and spreads keys over several primaries: counts and DB numbers would be wrong",
                f"set cluster_mode = true under redis.{self.role} of this environment in migrate.toml",
            )
        return real

    def is_real_cluster(self) -> bool:
        """True when the server runs with cluster-enabled (needs slot routing); False for a single node."""
        if self._cluster_enabled is None:
            import redis

            probe = redis.Redis(**{**self._connect_kwargs(), "socket_timeout": 10})
            try:
                info = self.call(lambda: probe.info("cluster"), "INFO cluster")
                self._cluster_enabled = bool(info.get("cluster_enabled"))
            finally:
                probe.close()
        return self._cluster_enabled

    def topology(self) -> str:
        """"cluster (3 primaries)" or "single node" — what the server really is (for doctor and plans)."""
        if self.clustered:
            return f"cluster ({len(self._primaries())} primaries)"
        return "single node"

    def _primaries(self) -> list[Any]:
        """One plain client per cluster primary, ordered by address (stable: composite SCAN cursors index it)."""
        cluster = self.client(0)
        with self.translated("CLUSTER SLOTS"):
            nodes = sorted(cluster.get_primaries(), key=lambda n: (n.host, int(n.port)))
            return [cluster.get_redis_connection(n) for n in nodes]

    def node_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every primary of a cluster, else of the one server (pub/sub is per node)."""
        if not self.clustered:
            return [(self.host, self.port)]
        with self.translated("CLUSTER SLOTS"):
            nodes = self.client(0).get_primaries()
        return sorted((str(n.host), int(n.port)) for n in nodes)

    def _node_clients(self, db: int) -> list[Any]:
        """The clients holding DB ``db``'s keys: every primary of a cluster, else the one server."""
        return self._primaries() if self.clustered else [self.client(db)]

    def _groups(self, keys: Sequence[bytes]) -> list[list[int]]:
        """Indexes of ``keys`` grouped by hash slot (one group when not a cluster)."""
        if not self.clustered:
            return [list(range(len(keys)))]
        cluster = self.client(0)
        by_slot: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            by_slot.setdefault(int(cluster.keyslot(k)), []).append(i)
        return list(by_slot.values())

    def call(self, fn: Callable[[], T], what: str = "command") -> T:
        with self.translated(what):
            return fn()

    @contextmanager
    def translated(self, what: str) -> Iterator[None]:
        """redis-py errors (a cluster's too: RedisClusterException is not a RedisError) as our AdapterError."""
        import redis

        try:
            yield
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
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
        with self.translated("PING"):
            return all(bool(c.ping()) for c in self._node_clients(0))

    def unreachable_reason(self) -> str | None:
        if self.needs_address:
            return f"{self.role} address not known yet (comes from the elasticache step output)"
        try:
            self.ping()
        except AdapterError as exc:
            return exc.what
        return None

    def server_version(self) -> str:
        with self.translated("INFO server"):
            info = self._node_clients(0)[0].info("server")
        return str(info.get("redis_version", "?"))

    def config_get(self, name: str) -> str:
        """One server setting (CONFIG GET) — of the first primary on a cluster."""
        with self.translated(f"CONFIG GET {name}"):
            found = self._node_clients(0)[0].config_get(name)
        return str(found.get(name, ""))

    def config_set(self, name: str, value: str) -> None:
        """CONFIG SET on the server — on every primary of a cluster (settings such as notify-keyspace-events are
        per node)."""
        with self.translated(f"CONFIG SET {name}"):
            for client in self._node_clients(0):
                client.config_set(name, value)

    def dbsize(self, db: int) -> int:
        """Keys in DB ``db``: DBSIZE, summed over the primaries of a cluster."""
        with self.translated(f"DBSIZE (db {db})"):
            return sum(int(c.dbsize()) for c in self._node_clients(db))

    def keyspace(self) -> dict[int, int]:
        """{db: keys} from INFO keyspace (summed over a cluster's primaries)."""
        out: dict[int, int] = {}
        with self.translated("INFO keyspace"):
            infos = [c.info("keyspace") for c in self._node_clients(0)]
        for info in infos:
            for name, value in info.items():
                if str(name).startswith("db") and isinstance(value, dict):
                    db = int(str(name)[2:])
                    out[db] = out.get(db, 0) + int(value.get("keys", 0))
        return out

    def save_rdb(self, out: Path, *, timeout: float = 600.0) -> tuple[str, int]:
        """A point-in-time RDB of this (single, not cluster) server through the replication protocol (``SYNC``:
        works remotely, needs no access to the server's disk), written to ``out`` via ``out.part`` + rename.
        Returns (sha256, size). Additive helper for final-backup (issue 17)."""
        import hashlib
        import os
        import socket
        import ssl

        part = out.with_name(out.name + ".part")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            sock: Any = socket.create_connection((self.host, self.port), timeout=30)
            if self.tls:
                sock = ssl.create_default_context(cafile=self.tls_ca_file).wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(timeout)
            reader = sock.makefile("rb")
            if self._password:
                sock.sendall(b"AUTH " + self._password.encode() + b"\r\n")
                if not reader.readline().startswith(b"+OK"):
                    raise OSError("AUTH refused")
            sock.sendall(b"SYNC\r\n")
            line = reader.readline()
            while line in (b"\n", b"\r\n"):  # keep-alives while the server writes its snapshot
                line = reader.readline()
            if not line.startswith(b"$"):
                raise OSError(f"unexpected reply to SYNC: {line[:80]!r}")
            remaining = int(line[1:].strip())
            digest, size = hashlib.sha256(), 0
            with part.open("wb") as fh:
                while remaining:
                    block = reader.read(min(remaining, 1 << 20))
                    if not block:
                        raise OSError("connection closed in the middle of the RDB")
                    fh.write(block)
                    digest.update(block)
                    size += len(block)
                    remaining -= len(block)
            sock.close()
            os.replace(part, out)
        except (OSError, ValueError) as exc:
            part.unlink(missing_ok=True)
            raise AdapterError(
                f"RDB snapshot of Redis {self.endpoint} through SYNC failed: {redact(str(exc))}",
                "the server refused replication (ACL, protected mode, a managed service) or the connection broke",
                "check that the source Redis accepts SYNC from this host, then re-run the same command",
                service="redis",
            ) from None
        return digest.hexdigest(), size

    def scan(self, db: int, cursor: int, count: int = 1000, match: bytes | None = None) -> tuple[int, list[bytes]]:
        """One SCAN step. On a cluster the cursor is composite — ``(node cursor << 8) | primary index`` — so one
        resumable cursor walks every primary in turn; 0 still means "start" and "done"."""
        clients = self._node_clients(db)
        index, node_cursor = (cursor & 0xFF, cursor >> 8) if len(clients) > 1 else (0, cursor)
        if index >= len(clients):
            return 0, []
        kwargs: dict[str, Any] = {"cursor": node_cursor, "count": count}
        if match is not None:
            kwargs["match"] = match
        with self.translated(f"SCAN (db {db})"):
            next_cursor, keys = clients[index].scan(**kwargs)
        next_cursor = int(next_cursor)
        if len(clients) > 1:
            if next_cursor == 0:
                next_cursor = 0 if index + 1 >= len(clients) else index + 1
            else:
                next_cursor = (next_cursor << 8) | index
        return next_cursor, list(keys)

    def scan_all(self, db: int, count: int = 1000, match: bytes | None = None) -> Iterator[list[bytes]]:
        cursor = 0
        while True:
            cursor, keys = self.scan(db, cursor, count, match)
            if keys:
                yield keys
            if cursor == 0:
                return

    @staticmethod
    def glob(prefix: bytes) -> bytes:
        """The SCAN MATCH pattern of every key starting with ``prefix``."""
        return _glob_escape(prefix) + b"*"

    def count_matching(self, db: int, prefix: bytes) -> int:
        return sum(len(b) for b in self.scan_all(db, 1000, match=self.glob(prefix)))

    def random_keys(self, db: int, n: int) -> list[bytes]:
        """Up to n distinct keys drawn by RANDOMKEY (pipelined; on a cluster from every primary, in proportion
        to its size)."""
        clients = self._node_clients(db)
        with self.translated(f"RANDOMKEY (db {db})"):
            sizes = [int(c.dbsize()) for c in clients] if len(clients) > 1 else [n]
            total = sum(sizes) or 1
            found: set[bytes] = set()
            for client, size in zip(clients, sizes, strict=True):
                draws = n if len(clients) == 1 else min(size, max(1 if size else 0, round(n * size / total)))
                if not draws:
                    continue
                pipe = client.pipeline(transaction=False)
                for _ in range(draws):
                    pipe.randomkey()
                found.update(k for k in pipe.execute() if k is not None)
        return sorted(found)

    def _pipelined(self, db: int, what: str, keys: Sequence[bytes], queue: Callable[[Any, bytes], None]) -> list[Any]:
        """Queue ``queue(pipe, key)`` (one or more commands) for every key and run them pipelined; the replies come
        back flat, in key order. On a cluster the keys are grouped by the primary that owns their hash slot and each
        primary gets one plain pipeline (a third faster than redis-py's ClusterPipeline); when a slot moved meanwhile
        (MOVED/ASK: resharding) the batch is re-run through ClusterPipeline, which follows redirections — every
        command queued here is idempotent (reads, RESTORE ... REPLACE, UNLINK)."""
        if not keys:
            return []
        with self.translated(f"{what} (db {db})"):
            if not self.clustered:
                pipe = self.client(db).pipeline(transaction=False)
                for k in keys:
                    queue(pipe, k)
                return list(pipe.execute())
            replies = self._by_primary(keys, queue)
            if replies is None:
                pipe = self.client(0).pipeline(transaction=False)
                for k in keys:
                    queue(pipe, k)
                return list(pipe.execute())
            return replies

    def _by_primary(self, keys: Sequence[bytes], queue: Callable[[Any, bytes], None]) -> list[Any] | None:
        """One plain pipeline per primary; None when a reply says the slot moved."""
        import redis

        cluster = self.client(0)
        groups: dict[str, tuple[Any, list[int]]] = {}
        for i, k in enumerate(keys):
            node = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(k))
            groups.setdefault(node.name, (node, []))[1].append(i)
        per_key: list[list[Any]] = [[] for _ in keys]
        for node, indexes in groups.values():
            pipe = cluster.get_redis_connection(node).pipeline(transaction=False)
            counts = []
            for i in indexes:
                before = len(pipe.command_stack)
                queue(pipe, keys[i])
                counts.append(len(pipe.command_stack) - before)
            raw = pipe.execute(raise_on_error=False)
            for reply in raw:
                if isinstance(reply, (redis.exceptions.MovedError, redis.exceptions.AskError)):
                    cluster.nodes_manager.initialize()  # learn the new slot owners before the retry
                    return None
                if isinstance(reply, Exception):
                    raise reply
            at = 0
            for i, n in zip(indexes, counts, strict=True):
                per_key[i] = raw[at : at + n]
                at += n
        return [reply for replies in per_key for reply in replies]

    def pttl_many(self, db: int, keys: Sequence[bytes]) -> list[int]:
        return [int(x) for x in self._pipelined(db, "PTTL", keys, lambda p, k: p.pttl(k))]

    def exists_many(self, db: int, keys: Sequence[bytes]) -> list[bool]:
        return [bool(x) for x in self._pipelined(db, "EXISTS", keys, lambda p, k: p.exists(k))]

    def read_values(self, db: int, keys: Sequence[bytes]) -> list[tuple[str, Any]]:
        """(type, normalized value) per key, for comparisons independent of the RDB encoding."""
        raw_types = self._pipelined(db, "TYPE", keys, lambda p, k: p.type(k))
        types = [t.decode() if isinstance(t, bytes) else str(t) for t in raw_types]
        readers: dict[str, Callable[[Any, bytes], Any]] = {
            "string": lambda p, k: p.get(k),
            "hash": lambda p, k: p.hgetall(k),
            "list": lambda p, k: p.lrange(k, 0, -1),
            "set": lambda p, k: p.smembers(k),
            "zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
            "stream": lambda p, k: p.xrange(k),
            "none": lambda p, k: p.exists(k),
        }
        kind = dict(zip(keys, types, strict=True))

        def read(pipe: Any, key: bytes) -> None:
            reader = readers.get(kind[key])
            if reader is None:
                pipe.dump(key)  # a module type: compare the serialized value
            else:
                reader(pipe, key)

        raw = self._pipelined(db, "read", keys, read)
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
        """(key, DUMP payload or None when gone, PTTL) in one pipelined round trip (per primary on a cluster)."""

        def queue(pipe: Any, key: bytes) -> None:
            pipe.dump(key)
            pipe.pttl(key)

        raw = self._pipelined(db, "DUMP", keys, queue)
        return [(k, raw[2 * i], int(raw[2 * i + 1])) for i, k in enumerate(keys)]

    def restore_many(self, db: int, items: Sequence[tuple[bytes, bytes, int]]) -> int:
        """RESTORE key ttl payload REPLACE, pipelined (routed by slot on a cluster); ttl 0 = no expiry."""
        payloads = {key: (payload, ttl) for key, payload, ttl in items}
        self._pipelined(
            db,
            "RESTORE",
            [key for key, _payload, _ttl in items],
            lambda p, k: p.restore(k, payloads[k][1], payloads[k][0], replace=True),
        )
        return len(items)

    def delete_many(self, db: int, keys: Sequence[bytes]) -> int:
        """UNLINK ``keys``: one UNLINK per hash slot on a cluster (a multi-key command must stay in one slot)."""
        if not keys:
            return 0
        groups = [[keys[i] for i in group] for group in self._groups(keys)]
        if len(groups) == 1 and not self.clustered:
            return int(self.call(lambda: self.client(db).unlink(*keys), f"UNLINK (db {db})"))
        with self.translated(f"UNLINK (db {db})"):
            pipe = self.client(db).pipeline(transaction=False)
            for group in groups:
                pipe.execute_command("UNLINK", *group)
            return sum(int(n) for n in pipe.execute())


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


def client_from_url(url: str) -> Any:
    """A redis-py client for ``redis://host:port/db`` — a slot-routing ``RedisCluster`` when the server is a
    cluster node (an app on a cluster-mode ElastiCache must route by slot: a plain client gets MOVED errors)."""
    import redis

    plain = redis.Redis.from_url(url, socket_timeout=10)
    try:
        clustered = bool(plain.info("cluster").get("cluster_enabled"))
    except redis.RedisError:
        clustered = False  # unreachable now: a plain client reconnects later on its own
    if not clustered:
        return plain
    plain.close()
    from redis.cluster import RedisCluster

    return RedisCluster.from_url(url.rsplit("/", 1)[0] if url.count("/") > 2 else url, socket_timeout=10)


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
        tls_ca_file=endpoint.tls_ca_file,
        cluster_mode=endpoint.cluster_mode,
        dbs=endpoint.dbs,
    )
