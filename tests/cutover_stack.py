"""A whole cutover rehearsal stack for tests and the bench: source/target PostgreSQL + Redis, the two stand-in app
processes (old on the source, new on the target), the DNS router over moto's Route53, and a logging writer that
drives a steady write+read mix through the router and keeps every acknowledged write id.

Used by ``tests/test_cutover_*.py`` and ``bench/bench_cutover.py``."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters import localservers as ls
from migrate.adapters.postgres import PostgresAdapter
from migrate.config import AwsSettings, EnvConfig, PgEndpoint, RedisEndpoint
from migrate.sandbox import standins

DOMAIN = "betterprompts.test"


@dataclass
class Stack:
    root: Path
    env: EnvConfig
    src: PostgresAdapter
    dst: PostgresAdapter
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def router_url(self) -> str:
        return standins.url(self.ports["router"])

    def url(self, name: str) -> str:
        return standins.url(self.ports[name])

    def config_file(self, name: str) -> Path:
        return self.root / name / "config.json"

    def fences(self) -> list[dict[str, Any]]:
        return [
            {"name": "old", "kind": "process", "config_file": str(self.config_file("app-old")), "timeout_s": 30},
            {"name": "new", "kind": "process", "config_file": str(self.config_file("app-new")), "timeout_s": 30},
        ]

    def dns_settings(self, **over: Any) -> dict[str, Any]:
        n = standins.names(DOMAIN)
        base: dict[str, Any] = {
            "record_name": n["record"],
            "old_target": n["old"],
            "new_target": n["new"],
            "direct_urls": [f"{self.url('app-new')}/health"],
            "record_urls": [f"{self.router_url}/health"],
            "sample_with": "http",
            "min_sample": 50,
            "stages": [10, 50, 100],
            "soak_s": 1.0,
            "probe_interval_s": 0.5,
            "low_ttl": 1,
            "insync_poll_s": 0.1,
            "create_zone": True,
            "max_p95_ms": 2000,
        }
        return base | over

    def stop(self) -> None:
        for pid in self.pids.values():
            ls.stop_pid(pid, 10.0)


def start_stack(
    root: Path, src: PostgresAdapter, dst: PostgresAdapter, redis_src: Any, redis_dst: Any, moto_url: str
) -> Stack:
    root.mkdir(parents=True, exist_ok=True)
    ports = {"moto": int(moto_url.rsplit(":", 1)[1])}
    env = EnvConfig(
        name="sandbox",
        kind="sandbox",
        domain=DOMAIN,
        aws=AwsSettings(endpoint_url=moto_url),
        postgres={
            "source": PgEndpoint(host=src.host, port=src.port, dbname=src.dbname, user=src.user, bin_dir=src.bin_dir),
            "target": PgEndpoint(host=dst.host, port=dst.port, dbname=dst.dbname, user=dst.user, bin_dir=dst.bin_dir),
        },
        redis={
            "source": RedisEndpoint(host=redis_src.host, port=redis_src.port, dbs=[0]),
            "target": RedisEndpoint(host=redis_dst.host, port=redis_dst.port, dbs=[0]),
        },
    )
    stack = Stack(root, env, src, dst, ports)
    for name, db, rd, create in (
        ("app-old", src, redis_src, True),
        ("app-new", dst, redis_dst, False),
    ):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        cfg = {
            "name": name.split("-")[1],
            "database_url": f"postgresql://{db.user}@{db.host}:{db.port}/{db.dbname}",
            "redis_url": f"redis://{rd.host}:{rd.port}/0",
            "maintenance": False,
            "create_schema": create,
            "primary": create,
            "generation": 1,
        }
        (folder / "config.json").write_text(json.dumps(cfg))
        pid, port = standins.start(name, folder, None, ports, DOMAIN)
        stack.pids[name], ports[name] = pid, port
    pid, port = standins.start("router", root / "router", None, ports, DOMAIN)
    stack.pids["router"], ports["router"] = pid, port
    return stack


@pytest.fixture()
def stack(
    tmp_path: Path,
    pg_source: Any,
    pg_target: Any,
    fresh_pg_db: Callable[[Any], str],
    fresh_redis: Callable[[Any], Any],
    redis_source: Any,
    redis_target: Any,
    moto_reset: Any,
) -> Iterator[Stack]:
    """The stack on fresh databases of the session's servers (processes stopped and streams dropped after)."""
    from tests.pg_data_helpers import adapter

    src = adapter(pg_source, fresh_pg_db(pg_source), "source")
    dst = adapter(pg_target, fresh_pg_db(pg_target), "target")
    s = start_stack(
        tmp_path / "stack", src, dst, fresh_redis(redis_source), fresh_redis(redis_target), moto_reset.endpoint_url
    )
    try:
        yield s
    finally:
        s.stop()
        drop_streams(src, dst)


