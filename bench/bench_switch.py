"""Benchmark of the near-zero-downtime data cutover (NOT a test; run by hand). Prints same-run ratios.

    .venv/bin/python bench/bench_switch.py                 # default: ~300 MB PostgreSQL
    .venv/bin/python bench/bench_switch.py --pg-mb 2000    # the ~2 GB dataset of bench_data.py

Starts its own local servers (migrate.adapters.localservers: PostgreSQL 16 + pgvector source and target, fsync off
unless --fsync), generates the data server-side (bench_data.generate_pg: 80 % embeddings vector(768)), then on the
same data while an "application" writes at a fixed rate (--rate transactions/s: insert an event + update a prompt):

* stop-the-world: the app must be stopped for the whole rds-restore (the RdsRestore step) -> its write downtime is the
  restore's wall time;
* continuous sync: rds-restore into another database, then pg-sync (snapshot copy + logical replication) with the app
  writing throughout, then data-switch with an HTTP maintenance hook served here (the app acknowledges it stopped
  writing). Reported: data-switch's recorded write_downtime_s, and the longest gap between two successful writes as
  the app saw it (includes the HTTP hook round trips).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class App:
    """Writes at a fixed rate; pauses on demand (acknowledging idleness); records every successful write's time."""

    def __init__(self, dsn: str, rate: float, n_prompts: int) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.rate = rate
        self.n_prompts = n_prompts
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.idle = threading.Event()
        self.times: list[float] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.error: BaseException | None = None

    def run(self) -> None:
        period = 1.0 / self.rate
        nxt = time.monotonic()
        i = 0
        try:
            while not self.stop.is_set():
                if self.paused.is_set():
                    self.idle.set()
                    time.sleep(0.001)
                    nxt = time.monotonic()
                    continue
                self.idle.clear()
                i += 1
                with self.conn.transaction():
                    self.conn.execute(
                        "INSERT INTO events (id, prompt_id, kind, payload, at) VALUES (%s, %s, 'bench', '{}', now())",
                        [uuid.uuid4(), 1 + i % self.n_prompts],
                    )
                    self.conn.execute(
                        "UPDATE prompts SET output = output WHERE id = %s", [1 + (i * 7) % self.n_prompts]
                    )
                self.times.append(time.monotonic())
                nxt += period
                time.sleep(max(0.0, nxt - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def max_gap(self, start: float, end: float) -> float:
        inside = [t for t in self.times if start - 5 <= t <= end + 5]
        return max((b - a for a, b in itertools.pairwise(inside)), default=0.0)


def serve_maintenance(app: App) -> tuple[ThreadingHTTPServer, dict[str, Any]]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path == "/on":
                app.paused.set()
                app.idle.wait(10)
            else:
                app.paused.clear()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    return server, {"kind": "http", "on_url": f"http://127.0.0.1:{port}/on", "off_url": f"http://127.0.0.1:{port}/off"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-mb", type=int, default=300, help="PostgreSQL data size (default 300 MB; 2000 = ~2 GB)")
    parser.add_argument("--rate", type=float, default=50.0, help="application write transactions per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--validate", default="verify", choices=["verify", "full"])
    parser.add_argument("--fsync", action="store_true")
    args = parser.parse_args()

    from bench_data import generate_pg

    from migrate.adapters.localservers import start_postgres
    from migrate.config import EnvConfig, PgEndpoint
    from migrate.testing import make_context
    from phases.p2_data.pg_sync import PgSyncStep
    from phases.p2_data.rds_restore import RdsRestore
    from phases.p5_cutover.data_switch import DataSwitch

    results: dict[str, Any] = {"pg_mb": args.pg_mb, "rate_tx_s": args.rate}
    with tempfile.TemporaryDirectory(prefix="bench-switch-") as tmp:
        base = Path(tmp)
        src = start_postgres(base / "pg-src", dbname="bench", fsync=args.fsync)
        tgt = start_postgres(base / "pg-tgt", dbname="postgres", fsync=args.fsync)
        try:
            log(f"generating ~{args.pg_mb} MB (server-side)")
            data = generate_pg(src.dsn_for("bench"), args.pg_mb)
            results["data"] = data
            log(f"data: {data}")

            def env_for(dbname: str) -> EnvConfig:
                ep = {
                    "host": src.host,
                    "port": src.port,
                    "dbname": "bench",
                    "user": src.user,
                    "bin_dir": str(src.bin_dir),
                }
                tp = {
                    "host": tgt.host,
                    "port": tgt.port,
                    "dbname": dbname,
                    "user": tgt.user,
                    "bin_dir": str(tgt.bin_dir),
                }
                return EnvConfig(
                    name="sandbox", kind="sandbox", postgres={"source": PgEndpoint(**ep), "target": PgEndpoint(**tp)}
                )

            restore_settings = {"workers": args.workers, "analyze": False}
            # 1. stop-the-world: the app is stopped for the whole copy
            tgt.create_database("stw")
            with psycopg_conn(tgt.dsn_for("stw")) as c:
                c.execute("CREATE EXTENSION IF NOT EXISTS vector")
            log("stop-the-world: rds-restore (app stopped) ...")
            t = time.monotonic()
            RdsRestore().apply(make_context(base / "s1", env_for("stw"), "rds-restore", settings=restore_settings))
            stw = time.monotonic() - t
            results["stop_the_world_downtime_s"] = round(stw, 2)
            log(f"stop-the-world write downtime: {stw:.2f}s")

            # 2. continuous sync while the app writes
            tgt.create_database("sync")
            with psycopg_conn(tgt.dsn_for("sync")) as c:
                c.execute("CREATE EXTENSION IF NOT EXISTS vector")
            env = env_for("sync")
            app = App(src.dsn_for("bench"), args.rate, data["prompts"])
            app.thread.start()
            server, hook = serve_maintenance(app)
            try:
                log("sync path: rds-restore (schema + first copy) with the app writing ...")
                t = time.monotonic()
                RdsRestore().apply(make_context(base / "s2", env, "rds-restore", settings=restore_settings))
                log(f"  rds-restore {time.monotonic() - t:.1f}s; pg-sync (snapshot copy + subscription) ...")
                t = time.monotonic()
                pg_out = PgSyncStep().apply(
                    make_context(base / "s2", env, "pg-sync", settings={"workers": args.workers})
                )
                results["pg_sync_s"] = round(time.monotonic() - t, 2)
                log(f"  pg-sync {results['pg_sync_s']}s, lag {pg_out['lag_bytes']} bytes; streaming 5 s ...")
                time.sleep(5)
                writes_before = len(app.times)
                log("data-switch ...")
                settings = {"maintenance": hook, "validate": args.validate, "catchup_timeout_s": 120}
                ctx = make_context(base / "s2", env, "data-switch", settings=settings, upstream={"pg-sync": pg_out})
                t0 = time.monotonic()
                out = DataSwitch().apply(ctx)
                t1 = time.monotonic()
                time.sleep(1.0)
                results["switch_write_downtime_s"] = out["write_downtime_s"]
                results["switch_timings_s"] = out["timings"]
                results["app_max_write_gap_s"] = round(app.max_gap(t0, t1), 3)
                results["app_writes_during_run"] = len(app.times)
                results["app_writes_before_switch"] = writes_before
            finally:
                app.stop.set()
                app.thread.join(10)
                server.shutdown()
                if app.error:
                    raise SystemExit(f"the app writer failed: {app.error}")
        finally:
            src.stop()
            tgt.stop()
    stw_s = results["stop_the_world_downtime_s"]
    sw = results["switch_write_downtime_s"]
    results["ratio_switch_vs_stop_the_world"] = round(sw / stw_s, 4) if stw_s else None
    print(json.dumps(results, indent=2))
    print(
        f"\nwrite downtime: data-switch {sw:.2f}s (app saw a max gap of {results['app_max_write_gap_s']:.2f}s) vs "
        f"stop-the-world rds-restore {stw_s:.2f}s -> ratio {results['ratio_switch_vs_stop_the_world']} "
        f"({'meets' if sw < 5 else 'MISSES'} the < 5 s target)"
    )


def psycopg_conn(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


if __name__ == "__main__":
    main()
