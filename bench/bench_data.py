"""Benchmark of the data phase (NOT a test; run by hand). Prints same-run ratios.

    .venv/bin/python bench/bench_data.py                    # full: ~2 GB PostgreSQL, 1,000,000 Redis keys
    .venv/bin/python bench/bench_data.py --pg-mb 300 --redis-keys 200000   # a few minutes

Starts its own local servers (migrate.adapters.localservers: PostgreSQL 16 + pgvector source and target, two
Redis 7) in a temporary directory, generates the data server-side, then measures on the same data:

* rds-restore (the RdsRestore step through a real StepContext, in a child process so its peak RSS is measured)
  vs ``pg_dump -Fc | pg_restore`` and vs ``pg_dump -Fd -j2`` + ``pg_restore -j2``, each into a fresh database;
* data-validate (the DataValidate step) vs rds-restore;
* the large-object copy (``--lo-count N --lo-kb K``) vs ``pg_dump -Fc | pg_restore`` of the same objects;
* redis-migrate's copy (SCAN+MIGRATE COPY REPLACE batches run as a script on the source; also the variant driven
  from bpmigrate) vs a pipelined DUMP/PTTL/RESTORE loop, on mixed keys with TTLs across DBs 0-2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EMBED_ROW_BYTES = 3200  # 768 float4 + header, as stored


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- PostgreSQL data -------------------------------------------------------------------------------------------------
SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, created_at timestamptz NOT NULL,
                    settings jsonb, ip inet);
CREATE TABLE prompts (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id), input text NOT NULL,
                      output text, technique text[], meta jsonb, created_at timestamptz NOT NULL);
CREATE TABLE embeddings (id bigserial PRIMARY KEY, prompt_id bigint NOT NULL REFERENCES prompts (id),
                         model text NOT NULL, embedding vector(768) NOT NULL);
CREATE TABLE events (id uuid PRIMARY KEY, prompt_id bigint REFERENCES prompts (id), kind text, payload jsonb,
                     at timestamptz);
CREATE INDEX prompts_user_idx ON prompts (user_id);
CREATE INDEX embeddings_prompt_idx ON embeddings (prompt_id);
CREATE INDEX events_at_idx ON events (at);
"""


def generate_pg(dsn: str, total_mb: int) -> dict[str, int]:
    """~total_mb of data: 80 % embeddings (random 768-dim vectors), the rest users/prompts/events."""
    import psycopg

    n_embed = max(1000, int(total_mb * 0.8 * (1 << 20) / EMBED_ROW_BYTES))
    n_prompts = n_embed
    n_users = max(100, n_prompts // 10)
    n_events = n_prompts
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            "INSERT INTO users (email, created_at, settings, ip) SELECT 'u' || g || '@example.com', "
            "now() - g * interval '1 minute', jsonb_build_object('theme', 'dark', 'n', g), "
            f"('10.' || (g % 250) || '.' || (g % 200) || '.1')::inet FROM generate_series(1, {n_users}) g"
        )
        conn.execute(
            f"INSERT INTO prompts (user_id, input, output, technique, meta, created_at) SELECT 1 + g % {n_users}, "
            "'Explain ' || md5(g::text) || E' step by step\\n\\twith tabs', repeat(md5((g * 7)::text), 6), "
            "ARRAY['chain_of_thought', 'few_shot'], jsonb_build_object('tokens', g % 900, 'lang', 'en'), "
            f"now() - g * interval '1 second' FROM generate_series(1, {n_prompts}) g"
        )
        conn.execute(
            f"INSERT INTO events SELECT md5('e' || g)::uuid, 1 + g % {n_prompts}, 'click', jsonb_build_object('g', g), "
            f"now() - g * interval '2 seconds' FROM generate_series(1, {n_events}) g"
        )
    # embeddings: two connections in parallel (two cores), random vectors (incompressible, like real embeddings)
    half = n_embed // 2
    sql = (
        "INSERT INTO embeddings (prompt_id, model, embedding) SELECT g, 'all-mpnet-base-v2', "
        "(SELECT array_agg(random()::float4) FROM generate_series(1, 768 + 0 * g))::vector "
        "FROM generate_series(%s, %s) g"
    )
    procs = []
    for lo, hi in ((1, half), (half + 1, n_embed)):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys, psycopg; c = psycopg.connect(sys.argv[1], autocommit=True); "
                    "c.execute(sys.argv[2] % (int(sys.argv[3]), int(sys.argv[4])))",
                    dsn,
                    sql,
                    str(lo),
                    str(hi),
                ]
            )
        )
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("embedding generation failed")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT setval('embeddings_id_seq', (SELECT max(id) FROM embeddings))")
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
    return {"users": n_users, "prompts": n_prompts, "embeddings": n_embed, "events": n_events, "db_bytes": int(size)}


