"""Load generation benchmark: the Locust load adapter vs the hand-written httpx/asyncio loop it replaced.

Not a test: run it by hand (a few minutes)::

    .venv/bin/python bench/bench_load.py                   # both comparisons
    .venv/bin/python bench/bench_load.py --skip-capacity   # coordinated omission only

1. Capacity: the highest rate ONE worker core sustains with the achieved rate within 5 % of the target (and, for
   Locust, without the generator reporting saturation), against a local endpoint that answers at once. The endpoint
   (an asyncio HTTP/1.1 server, keep-alive) runs in its own process pinned to CPU 1; the generator is pinned to CPU 0
   (Locust: the worker and the master; the old loop: its process). Rates climb x1.5 from 50 req/s until a miss, then
   one bisection step.
2. Coordinated omission: the endpoint stalls 1 s every 10 s (requests arriving in a stall wait until it ends); 20 s
   at a rate both generators sustain (``--co-rate``, default 50 req/s); p50/p95/p99 as each reports them. Compared:
   the Locust path (latency from the intended send time); the old open loop, which times a request from when it was
   actually sent, after waiting for a free in-flight slot (cap 256, its default, and cap 32); and the closed-loop
   probe (``HttpAdapter.probe``, 4 workers) the cutover stages used, which sends nothing while its workers wait.

The old loop (``migrate/adapters/http.py`` ``HttpAdapter.load`` before issue 15) is kept below, verbatim in its
logic, as the baseline only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- the endpoint ----------------------------------------------------------------------------------------------------
def serve(port_file: str, stall_every_s: float, stall_s: float) -> None:
    """A minimal asyncio HTTP/1.1 server (keep-alive, GET only) that answers at once, or stalls periodically."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    body = b'{"status":"ok"}'
    response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    started = time.monotonic()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            n = self.buf.count(b"\r\n\r\n")
            if not n:
                return
            self.buf = self.buf[self.buf.rindex(b"\r\n\r\n") + 4 :]
            if stall_every_s:
                phase = (time.monotonic() - started) % stall_every_s
                if phase < stall_s:
                    asyncio.get_running_loop().call_later(stall_s - phase, self._answer, n)
                    return
            self._answer(n)

        def _answer(self, n: int) -> None:
            if not self.transport.is_closing():
                self.transport.write(response * n)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", 0, backlog=4096)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await server.serve_forever()

    asyncio.run(main())


