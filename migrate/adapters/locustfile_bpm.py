"""The locustfile the load adapter's Locust processes run (master and workers). NEVER import it from bpmigrate:
importing Locust monkey-patches the standard library with gevent.

Spec: JSON at ``$BPM_LOAD_SPEC`` (hosts, request mix, target_rps, duration_s, timeout_s, users); secret header
values come from the environment variables the spec names (``secret_headers``: header -> variable).

Each Locust user (one per worker) is a scheduler for ``target_rps / users`` requests per second: it spawns one
greenlet per request at its intended send time, whatever the latency of earlier ones (open model). A request's
latency is measured from its intended send time and reported to Locust's stats (and its HTML report) with that
corrected time; the worker also tallies latency and schedule-lag histograms and sends them to the master as
``bpm_tally`` messages (every second, and a last one after the schedule ended and in-flight requests drained). The
master merges them, writes the summary JSON at ``$BPM_LOAD_SUMMARY`` and quits once every worker has finished.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import gevent
from gevent.pool import Pool
from locust import User, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

try:
    from migrate.adapters.loadhist import hist_add, hist_max, hist_merge, hist_percentile
except ImportError:  # a Kubernetes worker pod: loadhist.py is shipped next to this file
    from loadhist import hist_add, hist_max, hist_merge, hist_percentile  # type: ignore[no-redef,unused-ignore]

with open(os.environ["BPM_LOAD_SPEC"], encoding="utf-8") as _fh:
    SPEC: dict[str, Any] = json.load(_fh)

REQUESTS: list[dict[str, Any]] = SPEC["requests"]
for _req in REQUESTS:
    _req["all_headers"] = {
        **_req.get("headers", {}),
        **{k: os.environ.get(v, "") for k, v in _req.get("secret_headers", {}).items()},
    }
USERS = max(1, int(SPEC["users"]))
RATE = float(SPEC["target_rps"]) / USERS  # per user (= per worker)
DURATION = float(SPEC["duration_s"])
TIMEOUT = float(SPEC["timeout_s"])
SATURATION_LAG_MS = float(SPEC.get("saturation_lag_ms", 100.0))


def _error_kind(meta: dict[str, Any]) -> str | None:
    exc = meta.get("exception")
    if exc is None:
        return None
    response = meta.get("response")
    status = getattr(response, "status_code", 0) or 0
    if status >= 400:
        return f"HTTP {status}"
    text = f"{type(exc).__name__} {exc}".lower()
    if "timeout" in text or "timed out" in text:
        return "timeout"
    if "refused" in text or "connect" in text or "reset" in text:
        return "connect"
    return type(exc).__name__


class Tally:
    """What one worker measured (cumulative)."""

    def __init__(self) -> None:
        self.scheduled = 0
        self.issued = 0
        self.done = 0
        self.failures = 0
        self.latency: dict[str, int] = {}
        self.lag: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.per_request: dict[str, dict[str, Any]] = {}
        self.started = time.time()
        self.schedule_start: float | None = None  # perf_counter of the first intended send time
        self.elapsed_s = 0.0
        self.finished = False

    def record(self, name: str, latency_ms: float, error: str | None) -> None:
        self.done += 1
        hist_add(self.latency, latency_ms)
        entry = self.per_request.setdefault(name, {"count": 0, "failures": 0, "latency": {}})
        entry["count"] += 1
        hist_add(entry["latency"], latency_ms)
        if error is not None:
            self.failures += 1
            entry["failures"] += 1
            self.errors[error] = self.errors.get(error, 0) + 1

    def message(self) -> dict[str, Any]:
        if not self.finished and self.schedule_start is not None:
            self.elapsed_s = max(0.0, min(DURATION, time.perf_counter() - self.schedule_start))
        return {
            "scheduled": self.scheduled,
            "issued": self.issued,
            "done": self.done,
            "failures": self.failures,
            "latency": dict(self.latency),
            "lag": dict(self.lag),
            "errors": dict(self.errors),
            "per_request": {k: {**v, "latency": dict(v["latency"])} for k, v in self.per_request.items()},
            "elapsed_s": self.elapsed_s,
            "finished": self.finished,
        }


class OpenModelUser(User):
    """One scheduler per worker: requests at fixed intended times, latency from the intended time."""

    host = SPEC["hosts"][0]

    @task
    def schedule(self) -> None:
        env = self.environment
        runner = env.runner
        tally = Tally()
        real_event = env.events.request

        class _Corrected:
            """Receives FastHttpSession's report and re-fires it with the latency from the intended send time."""

            @staticmethod
            def fire(**meta: Any) -> None:
                due = meta["context"].pop("bpm_due")
                latency = (time.perf_counter() - due) * 1000
                meta["response_time"] = latency
                tally.record(meta["name"], latency, _error_kind(meta))
                real_event.fire(**meta)

        rate = RATE
        in_flight = int(min(20000, rate * (TIMEOUT + 1) * 1.5 + 64))
        # enough connections for rate x 0.5 s of latency (Little's law) before requests queue inside the client
        connections = int(max(10, min(1000, rate * 0.5)))
        sessions = [
            FastHttpSession(
                base_url=host,
                request_event=_Corrected(),
                user=None,
                network_timeout=TIMEOUT,
                connection_timeout=TIMEOUT,
                max_retries=0,
                insecure=False,  # verify TLS certificates like a user's client does
                concurrency=connections,
            )
            for host in SPEC["hosts"]
        ]
        index = getattr(runner, "worker_index", 0) or 0
        rng = random.Random(1000 + index)
        weights = [int(r["weight"]) for r in REQUESTS]
        pool = Pool(in_flight)

        def fire(n: int, due: float) -> None:
            lag_ms = (time.perf_counter() - due) * 1000
            hist_add(tally.lag, lag_ms)
            req = REQUESTS[picks[n % len(picks)]]
            session = sessions[n % len(sessions)]
            session.request(
                req["method"],
                req["path"],
                name=req["name"],
                json=req.get("json_body"),
                headers=req["all_headers"] or None,
                allow_redirects=False,
                context={"bpm_due": due},
            )

        picks = rng.choices(range(len(REQUESTS)), weights=weights, k=4096)

        def report() -> None:
            while True:
                gevent.sleep(1.0)
                if isinstance(runner, WorkerRunner):
                    runner.send_message("bpm_tally", tally.message())

        reporter = gevent.spawn(report)
        interval = 1.0 / rate
        start = time.perf_counter() + rng.random() * interval  # spread the workers' phases
        total = int(DURATION * rate)
        tally.started = time.time()
        tally.schedule_start = start
        n = 0
        # requests still unsent this long after the window are dropped (counted as scheduled, not issued): the
        # achieved rate is what was sent within the window, and a saturated generator ends on time
        give_up = start + DURATION + SATURATION_LAG_MS / 1000
        while n < total:
            due = start + n * interval
            now = time.perf_counter()
            tally.scheduled = min(total, int((now - start) * rate) + 1)
            if now > give_up:
                break
            if due > now:
                gevent.sleep(due - now)
                continue
            pool.spawn(fire, n, due)  # blocks when `in_flight` requests are outstanding: shows up as lag
            tally.issued += 1
            n += 1
            if n % 20 == 0:
                gevent.sleep(0)  # let the spawned requests start now, not after a burst
        tally.elapsed_s = DURATION
        tally.scheduled = total
        pool.join(timeout=TIMEOUT + 2)
        stuck = len(pool)
        pool.kill(block=False)
        for _ in range(stuck):
            tally.record("cancelled", (TIMEOUT + 2) * 1000, "cancelled")
        tally.finished = True
        reporter.kill(block=False)
        if isinstance(runner, WorkerRunner):
            send_stats = getattr(runner, "_send_stats", None)
            if callable(send_stats):
                send_stats()  # Locust's own stats first, so its report is complete when the master quits
            runner.send_message("bpm_tally", tally.message())
        raise StopUser()