def drop_streams(src: PostgresAdapter, dst: PostgresAdapter) -> None:
    """Subscriptions (either direction) block DROP DATABASE; slots retain WAL."""
    from migrate.adapters.pgsync import PgSync

    for sub_side, pub_side in ((dst, src), (src, dst)):
        for (sub,) in sub_side.query(
            "SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = "
            "current_database())"
        ):
            PgSync(pub_side, sub_side, str(sub)).teardown(timeout=20)
        for (slot,) in pub_side.query(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", [pub_side.dbname]
        ):
            PgSync(pub_side, sub_side, str(slot)).drop_slot(timeout=20)


@dataclass
class WriteLog:
    acked: list[str] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    by_backend: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # stage label -> failed requests
    requests: Counter[str] = field(default_factory=Counter)  # stage label -> requests
    reads: int = 0
    read_failures: int = 0
    failed_at: list[float] = field(default_factory=list)


class LoggingWriter:
    """Writes (POST /api/v1/enhance with a unique id) and reads (GET /api/v1/history) through the router until
    stopped; an id is logged as acknowledged only on HTTP 200."""

    def __init__(self, base_url: str, threads: int = 2, pause_s: float = 0.01) -> None:
        self.base = base_url.split("://", 1)[1]
        self.log = WriteLog()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.stage = "before"
        self.pause_s = pause_s
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> LoggingWriter:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)

    def acked_count(self) -> int:
        with self.lock:
            return len(self.log.acked)

    def wait_acked(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        start = self.acked_count()
        while self.acked_count() < start + n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the writer acknowledged {self.acked_count() - start} of {n} writes in {timeout}s"
                )
            time.sleep(0.02)

    def _conn(self) -> http.client.HTTPConnection:
        host, port = self.base.split(":")
        return http.client.HTTPConnection(host, int(port), timeout=10)

    def _run(self, worker: int) -> None:
        conn = self._conn()
        n = 0
        while not self.stop_event.is_set():
            n += 1
            stage = self.stage
            if n % 4 == 0:
                ok = self._request(conn, "GET", "/api/v1/history", None)[0] == 200
                with self.lock:
                    self.log.reads += 1
                    self.log.read_failures += 0 if ok else 1
            wid = f"w{worker}-{n}-{uuid.uuid4().hex[:8]}"
            t = time.monotonic()
            status, backend = self._request(conn, "POST", "/api/v1/enhance", {"id": wid, "text": "rewrite this"})
            elapsed = (time.monotonic() - t) * 1000
            with self.lock:
                self.log.requests[stage] += 1
                if status == 200:
                    self.log.acked.append(wid)
                    self.log.acked_at.append(time.time())
                    self.log.latency_ms.append(elapsed)
                    self.log.by_backend[backend] += 1
                else:
                    self.log.failures[stage] += 1
                    self.log.failed_at.append(time.time())
            if status != 200:
                conn.close()
                conn = self._conn()
                time.sleep(0.005)
            time.sleep(self.pause_s)
        conn.close()

    def _request(self, conn: http.client.HTTPConnection, method: str, path: str, body: Any) -> tuple[int, str]:
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("X-Backend") or "?"
        except (OSError, http.client.HTTPException):
            conn.close()
            return 0, "?"


