"""Keep a target Redis current after the bulk copy: a follower process driven by the source's keyspace events.

The follower (``python -m migrate.adapters.redis_sync follow <workdir>``, started detached by the redis-sync step):

1. sets ``notify-keyspace-events`` on the source (the previous value is recorded and restored on rollback/switch);
2. PSUBSCRIBEs ``__keyevent@*__:*`` and SUBSCRIBEs the fence channel, a reader thread queueing every event
   (deduplicated by key, oldest timestamp kept);
3. reconciles once: every source key is copied again (DUMP/PTTL → RESTORE REPLACE) and every target key absent on
   the source is deleted — so nothing changed between redis-migrate and the subscription is missed;
4. then applies queued keys in batches: a key that exists on the source is copied with its current value and TTL; a
   key that no longer exists (deleted, expired, evicted, renamed away) is deleted on the target. Copying the
   *current* state makes replays and reordering harmless.

Lag = age of the oldest queued key not yet applied. A fence (``PUBLISH`` on the fence channel — not a data write)
is delivered in order with the keyspace events: the follower acknowledges it in its status file once every event
received before it has been applied. Pub/sub is fire-and-forget: when the subscription connection drops the
follower reconciles again before acknowledging anything.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migrate.adapters.redis import RedisAdapter
from migrate.adapters.redis_copy import DbRoute, route_for, target_owner
from migrate.errors import AdapterError, StepFailed

FENCE_CHANNEL = "__bpmigrate:fence"
STATUS = "status.json"
SPEC = "spec.json"
PIDFILE = "follower.pid"
LOG = "follower.log"
_PW_SOURCE = "BPM_REDIS_SYNC_SOURCE_PASSWORD"
_PW_TARGET = "BPM_REDIS_SYNC_TARGET_PASSWORD"


@dataclass
class FollowerSpec:
    """Everything the follower needs except passwords (given through its environment, never written to disk)."""

    source: dict[str, Any]
    target: dict[str, Any]
    routes: list[dict[str, Any]]
    notify_flags: str = "KEA"
    notify_previous: str | None = None
    batch: int = 500
    status_interval_s: float = 0.2
    passwords: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        source: RedisAdapter,
        target: RedisAdapter,
        routes: Sequence[DbRoute],
        *,
        notify_flags: str = "KEA",
        notify_previous: str | None = None,
    ) -> FollowerSpec:
        passwords = {}
        if source._password:  # same adapter package
            passwords[_PW_SOURCE] = source._password
        if target._password:
            passwords[_PW_TARGET] = target._password
        return cls(
            source={
                "host": source.host,
                "port": source.port,
                "tls": source.tls,
                "tls_ca_file": source.tls_ca_file,
                "dbs": list(source.dbs),
                "cluster_mode": source.cluster_mode,
            },
            target={
                "host": target.host,
                "port": target.port,
                "tls": target.tls,
                "tls_ca_file": target.tls_ca_file,
                "cluster_mode": target.cluster_mode,
            },
            routes=[
                {
                    "source_db": r.source_db,
                    "target_db": r.target_db,
                    "prefix": r.prefix.hex(),
                    "source_prefix": r.source_prefix.hex(),
                }
                for r in routes
            ],
            notify_flags=notify_flags,
            notify_previous=notify_previous,
            passwords=passwords,
        )

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("passwords")
        return json.dumps(data, indent=2)


# -- control side (used by the steps) -----------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def _is_follower(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"migrate.adapters.redis_sync" in part for part in cmdline) and b"follow" in cmdline


def follower_pid(workdir: Path) -> int | None:
    try:
        pid = int((workdir / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_follower(pid) else None


def follower_status(workdir: Path) -> dict[str, Any]:
    status = _read_json(workdir / STATUS)
    pid = follower_pid(workdir)
    status["alive"] = pid is not None
    if pid is not None:
        status["pid"] = pid
    return status


def recorded_previous(workdir: Path) -> str | None:
    """notify-keyspace-events as it was before any follower of this workdir changed it (from the last spec)."""
    value = _read_json(workdir / SPEC).get("notify_previous")
    return None if value is None else str(value)


def forget(workdir: Path) -> None:
    """After the setting was restored: the next follower records the then-current value afresh."""
    for name in (SPEC, STATUS):
        (workdir / name).unlink(missing_ok=True)


def start_follower(workdir: Path, spec: FollowerSpec) -> int:
    """Start the follower detached (own session); returns its pid. A live follower is left alone."""
    workdir.mkdir(parents=True, exist_ok=True)
    existing = follower_pid(workdir)
    if existing is not None:
        return existing
    (workdir / SPEC).write_text(spec.to_json())
    (workdir / STATUS).unlink(missing_ok=True)
    env = {**os.environ, **spec.passwords}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    from migrate.adapters.proc import spawn

    with (workdir / LOG).open("ab") as log:
        # meant to outlive the run (until data-switch): no parent-death signal; it carries the run marker, and the
        # step registers it in the ledger (ctx.register_child) so the next run adopts it instead of stopping it
        proc = spawn(
            [sys.executable, "-m", "migrate.adapters.redis_sync", "follow", str(workdir)],
            stdout=log,
            stderr=log,
            env=env,
            inherit_env=False,
            cwd=root,
            pdeathsig=None,
            service="redis-sync",
        )
    (workdir / PIDFILE).write_text(str(proc.pid))
    return proc.pid


def _log_tail(workdir: Path, n: int = 1500) -> str:
    try:
        return (workdir / LOG).read_text(errors="replace")[-n:]
    except OSError:
        return ""


def wait_ready(workdir: Path, timeout: float) -> dict[str, Any]:
    """Wait (bounded) until the follower finished its reconcile pass and streams events."""
    deadline = time.monotonic() + timeout
    while True:
        status = follower_status(workdir)
        if status.get("ready") and status.get("alive"):
            return status
        if not status.get("alive") and time.monotonic() > deadline - timeout + 2.0:
            raise StepFailed(
                "the Redis sync follower exited before it was ready",
                _log_tail(workdir) or "no log output",
                f"read {workdir / LOG}, fix the cause and re-run: bpmigrate apply --step redis-sync",
            )
        if time.monotonic() >= deadline:
            raise StepFailed(
                f"the Redis sync follower was not ready after {timeout:g}s (reconcile pass still running?)",
                f"status: {status}",
                "raise [steps.redis-sync] ready_timeout_s, or re-run: bpmigrate apply --step redis-sync",
            )
        time.sleep(0.1)


def fence_follower(source: RedisAdapter, workdir: Path, timeout: float) -> dict[str, Any]:
    """PUBLISH a fence token on the source; wait until the follower applied everything received before it."""
    status = follower_status(workdir)
    if not status.get("alive"):
        raise StepFailed(
            "the Redis sync follower is not running: target Redis changes since it stopped are missing",
            f"last status: {status}",
            "bpmigrate apply --step redis-sync (it reconciles and restarts), then re-run data-switch",
        )
    token = uuid.uuid4().hex
    started = time.monotonic()
    deadline = started + timeout
    receivers = int(source.call(lambda: source.client(0).publish(FENCE_CHANNEL, token), "PUBLISH fence"))
    if receivers < 1:
        raise StepFailed("the Redis sync follower is not subscribed to the fence channel", f"status: {status}", "")
    while True:
        status = follower_status(workdir)
        if status.get("fence") == token:
            return {"token": token, "waited_s": round(time.monotonic() - started, 3), "applied": status.get("applied")}
        if not status.get("alive") or time.monotonic() >= deadline:
            raise StepFailed(
                f"the Redis sync follower did not reach the fence within {timeout:g}s",
                f"status: {status}",
                "check `bpmigrate verify --step redis-sync`; re-run data-switch",
            )
        time.sleep(0.02)


def stop_follower(workdir: Path, timeout: float = 15.0) -> bool:
    """SIGTERM the follower (SIGKILL after ``timeout``); False when none was running."""
    pid = follower_pid(workdir)
    if pid is None:
        (workdir / PIDFILE).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_follower(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if _is_follower(pid):
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
    (workdir / PIDFILE).unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def restore_notify(source: RedisAdapter, value: str) -> None:
    source.config_set("notify-keyspace-events", value)


# -- the follower process -------------------------------------------------------------------------------------------
class Follower:
    def __init__(self, workdir: Path, spec: dict[str, Any]) -> None:
        s, t = spec["source"], spec["target"]
        self.workdir = workdir
        self.spec = spec
        self.source = RedisAdapter(
            role="source",
            host=s["host"],
            port=int(s["port"]),
            password=os.environ.get(_PW_SOURCE),
            tls=bool(s.get("tls")),
            tls_ca_file=s.get("tls_ca_file"),
            dbs=s.get("dbs", [0, 1, 2]),
            cluster_mode=bool(s.get("cluster_mode")),
        )
        self.target = RedisAdapter(
            role="target",
            host=t["host"],
            port=int(t["port"]),
            password=os.environ.get(_PW_TARGET),
            tls=bool(t.get("tls")),
            tls_ca_file=t.get("tls_ca_file"),
            cluster_mode=bool(t.get("cluster_mode")),
        )
        self.routes = [
            DbRoute(
                int(r["source_db"]),
                int(r["target_db"]),
                bytes.fromhex(r["prefix"]),
                bytes.fromhex(r.get("source_prefix", "")),
            )
            for r in spec["routes"]
        ]
        self.source_dbs = sorted({r.source_db for r in self.routes})
        self.batch = int(spec.get("batch", 500))
        self.lock = threading.Lock()
        self.pending: dict[tuple[int, bytes], float] = {}
        self.recv_seq = 0
        self.applied_seq = 0
        self.fences: list[tuple[int, str]] = []
        self.fence_done: str | None = None
        self.applied = 0
        self.reconciled = 0
        self.ready = False
        self.need_reconcile = True
        self.stop = threading.Event()
        self.error: str | None = None
        self.subscribed = threading.Event()  # every node's subscription is confirmed
        self.nodes: list[tuple[str, int]] = []  # the source's nodes (a cluster's primaries): pub/sub is per node
        self.node_up: dict[int, bool] = {}
        self.fence_seen: dict[str, set[int]] = {}
        self.down_since: float | None = None
        self.max_down_s = float(spec.get("max_disconnected_s", 600))

    # status --------------------------------------------------------------------------------------------------------
    def write_status(self) -> None:
        with self.lock:
            oldest = min(self.pending.values(), default=None)
            pending = len(self.pending)
        lag_ms = 0.0 if oldest is None else (time.monotonic() - oldest) * 1000
        _write_json(
            self.workdir / STATUS,
            {
                "pid": os.getpid(),
                "ready": self.ready,
                "reconciled_keys": self.reconciled,
                "applied": self.applied,
                "pending": pending,
                "lag_ms": round(lag_ms, 1),
                "fence": self.fence_done,
                "notify_previous": self.spec.get("notify_previous"),
                "heartbeat": time.time(),
                "error": self.error,
            },
        )

    # events ----------------------------------------------------------------------------------------------------------
    def _node_state(self, index: int, up: bool) -> None:
        with self.lock:
            self.node_up[index] = up
            if not up:
                self.need_reconcile = True
            everyone = len(self.node_up) == len(self.nodes) and all(self.node_up.values())
        if everyone:
            self.subscribed.set()
            self.down_since = None
        else:
            self.subscribed.clear()
            if not up and self.down_since is None:
                self.down_since = time.monotonic()

    def reader(self, index: int) -> None:
        """Subscribe to one source node's keyspace events and the fence channel (a cluster: one reader per
        primary, since keyspace notifications are published only on the node that holds the key)."""
        import redis

        host, port = self.nodes[index]
        while not self.stop.is_set():
            options = self.source._connect_kwargs()  # same adapter package: TLS/AUTH options in one place
            client = redis.Redis(**{**options, "host": host, "port": port, "socket_timeout": None})
            pubsub = client.pubsub()
            try:
                pubsub.psubscribe(*(f"__keyevent@{db}__:*" for db in self.source_dbs))
                pubsub.subscribe(FENCE_CHANNEL)
                confirmations = 0
                while not self.stop.is_set():
                    msg = pubsub.get_message(timeout=0.2)
                    if msg is None:
                        continue
                    kind = msg.get("type")
                    if kind in ("subscribe", "psubscribe"):
                        confirmations += 1
                        if confirmations >= len(self.source_dbs) + 1:
                            self._node_state(index, True)
                        continue
                    if kind == "pmessage":
                        channel = msg["channel"]
                        # b"__keyevent@<db>__:<event>"
                        db = int(channel.split(b"@", 1)[1].split(b"__", 1)[0])
                        with self.lock:
                            self.recv_seq += 1
                            self.pending.setdefault((db, bytes(msg["data"])), time.monotonic())
                    elif kind == "message" and msg["channel"] == FENCE_CHANNEL.encode():
                        token = msg["data"].decode()
                        with self.lock:
                            self.recv_seq += 1
                            seen = self.fence_seen.setdefault(token, set())
                            seen.add(index)
                            if len(seen) == len(self.nodes):  # every node's earlier events are queued
                                self.fences.append((self.recv_seq, token))
                                del self.fence_seen[token]
            except redis.RedisError as exc:
                self.error = f"subscription to {host}:{port} lost: {exc}"
                self._node_state(index, False)
                time.sleep(0.5)
            finally:
                try:
                    pubsub.close()
                    client.close()
                except Exception:  # noqa: BLE001
                    pass

    def apply_keys(self, db: int, keys: Sequence[bytes]) -> None:
        """Copy each key's current value and TTL to where its route maps it, or delete it there when it is gone."""
        items: dict[int, list[tuple[bytes, bytes, int]]] = {}
        gone: dict[int, list[bytes]] = {}
        for key, payload, pttl in self.source.dump_many(db, keys):
            route = route_for(self.routes, db, key)
            if route is None:
                continue  # a DB or prefix this follower does not carry
            if payload is None or pttl == -2:
                gone.setdefault(route.target_db, []).append(route.target_key(key))
            else:
                ttl = max(1, pttl) if pttl >= 0 else 0
                items.setdefault(route.target_db, []).append((route.target_key(key), payload, ttl))
        for target_db, restores in items.items():
            self.target.restore_many(target_db, restores)
        for target_db, deletes in gone.items():
            self.target.delete_many(target_db, deletes)

    def reconcile(self) -> None:
        count = 0
        for db in self.source_dbs:
            for keys in self.source.scan_all(db, 1000):
                self.apply_keys(db, keys)
                count += len(keys)
                if self.stop.is_set():
                    return
        for route in self.routes:  # target keys of this route whose source key is gone: deleted
            match = self.target.glob(route.prefix) if route.prefix else None
            for tkeys in self.target.scan_all(route.target_db, 1000, match=match):
                mine = [k for k in tkeys if target_owner(self.routes, route.target_db, k) is route]
                skeys = [route.source_key(k) for k in mine]
                present = self.source.exists_many(route.source_db, skeys)
                self.target.delete_many(route.target_db, [t for t, p in zip(mine, present, strict=True) if not p])
        self.reconciled = count

    def drain_once(self) -> bool:
        with self.lock:
            batch = self.pending
            self.pending = {}
            seq = self.recv_seq
        if batch:
            by_db: dict[int, list[bytes]] = {}
            for db, key in batch:
                by_db.setdefault(db, []).append(key)
            for db, keys in by_db.items():
                for i in range(0, len(keys), self.batch):
                    self.apply_keys(db, keys[i : i + self.batch])
            self.applied += len(batch)
        self.applied_seq = seq
        with self.lock:
            while self.fences and self.fences[0][0] <= self.applied_seq and not self.need_reconcile:
                self.fence_done = self.fences.pop(0)[1]
        return bool(batch)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        flags = str(self.spec.get("notify_flags") or "KEA")
        self.source.config_set("notify-keyspace-events", flags)
        self.nodes = self.source.node_addresses()
        for index in range(len(self.nodes)):
            threading.Thread(target=self.reader, args=(index,), name=f"redis-sync-reader-{index}", daemon=True).start()
        if not self.subscribed.wait(30):
            raise AdapterError("the follower could not subscribe to the source's keyspace events", self.error or "")
        last_status = 0.0
        interval = float(self.spec.get("status_interval_s", 0.2))
        while not self.stop.is_set():
            if not self.workdir.is_dir():
                break  # the state directory was removed: nobody can read or stop us any more
            if self.down_since is not None and time.monotonic() - self.down_since > self.max_down_s:
                self.error = f"source unreachable for more than {self.max_down_s:g}s: follower exits"
                break
            if self.need_reconcile and self.subscribed.is_set():
                with self.lock:
                    self.need_reconcile = False
                self.reconcile()
                self.ready = True
                self.write_status()
            worked = self.drain_once()
            now = time.monotonic()
            if now - last_status >= interval or self.fence_done:
                self.write_status()
                last_status = now
            if not worked:
                time.sleep(0.01)
        if self.workdir.is_dir():
            if self.subscribed.is_set():
                self.drain_once()
            self.write_status()


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "follow":
        print("usage: python -m migrate.adapters.redis_sync follow <workdir>", file=sys.stderr)
        return 2
    workdir = Path(argv[1])
    spec = _read_json(workdir / SPEC)
    follower = Follower(workdir, spec)
    try:
        follower.run()
    except Exception as exc:  # noqa: BLE001 - reported in the status file and the log
        follower.error = f"{type(exc).__name__}: {exc}"
        follower.write_status()
        print(follower.error, file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