class Endpoint:
    def __init__(self, stall_every_s: float = 0.0, stall_s: float = 1.0) -> None:
        self.port_file = tempfile.mktemp(prefix="bench-load-port-")
        self.args = [sys.executable, __file__, "--serve", self.port_file, str(stall_every_s), str(stall_s)]

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(self.args, start_new_session=True)
        deadline = time.monotonic() + 10
        while not Path(self.port_file).exists() or not Path(self.port_file).read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("endpoint did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{Path(self.port_file).read_text()}"

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()
        Path(self.port_file).unlink(missing_ok=True)


# -- the old loop (baseline only) --------------------------------------------------------------------------------------
@dataclass
class _Sample:
    elapsed_ms: float
    error: str | None


def _pct(sorted_samples: list[float], pct: float) -> float:
    if not sorted_samples:
        return 0.0
    return float(sorted_samples[max(math.ceil(pct / 100 * len(sorted_samples)), 1) - 1])


async def old_loop(
    url: str, rps: float, duration_s: float, max_requests: int, timeout: float, max_in_flight: int = 256
) -> dict[str, Any]:
    """HttpAdapter.load as it was: open loop with an in-flight cap, latency from the actual send."""
    import httpx

    samples: list[_Sample] = []
    interval = 1.0 / rps
    gate = asyncio.Semaphore(max_in_flight)
    max_lag = 0.0
    tasks: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    stop_at = started + duration_s
    sent = 0
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(limits=limits, follow_redirects=False, trust_env=False) as client:

        async def one() -> _Sample:
            start = time.perf_counter()
            try:
                resp = await client.request("GET", url, timeout=timeout)
                await resp.aread()
            except httpx.HTTPError as exc:
                return _Sample((time.perf_counter() - start) * 1000, type(exc).__name__)
            return _Sample((time.perf_counter() - start) * 1000, None if resp.status_code < 400 else "HTTP")

        async def fire() -> None:
            try:
                samples.append(await one())
            finally:
                gate.release()

        while True:
            now = time.perf_counter()
            if sent >= max_requests or now >= stop_at:
                break
            due = started + sent * interval
            if due > now:
                await asyncio.sleep(min(due - now, stop_at - now))
                continue
            await gate.acquire()
            max_lag = max(max_lag, (time.perf_counter() - due) * 1000)
            task = asyncio.create_task(fire())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            await asyncio.sleep(0)
        send_end = time.perf_counter()
        if tasks:
            _done, pending = await asyncio.wait(set(tasks), timeout=timeout + 1.0)
            for task in pending:
                task.cancel()
    lat = sorted(s.elapsed_ms for s in samples)
    duration = max(send_end - started, 1e-9)
    return {
        "requests": len(samples),
        "errors": sum(1 for s in samples if s.error),
        "achieved_rps": len(samples) / duration,
        "p50_ms": _pct(lat, 50),
        "p95_ms": _pct(lat, 95),
        "p99_ms": _pct(lat, 99),
        "lag_max_ms": max_lag,
        "saturated": False,  # the old loop had no notion of it
    }


def run_old(url: str, rps: float, duration_s: float, max_in_flight: int = 256) -> dict[str, Any]:
    """The old loop in its own process pinned to CPU 0 (one core, like one Locust worker)."""
    out = subprocess.run(
        [sys.executable, __file__, "--old-loop", url, str(rps), str(duration_s), str(max_in_flight)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _old_main(url: str, rps: float, duration_s: float, max_in_flight: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    res = asyncio.run(
        old_loop(
            url, rps, duration_s, max_requests=math.ceil(rps * duration_s), timeout=5.0, max_in_flight=max_in_flight
        )
    )
    print(json.dumps(res))


def run_probe(url: str, rps: float, duration_s: float) -> dict[str, Any]:
    """The closed-loop probe the cutover stages used (HttpAdapter.probe, 4 workers), for the same wall time."""
    from migrate.adapters.http import HttpAdapter

    stats = HttpAdapter().probe(
        url, requests=math.ceil(rps * duration_s), concurrency=4, timeout=5.0, max_seconds=duration_s
    )
    return {"p50_ms": stats.p50_ms, "p95_ms": stats.p95_ms, "p99_ms": stats.p99_ms, "achieved_rps": stats.achieved_rps}


# -- the Locust path ---------------------------------------------------------------------------------------------------
def run_locust(url: str, rps: float, duration_s: float, out_dir: Path) -> dict[str, Any]:
    from migrate.adapters.load import LoadAdapter, LoadSpec, RequestSpec

    spec = LoadSpec([url], [RequestSpec("health")], target_rps=rps, duration_s=duration_s, workers=1, label=f"b{rps:g}")
    run = LoadAdapter().start(spec, out_dir)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        for proc in [run.master, *run.workers]:
            try:
                os.sched_setaffinity(proc.pid, {0})
            except OSError:
                pass
    run.wait(timeout=max(0.0, run.deadline - time.monotonic()))
    res = run.stop()
    return {
        "requests": res.requests,
        "errors": res.failures,
        "achieved_rps": res.achieved_rps,
        "p50_ms": res.p50_ms,
        "p95_ms": res.p95_ms,
        "p99_ms": res.p99_ms,
        "lag_max_ms": res.schedule_lag_max_ms,
        "lag_p99_ms": res.schedule_lag_p99_ms,
        "saturated": res.generator_saturated,
    }


# -- the comparisons ---------------------------------------------------------------------------------------------------
def sustained(res: dict[str, Any], rps: float) -> bool:
    return bool(res["achieved_rps"] >= 0.95 * rps and not res["saturated"] and res["errors"] == 0)


def ladder(name: str, measure: Any, rates: Iterable[float]) -> tuple[float, list[tuple[float, dict[str, Any]]]]:
    best = 0.0
    tried: list[tuple[float, dict[str, Any]]] = []
    miss = None
    for rps in rates:
        res = measure(rps)
        tried.append((rps, res))
        ok = sustained(res, rps)
        print(
            f"  {name:<7} {rps:>7,.0f} req/s -> achieved {res['achieved_rps']:>8,.1f}  p99 {res['p99_ms']:>7.1f} ms"
            f"  {'ok' if ok else 'MISS'}{'  (saturated)' if res['saturated'] else ''}",
            flush=True,
        )
        if ok:
            best = rps
        else:
            miss = rps
            break
    if miss is not None and best:
        mid = round((best + miss) / 2, -1)
        res = measure(mid)
        tried.append((mid, res))
        ok = sustained(res, mid)
        sat = "  (saturated)" if res["saturated"] else ""
        print(f"  {name:<7} {mid:>7,.0f} req/s -> achieved {res['achieved_rps']:>8,.1f}  {'ok' if ok else 'MISS'}{sat}")
        if ok:
            best = mid
    return best, tried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per capacity step")
    parser.add_argument("--co-rate", type=float, default=50.0, help="req/s of the stall run (both must sustain it)")
    parser.add_argument("--co-duration", type=float, default=20.0)
    parser.add_argument("--skip-capacity", action="store_true")
    parser.add_argument("--skip-co", action="store_true")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-load-"))
    rates = [50 * 1.5**i for i in range(16)]
    rows: list[tuple[str, str, str]] = []
    if not args.skip_capacity:
        print(f"capacity: one core, endpoint answering at once, {args.duration:g} s per step", flush=True)
        with Endpoint() as url:
            best_locust, _ = ladder("locust", lambda r: run_locust(url, r, args.duration, out), rates)
            best_old, _ = ladder("old", lambda r: run_old(url, r, args.duration), rates)
        rows.append(("max req/s on one core (within 5 %)", f"{best_locust:,.0f}", f"{best_old:,.0f}"))
        if best_locust:
            workers = math.ceil(10_000 * 1.25 / best_locust)
            rows.append(("workers for 10,000 req/s (+25 %)", str(workers), "-"))
    if not args.skip_co:
        print(
            f"coordinated omission: stall 1 s every 10 s, {args.co_rate:g} req/s for {args.co_duration:g} s", flush=True
        )
        with Endpoint(stall_every_s=10.0, stall_s=1.0) as url:
            loc = run_locust(url, args.co_rate, args.co_duration, out)
            old = run_old(url, args.co_rate, args.co_duration)
            old32 = run_old(url, args.co_rate, args.co_duration, max_in_flight=32)
            probe = run_probe(url, args.co_rate, args.co_duration)
        rows.append(("", "", "open, cap 256 | cap 32 | probe c=4"))
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            old_cell = f"{old[key]:,.1f} | {old32[key]:,.1f} | {probe[key]:,.1f} ms"
            rows.append((f"stall run {key[:-3]}", f"{loc[key]:,.1f} ms", old_cell))
        rows.append(
            (
                "stall run achieved req/s",
                f"{loc['achieved_rps']:,.1f}",
                f"{old['achieved_rps']:,.1f} | {old32['achieved_rps']:,.1f} | {probe['achieved_rps']:,.1f}",
            )
        )
        rows.append(
            (
                "stall run generator lag max",
                f"{loc['lag_max_ms']:,.1f} ms",
                f"{old['lag_max_ms']:,.1f} | {old32['lag_max_ms']:,.1f} ms",
            )
        )
    width = max(len(r[0]) for r in rows) if rows else 10
    print()
    print(f"{'':<{width}}  {'locust (adapter)':>18}  {'old httpx loop':>34}")
    for name, a, b in rows:
        print(f"{name:<{width}}  {a:>18}  {b:>34}")
    print(f"\nreports: {out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--old-loop":
        _old_main(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
