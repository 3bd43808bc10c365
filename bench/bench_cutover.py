"""Benchmark of the whole cutover under live traffic (NOT a test; run by hand). Prints what the issue asks for.

    .venv/bin/python bench/bench_cutover.py                  # two runs: cut over; cut over + roll back after 100 %
    .venv/bin/python bench/bench_cutover.py --sample-with load --min-sample 1000

Starts its own servers (PostgreSQL 16 source/target, Redis source/target, moto) and the sandbox stand-ins (old app
on the source, new app on the target, the router over moto's Route53 weights), then drives a steady write+read mix
through the router (tests/cutover_stack.LoggingWriter: every acknowledged write id is logged) for the whole of
phase 5: rds-restore + pg-sync while the old stack writes, data-switch (process fences on both stacks), dns-cutover
10/50/100 % (each stage decided on a sample), and — second run — dns-cutover and data-switch rolled back after
100 % (through the reverse stream). For each run it prints: acknowledged writes, writes found in the primary, lost
(must be 0), duplicated (0), the write downtime (data-switch's measured window, and the longest gap between two
acknowledged writes as the client saw it), the p99 write latency during the switch, and the error rate per stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def one_run(base: Path, servers: dict[str, Any], rollback: bool, args: argparse.Namespace) -> dict[str, Any]:
    import urllib.request

    from migrate.adapters.postgres import PostgresAdapter
    from tests.cutover_stack import drop_streams, rehearse, start_stack

    name = "rollback" if rollback else "cutover"
    src_srv, dst_srv = servers["pg-source"], servers["pg-target"]
    src_srv.create_database(name)
    dst_srv.create_database(name)
    for srv in (servers["redis-source"], servers["redis-target"]):
        import redis

        redis.Redis(host=srv.host, port=srv.port).flushall()
    urllib.request.urlopen(urllib.request.Request(f"{servers['moto'].endpoint_url}/moto-api/reset", b"", method="POST"))

    def adapter(srv: Any, role: str) -> PostgresAdapter:
        return PostgresAdapter(
            role=role,
            host=srv.host,
            port=srv.port,
            dbname=name,
            user=srv.user,
            password=None,
            sslmode=None,
            bin_dir=str(srv.bin_dir),
        )

    src, dst = adapter(src_srv, "source"), adapter(dst_srv, "target")
    stack = start_stack(
        base / name, src, dst, servers["redis-source"], servers["redis-target"], servers["moto"].endpoint_url
    )
    try:
        dns = {"sample_with": args.sample_with, "min_sample": args.min_sample, "soak_s": args.soak_s}
        return rehearse(stack, base / f"{name}-work", rollback=rollback, say=log, dns=dns)
    finally:
        stack.stop()
        drop_streams(src, dst)


def show(name: str, r: dict[str, Any]) -> None:
    final = r["final"]
    print(f"\n== {name} (primary at the end: {final['primary']}) ==")
    if "at_100" in r and name == "rollback after 100 %":
        a = r["at_100"]
        print(
            f"  at 100 %  : acknowledged {a['acknowledged']}, found {a['found']}, lost {a['lost']}, "
            f"duplicated {a['duplicated']} (target)"
        )
    print(f"  acknowledged writes : {final['acknowledged']}")
    print(f"  writes found        : {final['found']}")
    print(f"  lost                : {final['lost']}   (must be 0)")
    print(f"  duplicated          : {final['duplicated']}   (must be 0)")
    print(
        f"  write downtime      : {r['write_downtime_s']:.3f} s (data-switch window); longest client gap "
        f"{r['observed_write_gap_s']:.3f} s"
    )
    print(f"  switch timings      : {r.get('switch_timings')}")
    if "rollback_write_downtime_s" in r:
        print(f"  rollback downtime   : {r['rollback_write_downtime_s']:.3f} s (fence, reverse lag 0, repoint)")
    print(
        f"  p99 write latency   : {r['p99_write_ms_during_switch']:.1f} ms during the switch; {r['p99_write_ms']:.1f} ms overall"
    )
    print(
        "  error rate by stage : "
        + ", ".join(f"{k} {v:.2%} (n={r['requests_by_stage'][k]})" for k, v in r["error_rate_by_stage"].items())
    )
    print(f"  served by           : {r['by_backend']}; reads {r['reads']} ({r['read_failures']} failed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample-with", default="http", choices=["http", "load"], help="dns-cutover's stage samples")
    parser.add_argument("--min-sample", type=int, default=300, help="requests per URL per stage decision")
    parser.add_argument("--soak-s", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    args = parser.parse_args()

    from migrate.adapters.localservers import start_moto, start_postgres, start_redis

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cutover-") as tmp:
        base = Path(tmp)
        log("starting PostgreSQL x2, Redis x2, moto ...")
        servers = {
            "pg-source": start_postgres(base / "pg-src", fsync=False),
            "pg-target": start_postgres(base / "pg-tgt", fsync=False),
            "redis-source": start_redis(base / "redis-src"),
            "redis-target": start_redis(base / "redis-tgt"),
            "moto": start_moto(base / "moto"),
        }
        try:
            log("run 1: cut over under traffic")
            results["cutover"] = one_run(base, servers, False, args)
            log("run 2: cut over, then roll back after 100 % (reverse stream)")
            results["rollback"] = one_run(base, servers, True, args)
        finally:
            for srv in servers.values():
                srv.stop()
    show("cut over", results["cutover"])
    show("rollback after 100 %", results["rollback"])
    if args.json:
        print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