def write_downtime(log: WriteLog) -> float:
    """The longest gap between two acknowledged writes (seconds)."""
    times = sorted(log.acked_at)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def audit(db: PostgresAdapter, acked: list[str]) -> dict[str, int]:
    """Every acknowledged write id in ``db``: how many are found, lost, duplicated."""
    rows = dict(db.query("SELECT write_id, count(*) FROM app.write_log GROUP BY write_id"))
    found = sum(1 for w in acked if w in rows)
    return {
        "acknowledged": len(acked),
        "found": found,
        "lost": len(acked) - found,
        "duplicated": sum(1 for w in acked if rows.get(w, 0) > 1),
        "rows": sum(int(v) for v in rows.values()),
    }


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class StagePoller:
    """Labels the writer's requests by the weights the router has in force (``dns new N%``)."""

    def __init__(self, writer: LoggingWriter, router_url: str, new_name: str) -> None:
        self.writer, self.url, self.new = writer, router_url, new_name
        self.label = "before"
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def set(self, label: str) -> None:
        self.label = label
        self.writer.stage = label

    def _run(self) -> None:
        import urllib.request

        while not self.stop_event.wait(0.2):
            try:
                with urllib.request.urlopen(f"{self.url}/_router", timeout=2) as resp:
                    weights = json.loads(resp.read()).get("weights") or {}
            except (OSError, ValueError):
                continue
            total = sum(weights.values())
            if total and self.label.startswith("dns"):
                self.writer.stage = f"dns new {round(100 * weights.get(self.new, 0) / total)}%"

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)