# -- master: merge the tallies, write the summary, quit when every worker is done ---------------------------------
_TALLIES: dict[str, dict[str, Any]] = {}
_STATE: dict[str, Any] = {"written": False, "started": None}


def _summary(complete: bool) -> dict[str, Any]:
    latency: dict[str, int] = {}
    lag: dict[str, int] = {}
    errors: dict[str, int] = {}
    per_request: dict[str, dict[str, Any]] = {}
    scheduled = issued = done = failures = 0
    achieved = 0.0
    elapsed_max = 0.0
    for tally in _TALLIES.values():
        hist_merge(latency, tally["latency"])
        hist_merge(lag, tally["lag"])
        for kind, count in tally["errors"].items():
            errors[kind] = errors.get(kind, 0) + int(count)
        for name, entry in tally["per_request"].items():
            mine = per_request.setdefault(name, {"count": 0, "failures": 0, "latency": {}})
            mine["count"] += int(entry["count"])
            mine["failures"] += int(entry["failures"])
            hist_merge(mine["latency"], entry["latency"])
        scheduled += int(tally["scheduled"])
        issued += int(tally["issued"])
        done += int(tally["done"])
        failures += int(tally["failures"])
        elapsed = float(tally["elapsed_s"])
        elapsed_max = max(elapsed_max, elapsed)
        if elapsed > 0:
            achieved += int(tally["done"]) / elapsed
    lag_p99 = hist_percentile(lag, 99)
    saturated = bool(scheduled) and (issued < 0.95 * scheduled or lag_p99 > SATURATION_LAG_MS)
    return {
        "target_rps": float(SPEC["target_rps"]),
        "achieved_rps": round(achieved, 3),
        "requests": done,
        "failures": failures,
        "error_rate": (failures / done) if done else 0.0,
        "p50_ms": hist_percentile(latency, 50),
        "p95_ms": hist_percentile(latency, 95),
        "p99_ms": hist_percentile(latency, 99),
        "max_ms": hist_max(latency),
        "schedule_lag_p99_ms": lag_p99,
        "schedule_lag_max_ms": hist_max(lag),
        "generator_saturated": saturated,
        "scheduled": scheduled,
        "issued": issued,
        "duration_s": round(elapsed_max, 3),
        "workers": len(_TALLIES),
        "error_kinds": errors,
        "per_request": {
            name: {
                "count": e["count"],
                "failures": e["failures"],
                "p50_ms": hist_percentile(e["latency"], 50),
                "p95_ms": hist_percentile(e["latency"], 95),
                "p99_ms": hist_percentile(e["latency"], 99),
            }
            for name, e in sorted(per_request.items())
        },
        "latency_histogram": latency,
        "complete": complete and len(_TALLIES) >= USERS and all(t["finished"] for t in _TALLIES.values()),
    }


def _write_summary(complete: bool) -> None:
    path = os.environ.get("BPM_LOAD_SUMMARY")
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(_summary(complete), fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
    _STATE["written"] = True


def _on_init(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        return

    def on_tally(environment: Any, msg: Any, **_: Any) -> None:
        _TALLIES[str(msg.node_id)] = msg.data
        if len(_TALLIES) >= USERS and all(t["finished"] for t in _TALLIES.values()):
            _write_summary(True)
            gevent.spawn(runner.quit)

    runner.register_message("bpm_tally", on_tally)


def _on_quitting(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner) and not _STATE["written"]:
        _write_summary(False)


events.init.add_listener(_on_init)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_on_quitting)  # type: ignore[no-untyped-call]