# -- child process: the rds-restore step, measured for peak RSS ---------------------------------------------------
def child_restore(args: argparse.Namespace) -> None:
    from migrate.config import EnvConfig, PgEndpoint
    from migrate.testing import make_context
    from phases.p2_data.rds_restore import RdsRestore

    spec = json.loads(args.spec)
    env = EnvConfig(
        name="sandbox",
        kind="sandbox",
        postgres={"source": PgEndpoint(**spec["source"]), "target": PgEndpoint(**spec["target"])},
    )
    ctx = make_context(Path(spec["tmp"]), env, "rds-restore", settings=spec["settings"])
    started = time.monotonic()
    out = RdsRestore().apply(ctx)
    out["wall_s"] = time.monotonic() - started
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


def run_step_restore(src: Any, tgt: Any, dbname: str, tmp: Path, settings: dict[str, Any]) -> dict[str, Any]:
    spec = {
        "source": {
            "host": src.host,
            "port": src.port,
            "dbname": "bench",
            "user": src.user,
            "bin_dir": str(src.bin_dir),
        },
        "target": {"host": tgt.host, "port": tgt.port, "dbname": dbname, "user": tgt.user, "bin_dir": str(tgt.bin_dir)},
        "tmp": str(tmp),
        "settings": settings,
    }
    done = subprocess.run(
        [sys.executable, __file__, "--child-restore", json.dumps(spec)], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"rds-restore child failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT ") :]))