def rehearse(
    stack: Stack, work: Path, *, rollback: bool, say: Any = None, dns: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Phase 5 under a logging writer through the router: restore + stream (old stack writing), data-switch with
    process fences on both stacks, dns-cutover 10/50/100 %, then (``rollback``) dns-cutover and data-switch rolled
    back. Returns the audit of every acknowledged write against the primary at the end (and at 100 %)."""
    from migrate.testing import make_context
    from phases.p2_data.pg_sync import PgSyncStep
    from phases.p2_data.rds_restore import RdsRestore
    from phases.p5_cutover.data_switch import DataSwitch
    from phases.p5_cutover.dns_cutover import DnsCutover

    say = say or (lambda _m: None)
    env = stack.env
    report: dict[str, Any] = {}
    with LoggingWriter(stack.router_url) as writer:
        poller = StagePoller(writer, stack.router_url, standins.names(DOMAIN)["new"])
        try:
            writer.wait_acked(30)
            say("rds-restore + pg-sync while the old stack writes")
            poller.set("stream")
            RdsRestore().apply(make_context(work / "r", env, "rds-restore", settings={"analyze": False}))
            pg_out = PgSyncStep().apply(make_context(work / "p", env, "pg-sync"))
            writer.wait_acked(30)
            say("data-switch (fences: both stacks)")
            poller.set("switch")
            switch_started = time.time()
            ds_settings = {"fences": stack.fences(), "catchup_timeout_s": 30}
            up = {"pg-sync": pg_out}
            ds_out = DataSwitch().apply(make_context(work / "d", env, "data-switch", settings=ds_settings, upstream=up))
            switch_ended = time.time()
            writer.wait_acked(30)
            say("dns-cutover 10 -> 50 -> 100 %")
            poller.set("dns")
            up = {"pg-sync": pg_out, "data-switch": ds_out}
            dns_ctx = make_context(
                work / "n", env, "dns-cutover", settings=stack.dns_settings(**(dns or {})), upstream=up
            )
            dns_out = DnsCutover().apply(dns_ctx)
            writer.wait_acked(40)
            with writer.lock:
                acked = list(writer.log.acked)
            report["at_100"] = audit(stack.dst, acked)
            if rollback:
                say("rollback: dns-cutover, then data-switch (reverse stream)")
                poller.set("rollback")
                up = {"pg-sync": pg_out, "data-switch": ds_out, "dns-cutover": dns_out}
                DnsCutover().rollback(
                    make_context(
                        work / "n", env, "dns-cutover", settings=stack.dns_settings(**(dns or {})), upstream=up
                    )
                )
                rb_ctx = make_context(work / "d", env, "data-switch", settings=ds_settings, upstream=up)
                DataSwitch().rollback(rb_ctx)
                report["rollback_write_downtime_s"] = round(rb_ctx.recorded_metrics["rollback_write_downtime_s"], 3)
                poller.set("after-rollback")
                writer.wait_acked(40)
        finally:
            poller.stop()
    log = writer.log
    primary = stack.src if rollback else stack.dst
    report["final"] = audit(primary, log.acked)
    report["final"]["primary"] = "source" if rollback else "target"
    report["write_downtime_s"] = ds_out["write_downtime_s"]
    report["switch_timings"] = ds_out.get("timings")
    switch_lat = [
        lat for lat, at in zip(log.latency_ms, log.acked_at, strict=True) if switch_started <= at <= switch_ended + 1
    ]
    gaps = sorted(log.acked_at)
    report["observed_write_gap_s"] = round(write_downtime(log), 3)
    report["p99_write_ms_during_switch"] = round(p99(switch_lat), 1)
    report["p99_write_ms"] = round(p99(log.latency_ms), 1)
    report["error_rate_by_stage"] = {k: round(log.failures[k] / n, 4) for k, n in sorted(log.requests.items()) if n}
    report["requests_by_stage"] = dict(log.requests)
    report["by_backend"] = dict(log.by_backend)
    report["reads"], report["read_failures"] = log.reads, log.read_failures
    report["span_s"] = round(gaps[-1] - gaps[0], 1) if gaps else 0
    return report


# -- kill -9 rehearsal: a step run in a child process that is SIGKILLed, then resumed ------------------------------
class FileCheckpoints:
    """Durable checkpoints in a JSON file (fsynced like the ledger's): what survives a SIGKILL."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return {}

    def _save(self, data: dict[str, dict[str, Any]]) -> None:
        import os

        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps(data, default=str))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._load().get(key)

    def put(self, key: str, data: dict[str, Any] | None = None) -> None:
        current = self._load()
        current[key] = dict(data or {})
        self._save(current)

    def all(self) -> dict[str, dict[str, Any]]:
        return self._load()

    def clear(self) -> None:
        self._save({})


def step_context(job: dict[str, Any]) -> Any:
    """The context of ``job`` (written by :func:`run_step_child`), with its file checkpoints."""
    from migrate.testing import make_context

    env = EnvConfig.model_validate(job["env"])
    ctx = make_context(Path(job["work"]), env, job["step"], settings=job["settings"], upstream=job["upstream"])
    ctx.checkpoints = FileCheckpoints(Path(job["checkpoints"]))
    return ctx


def step_class(step_id: str) -> Any:
    from phases.p5_cutover.data_switch import DataSwitch
    from phases.p5_cutover.dns_cutover import DnsCutover

    return {"data-switch": DataSwitch, "dns-cutover": DnsCutover}[step_id]


def run_step_child(job_file: Path, kill_after_s: float) -> int:
    """Run the job's step apply in a child process and SIGKILL it after ``kill_after_s`` (if still running);
    returns the child's exit code (-9 when killed)."""
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = "import sys; from tests.cutover_stack import child_main; child_main(sys.argv[1])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(job_file)], cwd=root, env=env)
    try:
        proc.wait(kill_after_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    return int(proc.returncode)


def child_main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    step_class(job["step"])().apply(step_context(job))
