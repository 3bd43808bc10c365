"""Load generation on Locust: a master and N workers in their own processes, open model, corrected latency.

Locust monkey-patches the standard library with gevent, so it never runs inside bpmigrate's process: this adapter
writes the run's spec as JSON, starts ``locust --master`` and ``locust --worker`` processes on
``locustfile_bpm.py`` (through the subprocess rules of :mod:`migrate.adapters.proc`: own process group, killed when
done) and reads back what the Locust master wrote: a summary JSON of ours, Locust's own ``--json-file``/``--csv``
stats and its ``--html`` report.

Open model: each worker issues its share of ``target_rps`` at fixed intended send times whatever the latency (a
scheduler greenlet spawns one greenlet per request), and every latency is measured from the *intended* send time,
so a stall of the service shows up in p95/p99 instead of silently slowing the generator (coordinated omission). How
late the generator started requests against its own schedule is measured too (``schedule_lag_p99_ms``); when it
falls behind, the result says ``generator_saturated`` — the generator, not the service, missed the rate.

Percentiles come from a histogram with 3 significant digits (error < 0.5 %), merged exactly across workers.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError, ConfigError
from migrate.redact import redact, register

if TYPE_CHECKING:
    from migrate.adapters.http import HttpAdapter
    from migrate.config import EnvConfig

LOCUSTFILE = Path(__file__).with_name("locustfile_bpm.py")

#: measured by bench/bench_load.py on this project's 2-core build machine (one worker process pinned to one core,
#: local endpoint answering at once, GET /health; 1,139-1,580 req/s over runs on a busy machine): the highest rate
#: one worker sustained with the achieved rate within 5 % of target and no generator saturation, rounded down.
RPS_PER_WORKER_CORE = 1100.0

#: the generator is saturated when its schedule lag p99 passes this (or it issued < 95 % of the scheduled requests)
SATURATION_LAG_MS = 100.0

_REQUEST_KEYS = {"name", "method", "path", "json", "json_body", "weight", "headers"}

_SECRET_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class RequestSpec:
    """One entry of the request mix. Header values may name environment variables: ``"Bearer ${BP_API_TOKEN}"``."""

    name: str
    method: str = "GET"
    path: str = "/health"
    json_body: Any = None
    weight: int = 1
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadSpec:
    hosts: list[str]  # base URLs; requests are spread over them
    requests: list[RequestSpec]
    target_rps: float  # open model: arrival rate held whatever the latency
    duration_s: float
    workers: int = 1  # local Locust worker processes (0 = auto from target_rps)
    timeout_s: float = 5.0
    label: str = "load"  # names the report files


@dataclass
class LoadResult:
    target_rps: float
    achieved_rps: float
    requests: int
    failures: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    schedule_lag_p99_ms: float  # how far the generator fell behind its own schedule
    generator_saturated: bool  # the generator, not the service, could not keep the rate
    report_html: str | None
    stats_json: str | None
    duration_s: float = 0.0
    workers: int = 0
    scheduled: int = 0  # requests the schedule called for (in the time the run lasted)
    issued: int = 0  # requests actually started
    schedule_lag_max_ms: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)  # "HTTP 503" / "timeout" / "connect" -> count
    per_request: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> count/failures/p95_ms
    summary_json: str | None = None
    complete: bool = True  # False when stopped early or a worker never reported its end

    def to_outputs(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """(metric, value) pairs for a table."""
        rows = [
            ("rate", f"{self.achieved_rps:,.1f} req/s achieved of {self.target_rps:,.6g} target"),
            ("requests", f"{self.requests:,} ({self.issued:,} issued of {self.scheduled:,} scheduled)"),
            ("errors", f"{self.failures:,} ({self.error_rate * 100:.3f} %)"),
            ("p50 / p95 / p99", f"{self.p50_ms:.1f} / {self.p95_ms:.1f} / {self.p99_ms:.1f} ms"),
            ("max", f"{self.max_ms:.1f} ms"),
            ("schedule lag", f"p99 {self.schedule_lag_p99_ms:.1f} ms, max {self.schedule_lag_max_ms:.1f} ms"),
            ("generator", "SATURATED (it could not keep the rate)" if self.generator_saturated else "kept up"),
            ("workers", f"{self.workers} over {self.duration_s:.1f} s"),
        ]
        if self.error_kinds:
            rows.append(("error kinds", ", ".join(f"{k}: {v}" for k, v in sorted(self.error_kinds.items()))))
        return rows


@dataclass(frozen=True)
class Gate:
    """Pass/fail thresholds of a load gate."""

    p95_ms: float
    max_error_rate: float
    min_rate_fraction: float = 0.95


def check_gate(result: LoadResult, gate: Gate) -> list[str]:
    """Why the run fails the gate (empty = passed). The generator's own saturation is named as such."""
    failures: list[str] = []
    if result.requests == 0:
        return ["no request completed"]
    if result.generator_saturated:
        failures.append(
            f"load generator saturated: schedule lag p99 {result.schedule_lag_p99_ms:.0f} ms, issued "
            f"{result.issued:,} of {result.scheduled:,} scheduled requests (the generator, not the service, fell "
            "behind: add workers)"
        )
    floor = gate.min_rate_fraction * result.target_rps
    if result.achieved_rps < floor:
        failures.append(
            f"achieved {result.achieved_rps:,.1f} req/s < {gate.min_rate_fraction * 100:g} % of the "
            f"{result.target_rps:,.6g} req/s target"
        )
    if result.p95_ms >= gate.p95_ms:
        failures.append(f"p95 {result.p95_ms:.1f} ms >= {gate.p95_ms:g} ms")
    if result.error_rate >= gate.max_error_rate:
        failures.append(f"error rate {result.error_rate * 100:.3f} % >= {gate.max_error_rate * 100:g} %")
    return failures