def timed(cmd: str, env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    subprocess.run(cmd, shell=True, check=True, env={**os.environ, **(env or {})})
    return time.monotonic() - started


def bench_pg(args: argparse.Namespace, base: Path, results: dict[str, Any]) -> None:
    from migrate.adapters.localservers import start_postgres
    from migrate.config import EnvConfig, PgEndpoint
    from migrate.testing import make_context
    from phases.p2_data.data_validate import DataValidate

    src = start_postgres(base / "pg-src", dbname="bench", fsync=args.fsync)
    tgt = start_postgres(base / "pg-tgt", dbname="postgres", fsync=args.fsync)
    try:
        log(f"generating ~{args.pg_mb} MB in PostgreSQL (server-side)")
        started = time.monotonic()
        results["pg_data"] = generate_pg(src.dsn_for("bench"), args.pg_mb)
        results["pg_data"]["generate_s"] = round(time.monotonic() - started, 1)
        log(f"data: {results['pg_data']}")
        bin_dir = Path(src.bin_dir)
        tconn = f"host={tgt.host} port={tgt.port} user={tgt.user}"
        sconn = f"host={src.host} port={src.port} user={src.user} dbname=bench"

        # 1. rds-restore (the step)
        tgt.create_database("r_fast")
        settings = {"workers": args.workers, "chunk_mb": args.chunk_mb}
        log(f"rds-restore (step, {args.workers} workers) ...")
        fast = run_step_restore(src, tgt, "r_fast", base / "state", settings)
        results["rds_restore_s"] = round(fast["wall_s"], 2)
        results["rds_restore_peak_rss_mb"] = round(fast["peak_rss_mb"], 1)
        results["rds_restore_mb_per_s"] = fast["mb_per_s"]
        results["rds_restore_chunks"] = fast["chunks_total"]
        log(f"rds-restore: {fast['wall_s']:.1f}s, peak RSS {fast['peak_rss_mb']:.0f} MB, {fast['mb_per_s']} MB/s copy")

        # 2. data-validate (the step) against the restored target
        env = EnvConfig(
            name="sandbox",
            kind="sandbox",
            postgres={
                "source": PgEndpoint(host=src.host, port=src.port, dbname="bench", user=src.user, bin_dir=str(bin_dir)),
                "target": PgEndpoint(
                    host=tgt.host, port=tgt.port, dbname="r_fast", user=tgt.user, bin_dir=str(bin_dir)
                ),
            },
        )
        ctx = make_context(base / "state-v", env, "data-validate", settings={"workers": args.workers})
        started = time.monotonic()
        vout = DataValidate().apply(ctx)
        results["data_validate_s"] = round(time.monotonic() - started, 2)
        results["data_validate_chunks"] = vout["chunks"]
        log(
            f"data-validate: {results['data_validate_s']}s ({vout['chunks']} chunks, nn match "
            f"{vout['nearest_neighbours'].get('match')})"
        )
        tgt.drop_database("r_fast")

        # 3. pg_dump -Fc | pg_restore
        tgt.create_database("r_dump")
        log("pg_dump -Fc | pg_restore ...")
        results["dump_fc_pipe_s"] = round(
            timed(
                f"'{bin_dir}/pg_dump' -Fc --dbname '{sconn}' | '{bin_dir}/pg_restore' --no-owner --dbname "
                f"'{tconn} dbname=r_dump'"
            ),
            2,
        )
        log(f"pg_dump -Fc | pg_restore: {results['dump_fc_pipe_s']}s")
        tgt.drop_database("r_dump")

        # 4. pg_dump -Fd -j2 + pg_restore -j2
        tgt.create_database("r_dir")
        dump_dir = base / "dumpdir"
        log("pg_dump -Fd -j2 + pg_restore -j2 ...")
        results["dump_fd_j2_s"] = round(
            timed(
                f"'{bin_dir}/pg_dump' -Fd -j2 -f '{dump_dir}' --dbname '{sconn}' && '{bin_dir}/pg_restore' -j2 "
                f"--no-owner --dbname '{tconn} dbname=r_dir' '{dump_dir}'"
            ),
            2,
        )
        log(f"pg_dump -Fd -j2 + pg_restore -j2: {results['dump_fd_j2_s']}s")
        shutil.rmtree(dump_dir, ignore_errors=True)
        tgt.drop_database("r_dir")
        results["ratio_restore_vs_dump_fc"] = round(results["rds_restore_s"] / results["dump_fc_pipe_s"], 3)
        results["ratio_restore_vs_dump_fd_j2"] = round(results["rds_restore_s"] / results["dump_fd_j2_s"], 3)
        results["ratio_validate_vs_restore"] = round(results["data_validate_s"] / results["rds_restore_s"], 3)
    finally:
        src.stop()
        tgt.stop()


# -- large objects ---------------------------------------------------------------------------------------------------
def bench_lo(args: argparse.Namespace, base: Path, results: dict[str, Any]) -> None:
    """The fast path's large-object copy (lo_get/lo_put in chunks, batched commits) vs pg_dump -Fc | pg_restore of
    the same objects, on ``--lo-count`` objects of ``--lo-kb`` KiB (incompressible contents)."""
    from migrate.adapters import pgcopy
    from migrate.adapters.localservers import start_postgres
    from tests.pg_data_helpers import adapter

    src = start_postgres(base / "lo-src", dbname="bench", fsync=args.fsync)
    tgt = start_postgres(base / "lo-tgt", dbname="postgres", fsync=args.fsync)
    try:
        tgt.create_database("lo_fast")
        tgt.create_database("lo_dump")

        source, target = adapter(src, src.dsn_for("bench"), "source"), adapter(tgt, tgt.dsn_for("lo_fast"), "target")
        reps = max(1, args.lo_kb * 1024 // 16)
        source.execute(
            f"SELECT lo_from_bytea(0, (SELECT string_agg(decode(md5(g::text || '-' || i), 'hex'), '') "
            f"FROM generate_series(1, {reps}) i)) FROM generate_series(1, {args.lo_count}) g"
        )
        total_mb = args.lo_count * args.lo_kb / 1024
        log(f"large objects: {args.lo_count} x {args.lo_kb} KiB = {total_mb:.0f} MB")
        pgcopy.ensure_state(target)
        started = time.monotonic()
        copied, nbytes, _ = pgcopy.copy_large_objects(source, target)
        fast_s = time.monotonic() - started
        started = time.monotonic()
        same = source.large_object_digests() == target.large_object_digests()
        digest_s = time.monotonic() - started
        bin_dir = Path(src.bin_dir)
        sconn = f"host={src.host} port={src.port} user={src.user} dbname=bench"
        tconn = f"host={tgt.host} port={tgt.port} user={tgt.user} dbname=lo_dump"
        dump_s = timed(f"'{bin_dir}/pg_dump' -Fc --dbname '{sconn}' | '{bin_dir}/pg_restore' --dbname '{tconn}'")
        results.update(
            lo_count=copied,
            lo_mb=round(nbytes / 2**20, 1),
            lo_copy_s=round(fast_s, 2),
            lo_copy_mb_per_s=round(nbytes / 2**20 / fast_s, 1),
            lo_validate_both_sides_s=round(digest_s, 2),
            lo_identical=same,
            lo_dump_restore_s=round(dump_s, 2),
            ratio_lo_copy_vs_dump=round(fast_s / dump_s, 3),
        )
        log(f"large objects: copy {fast_s:.1f}s ({nbytes / 2**20 / fast_s:.0f} MB/s), dump|restore {dump_s:.1f}s")
    finally:
        src.stop()
        tgt.stop()


# -- Redis -------------------------------------------------------------------------------------------------------------
def generate_redis(host: str, port: int, n: int) -> dict[int, int]:
    import redis

    per_db = n // 3
    out: dict[int, int] = {}
    for db in (0, 1, 2):
        c = redis.Redis(host=host, port=port, db=db)
        pipe = c.pipeline(transaction=False)
        for i in range(per_db):
            key = f"bp:{db}:{i}"
            kind = i % 10
            if kind < 6:
                pipe.set(key, f"session-{i}-" + "x" * 40)
            elif kind == 6:
                pipe.hset(key, mapping={"user": str(i), "ip": "10.0.0.1", "ua": "Mozilla/5.0"})
            elif kind == 7:
                pipe.rpush(key, "a", "b", "c", str(i))
            elif kind == 8:
                pipe.sadd(key, "x", "y", str(i))
            else:
                pipe.zadd(key, {"p1": 1.0, "p2": 2.5, str(i): float(i)})
            if i % 2 == 0:
                pipe.pexpire(key, 3_600_000 + i)
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        out[db] = int(c.dbsize())
        c.close()
    return out


def bench_redis(args: argparse.Namespace, base: Path, results: dict[str, Any]) -> None:
    import redis

    from migrate.adapters.localservers import start_redis
    from migrate.adapters.redis import RedisAdapter
    from migrate.adapters.redis_copy import copy_db, routes

    rs = start_redis(base / "redis-src")
    rt = start_redis(base / "redis-tgt")
    try:
        log(f"generating {args.redis_keys} Redis keys")
        results["redis_keys"] = generate_redis(rs.host, rs.port, args.redis_keys)
        total = sum(results["redis_keys"].values())
        src = RedisAdapter(role="source", host=rs.host, port=rs.port)
        dst = RedisAdapter(role="target", host=rt.host, port=rt.port)
        for label, method, server_side in (
            ("migrate", "migrate", True),
            ("migrate_client", "migrate", False),
            ("dump", "dump", False),
        ):
            redis.Redis(host=rt.host, port=rt.port).flushall()
            started = time.monotonic()
            copied = 0
            for r in routes([0, 1, 2], cluster_mode=False):
                copied += copy_db(src, dst, r, method=method, batch=args.redis_batch, server_side=server_side).keys
            secs = time.monotonic() - started
            assert dst.keyspace() == src.keyspace(), (dst.keyspace(), src.keyspace())
            results[f"redis_{label}_s"] = round(secs, 2)
            results[f"redis_{label}_keys_per_s"] = round(copied / secs)
            log(f"redis {label}: {copied} keys in {secs:.1f}s = {copied / secs:,.0f} keys/s")
        results["redis_total_keys"] = total
        results["ratio_redis_migrate_vs_dump_loop"] = round(
            results["redis_migrate_keys_per_s"] / results["redis_dump_keys_per_s"], 2
        )
    finally:
        rs.stop()
        rt.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-mb", type=int, default=2000, help="PostgreSQL data size (default 2000 MB)")
    parser.add_argument("--redis-keys", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-mb", type=float, default=64)
    parser.add_argument("--redis-batch", type=int, default=1000)
    parser.add_argument("--fsync", action="store_true", help="run the servers with fsync on (default off)")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--lo-count", type=int, default=0, help="also time the large-object copy (0: skip)")
    parser.add_argument("--lo-kb", type=int, default=256, help="size of each large object (KiB)")
    parser.add_argument("--child-restore", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_restore:
        args.spec = args.child_restore
        child_restore(args)
        return
    results: dict[str, Any] = {"pg_mb": args.pg_mb, "workers": args.workers, "cpus": os.cpu_count()}
    base = Path(tempfile.mkdtemp(prefix="bpm-bench-"))
    try:
        if not args.skip_pg:
            bench_pg(args, base, results)
        if not args.skip_redis:
            bench_redis(args, base, results)
        if args.lo_count:
            bench_lo(args, base, results)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if "ratio_restore_vs_dump_fc" in results:
        print(
            f"rds-restore / (pg_dump -Fc | pg_restore)      = {results['ratio_restore_vs_dump_fc']:.3f}  (target <= 0.30)"
        )
        print(f"rds-restore / (pg_dump -Fd -j2 + pg_restore -j2) = {results['ratio_restore_vs_dump_fd_j2']:.3f}")
        print(
            f"data-validate / rds-restore                    = {results['ratio_validate_vs_restore']:.3f}  (target <= 0.50)"
        )
        print(
            f"rds-restore peak RSS                           = {results['rds_restore_peak_rss_mb']:.0f} MB (target < 300)"
        )
    if "ratio_redis_migrate_vs_dump_loop" in results:
        print(
            f"redis-migrate keys/s                           = {results['redis_migrate_keys_per_s']:,}  (target >= 100,000)"
        )
        print(
            f"redis-migrate / pipelined DUMP-RESTORE loop    = {results['ratio_redis_migrate_vs_dump_loop']:.2f}x (target >= 2)"
        )


if __name__ == "__main__":
    main()