# -- the adapter ---------------------------------------------------------------------------------------------------
def auto_workers(target_rps: float, *, per_worker: float = RPS_PER_WORKER_CORE, cores: int | None = None) -> int:
    """Workers needed for ``target_rps`` at the measured rate per worker core (with 25 % headroom)."""
    need = max(1, math.ceil(target_rps * 1.25 / per_worker))
    return need if cores is None else max(1, min(need, cores))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoadRun:
    """A Locust run in the background: ``running()``, ``wait()``, ``stop()`` -> LoadResult."""

    def __init__(
        self,
        adapter: LoadAdapter,
        spec: LoadSpec,
        paths: dict[str, Path],
        master: subprocess.Popen[bytes],
        workers: list[subprocess.Popen[bytes]],
        deadline: float,
    ) -> None:
        self.adapter = adapter
        self.spec = spec
        self.paths = paths
        self.master = master
        self.workers = workers
        self.deadline = deadline
        self.workers_expected = len(workers)
        self.port = 0
        self.secret_env: dict[str, str] = {}  # header secrets for workers started elsewhere (never logged)
        self._result: LoadResult | None = None

    def running(self) -> bool:
        return self.master.poll() is None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end by itself (True) or ``timeout`` seconds (False)."""
        try:
            self.master.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> LoadResult:
        """End the run now (or collect it when it ended) and return what was measured."""
        from migrate.adapters.proc import stop_group

        if self._result is not None:
            return self._result
        try:
            # SIGTERM: Locust's handler writes its reports (and our summary) before it exits
            stop_group(self.master, first=signal.SIGTERM, grace=(20.0,))
        finally:
            for proc in self.workers:
                try:
                    proc.wait(timeout=3)  # workers quit when the master tells them
                except subprocess.TimeoutExpired:
                    pass
                stop_group(proc, first=signal.SIGTERM, grace=(5.0,))
            for handle in self.adapter._open_logs.pop(id(self), []):
                handle.close()
        self._result = self.adapter.read_result(self.spec, self.paths)
        return self._result


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LoadAdapter:
    """Runs Locust (master + local workers) against hosts the HTTP policy allows."""

    def __init__(self, http: HttpAdapter | None = None, *, locust_bin: str | None = None) -> None:
        self.http = http
        self.locust_bin = locust_bin or str(Path(sys.executable).with_name("locust"))
        self._open_logs: dict[int, list[Any]] = {}

    # -- public API ----------------------------------------------------------------------------------------------
    def run(self, spec: LoadSpec, out_dir: Path) -> LoadResult:
        """Run the load to its end (blocking) and return the result."""
        handle = self.start(spec, out_dir)
        handle.wait(timeout=max(0.0, handle.deadline - time.monotonic()))
        return handle.stop()

    def start(
        self,
        spec: LoadSpec,
        out_dir: Path,
        *,
        local_workers: bool = True,
        bind_host: str = "127.0.0.1",
        port: int = 0,
    ) -> LoadRun:
        """Start the run in the background; ``LoadRun.stop()`` ends it early or collects it.

        ``local_workers=False``: start only the master (bound to ``bind_host:port``), which waits for the workers of
        :meth:`worker_job_docs` to connect (runner = "kubernetes")."""
        self.check_spec(spec)
        out_dir.mkdir(parents=True, exist_ok=True)
        workers = self.worker_count(spec)
        paths = self._paths(spec, out_dir)
        secret_env, wire_requests = self._wire_requests(spec)
        for stale in paths.values():
            if stale.suffix in (".json", ".html") and stale.exists():
                stale.unlink()
        wire = {
            "hosts": [h.rstrip("/") for h in spec.hosts],
            "requests": wire_requests,
            "target_rps": spec.target_rps,
            "duration_s": spec.duration_s,
            "timeout_s": spec.timeout_s,
            "users": workers,
            "saturation_lag_ms": SATURATION_LAG_MS,
            "label": spec.label,
        }
        paths["spec"].write_text(json.dumps(wire, indent=2, sort_keys=True))
        port = port or _free_port()
        # a backstop: the master normally quits as soon as every worker reported the end of its schedule
        run_time = math.ceil(spec.duration_s + spec.timeout_s + 30)
        wait_workers = 60 if local_workers else 600  # pods: image pull and scheduling
        common = ["-f", str(LOCUSTFILE), "--headless", "--exit-code-on-error", "0", "--loglevel", "WARNING"]
        master_args = [
            self.locust_bin,
            *common,
            "--master",
            "--master-bind-host",
            bind_host,
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(workers),
            "--expect-workers-max-wait",
            str(wait_workers),
            "-u",
            str(workers),
            "-r",
            str(workers),
            "-t",
            f"{run_time}s",
            "--stop-timeout",
            f"{math.ceil(spec.timeout_s + 1)}",
            "--only-summary",
            "--json-file",
            str(paths["stats_json"].with_suffix("")),
            "--csv",
            str(paths["csv_prefix"]),
            "--html",
            str(paths["html"]),
        ]
        worker_args = [self.locust_bin, *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
        env = {"BPM_LOAD_SPEC": str(paths["spec"]), **secret_env}
        logs: list[Any] = []
        master = self._spawn(master_args, {**env, "BPM_LOAD_SUMMARY": str(paths["summary"])}, paths["master_log"], logs)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for i in range(workers if local_workers else 0):
                procs.append(self._spawn(worker_args, env, out_dir / f"{spec.label}-worker-{i}.log", logs))
        except BaseException:
            for proc in [master, *procs]:
                _signal_group(proc, signal.SIGKILL)
            raise
        # start-up (the master waits for its workers) + the run + the drain, with margin
        deadline = time.monotonic() + wait_workers + run_time + 30
        run = LoadRun(self, spec, paths, master, procs, deadline)
        run.workers_expected = workers
        run.port = port
        run.secret_env = secret_env
        self._open_logs[id(run)] = logs
        return run

    def worker_count(self, spec: LoadSpec) -> int:
        return spec.workers or auto_workers(spec.target_rps, cores=os.cpu_count() or 1)

    def worker_job_docs(
        self, run: LoadRun, *, template: Path, namespace: str, image: str, master_host: str
    ) -> list[dict[str, Any]]:
        """ConfigMap (locustfile, histogram helper, spec), Secret (secret headers) and the worker Job of
        ``templates/k8s/load/locust-workers.yaml`` for a run started with ``local_workers=False``."""
        from migrate.adapters.manifests import render

        name = re.sub(r"[^a-z0-9-]", "-", f"bpm-load-{run.spec.label}".lower())[:50].strip("-")
        labels = {"app.kubernetes.io/name": "locust-worker", "app.kubernetes.io/managed-by": "bpmigrate"}
        meta = {"namespace": namespace, "labels": labels}
        files = {
            "locustfile_bpm.py": LOCUSTFILE.read_text(),
            "loadhist.py": LOCUSTFILE.with_name("loadhist.py").read_text(),
            "spec.json": run.paths["spec"].read_text(),
        }
        docs: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-files", **meta}, "data": files}
        ]
        if run.secret_env:
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"{name}-headers", **meta},
                    "type": "Opaque",
                    "stringData": dict(run.secret_env),
                }
            )
        values = {
            "name": name,
            "namespace": namespace,
            "image": image,
            "workers": run.workers_expected,
            "master_host": master_host,
            "master_port": run.port,
            "deadline_s": math.ceil(run.spec.duration_s + run.spec.timeout_s + 900),
        }
        return docs + render(template, values)

    # -- results -------------------------------------------------------------------------------------------------
    def read_result(self, spec: LoadSpec, paths: Mapping[str, Path]) -> LoadResult:
        summary_path = paths["summary"]
        try:
            data = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            tail = ""
            try:
                tail = "\n".join(paths["master_log"].read_text(errors="replace").splitlines()[-15:])
            except OSError:
                pass
            raise AdapterError(
                f"the Locust run {spec.label!r} wrote no summary",
                redact(tail) or "the master process ended before the run (see its log)",
                f"read {paths['master_log']} and the worker logs next to it, fix the cause, re-run the step",
                service="locust",
            ) from None
        stats_json = paths["stats_json"]
        html = paths["html"]
        return LoadResult(
            target_rps=spec.target_rps,
            achieved_rps=round(float(data["achieved_rps"]), 2),
            requests=int(data["requests"]),
            failures=int(data["failures"]),
            error_rate=float(data["error_rate"]),
            p50_ms=float(data["p50_ms"]),
            p95_ms=float(data["p95_ms"]),
            p99_ms=float(data["p99_ms"]),
            max_ms=float(data["max_ms"]),
            schedule_lag_p99_ms=float(data["schedule_lag_p99_ms"]),
            generator_saturated=bool(data["generator_saturated"]),
            report_html=str(html) if html.exists() else None,
            stats_json=str(stats_json) if stats_json.exists() else None,
            duration_s=float(data.get("duration_s", 0.0)),
            workers=int(data.get("workers", 0)),
            scheduled=int(data.get("scheduled", 0)),
            issued=int(data.get("issued", 0)),
            schedule_lag_max_ms=float(data.get("schedule_lag_max_ms", 0.0)),
            error_kinds={str(k): int(v) for k, v in dict(data.get("error_kinds") or {}).items()},
            per_request=dict(data.get("per_request") or {}),
            summary_json=str(summary_path),
            complete=bool(data.get("complete", True)),
        )

    def check_spec(self, spec: LoadSpec) -> None:
        """Refuse an invalid spec or a host the HTTP policy does not allow (plans call it too)."""
        problems = []
        if not spec.hosts:
            problems.append("no host")
        if not spec.requests:
            problems.append("no request in the mix")
        if spec.target_rps <= 0 or spec.duration_s <= 0 or spec.timeout_s <= 0:
            problems.append(f"target_rps={spec.target_rps}, duration_s={spec.duration_s}, timeout_s={spec.timeout_s}")
        if any(r.weight < 1 for r in spec.requests):
            problems.append("a request weight < 1")
        if spec.workers < 0:
            problems.append(f"workers={spec.workers}")
        if problems:
            raise ConfigError(
                f"invalid load spec {spec.label!r}: {'; '.join(problems)}",
                "a load run needs hosts, a request mix with weights >= 1, and positive rate, duration and timeout",
                "fix the step's load settings in migrate.toml",
            )
        if self.http is not None:
            for host in spec.hosts:
                self.http.check_target(host)

    # -- internals -----------------------------------------------------------------------------------------------
    @staticmethod
    def _paths(spec: LoadSpec, out_dir: Path) -> dict[str, Path]:
        base = out_dir / spec.label
        return {
            "spec": out_dir / f"{spec.label}-spec.json",
            "summary": out_dir / f"{spec.label}-summary.json",
            "stats_json": out_dir / f"{spec.label}-locust-stats.json",
            "csv_prefix": Path(f"{base}-locust"),
            "html": out_dir / f"{spec.label}-locust-report.html",
            "master_log": out_dir / f"{spec.label}-master.log",
        }

    @staticmethod
    def _wire_requests(spec: LoadSpec) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """The request mix for the spec file, header secrets replaced by names of env vars given to the children."""
        secret_env: dict[str, str] = {}
        wire: list[dict[str, Any]] = []
        for i, req in enumerate(spec.requests):
            headers: dict[str, str] = {}
            secret_headers: dict[str, str] = {}
            for name, value in req.headers.items():
                if _SECRET_REF.search(value):
                    resolved = _resolve_refs(value)
                    var = f"BPM_LOAD_H{len(secret_env)}"
                    secret_env[var] = resolved
                    secret_headers[name] = var
                else:
                    headers[name] = value
            wire.append(
                {
                    "name": req.name or f"request-{i}",
                    "method": req.method.upper(),
                    "path": req.path if req.path.startswith("/") or "://" in req.path else "/" + req.path,
                    "json_body": req.json_body,
                    "weight": int(req.weight),
                    "headers": headers,
                    "secret_headers": secret_headers,
                }
            )
        return secret_env, wire

    def _spawn(self, args: list[str], env: Mapping[str, str], log: Path, logs: list[Any]) -> subprocess.Popen[bytes]:
        """A Locust process under the project's child rules (own process group, parent-death signal, run marker)."""
        from migrate.adapters.proc import spawn

        handle = log.open("wb")
        logs.append(handle)
        proc: subprocess.Popen[bytes] = spawn(
            args, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=handle, stderr=subprocess.STDOUT, service="locust"
        )
        return proc


def resolve_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header values with their ``${ENV}`` references resolved (registered for redaction): for a verify probe."""
    return {k: _resolve_refs(v) if _SECRET_REF.search(v) else v for k, v in headers.items()}


def _resolve_refs(value: str) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        secret = os.environ.get(name)
        if secret is None:
            raise ConfigError(
                f"environment variable {name} is not set",
                "a load-test request header names it (auth_header_env)",
                f"export {name}=... and re-run",
            )
        register(secret)
        return secret

    return _SECRET_REF.sub(one, value)


def requests_from_settings(
    items: Iterable[Mapping[str, Any]], *, auth_header_env: str | None = None
) -> list[RequestSpec]:
    """RequestSpecs from a step's ``requests = [{name, method, path, json, weight, headers}]`` setting."""
    out = []
    for item in items:
        unknown = set(item) - _REQUEST_KEYS
        if unknown:
            raise ConfigError(
                f"request mix entry {dict(item)!r} has unknown key(s) {', '.join(sorted(unknown))}",
                f"an entry of the step's requests setting takes {', '.join(sorted(_REQUEST_KEYS))}",
                "fix the requests setting of the step in migrate.toml",
            )
        headers = {str(k): str(v) for k, v in dict(item.get("headers") or {}).items()}
        if auth_header_env and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = "${" + auth_header_env + "}"
        out.append(
            RequestSpec(
                name=str(item.get("name") or f"{item.get('method', 'GET')} {item.get('path', '/')}"),
                method=str(item.get("method", "GET")).upper(),
                path=str(item.get("path", "/health")),
                json_body=item.get("json", item.get("json_body")),
                weight=int(item.get("weight", 1)),
                headers=headers,
            )
        )
    return out


def from_config(env: EnvConfig, **_: Any) -> LoadAdapter:
    from migrate.adapters.http import from_config as http_from_config

    return LoadAdapter(http_from_config(env))
