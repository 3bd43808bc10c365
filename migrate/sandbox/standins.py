"""Start the sandbox's traffic stand-ins (two app processes and the DNS router) and describe them to the steps.

``bpmigrate sandbox up`` calls :func:`start` for the components ``app-old``, ``app-new`` and ``router`` after the
data servers; :func:`step_settings` is merged into ``endpoints.json`` under ``steps`` so the phase-5 steps reach the
stand-ins through the same settings as production (fences, probe URLs, health URLs) — no step has a sandbox branch.
"""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

from migrate.adapters import localservers as ls

APP_MODULE = "migrate.sandbox.app"
ROUTER_MODULE = "migrate.sandbox.router"
STANDINS = ("app-old", "app-new", "router")


def names(domain: str) -> dict[str, str]:
    """The DNS names of the cutover: the weighted record and the two stacks' targets."""
    return {"record": f"api.{domain}", "old": f"old.{domain}", "new": f"new.{domain}"}


def _pg_url(port: int, dbname: str = "betterprompts") -> str:
    return f"postgresql://{ls.PG_SUPERUSER}@{ls.LOOPBACK}:{port}/{dbname}"


def _redis_url(port: int) -> str:
    return f"redis://{ls.LOOPBACK}:{port}/0"


def config_for(name: str, ports: dict[str, int], domain: str) -> dict[str, Any]:
    """The first configuration of a stand-in (written once; later the fences rewrite the apps' files)."""
    if name == "app-old":
        return {
            "name": "old",
            "database_url": _pg_url(ports["pg-source"]),
            "redis_url": _redis_url(ports["redis-source"]),
            "maintenance": False,
            "create_schema": True,
            "primary": True,
            "generation": 1,
        }
    if name == "app-new":
        return {
            "name": "new",
            "database_url": _pg_url(ports["pg-target"]),
            "redis_url": _redis_url(ports["redis-target"]),
            "maintenance": False,
            "create_schema": False,
            "primary": False,  # a replication subscriber until data-switch points it: writes go to a shadow table
            "generation": 1,
        }
    n = names(domain)
    return {
        "aws_endpoint_url": f"http://{ls.LOOPBACK}:{ports['moto']}",
        "region": "us-east-1",
        "record_name": n["record"],
        "backends": {n["old"]: url(ports["app-old"]), n["new"]: url(ports["app-new"])},
        "default": n["old"],
        "refresh_s": 1.0,
    }


def url(port: int) -> str:
    return f"http://{ls.LOOPBACK}:{port}"


def _answers(port: int, path: str = "/health") -> bool:
    with urllib.request.urlopen(f"{url(port)}{path}", timeout=2) as resp:
        return int(resp.status) == 200


def start(name: str, folder: Path, port: int | None, ports: dict[str, int], domain: str) -> tuple[int, int]:
    """Start one stand-in (keeps running after this process); returns (pid, port)."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    cfg_file = folder / ("router.json" if name == "router" else "config.json")
    if name == "router" or not cfg_file.exists():  # the apps keep the configuration the fences wrote
        cfg_file.write_text(json.dumps(config_for(name, ports, domain), indent=2))
    module = ROUTER_MODULE if name == "router" else APP_MODULE
    log_path = folder / f"{name}.log"
    probe_path = "/_router" if name == "router" else "/health"
    root = Path(__file__).resolve().parents[2]

    def starter(chosen: int) -> tuple[int, int]:
        argv = [sys.executable, "-m", module, "--config", str(cfg_file), "--port", str(chosen)]
        proc = ls._spawn(argv, log_path=log_path, keep_running=True, cwd=root, env={"PYTHONUNBUFFERED": "1"})
        ls.write_record(folder, name, proc.pid, chosen)
        try:
            ls._wait_until(
                lambda: _answers(chosen, probe_path),
                proc,
                what=f"{name} on port {chosen}",
                log_path=log_path,
                timeout=30,
            )
        except ls._StartFailed:
            ls.stop_pid(proc.pid, 5.0, sig=signal.SIGKILL)
            raise
        return proc.pid, chosen

    result: tuple[int, int] = ls._start_with_port_retry(port, starter, name)
    return result


def ping(name: str, port: int | None) -> bool:
    if port is None:
        return False
    try:
        return _answers(port, "/_router" if name == "router" else "/health")
    except Exception:
        return False


def step_settings(data_dir: Path, ports: dict[str, int], domain: str) -> dict[str, dict[str, Any]]:
    """Per-step settings pointing the phase-5/6 steps at the stand-ins (merged into endpoints.json ``steps``)."""
    if not all(k in ports for k in STANDINS):
        return {}
    n = names(domain)
    old, new, router = url(ports["app-old"]), url(ports["app-new"]), url(ports["router"])
    fences = [
        {"name": "old", "kind": "process", "config_file": str((data_dir / "app-old" / "config.json").resolve())},
        {"name": "new", "kind": "process", "config_file": str((data_dir / "app-new" / "config.json").resolve())},
    ]
    return {
        "app-smoke": {"endpoints": {"api-gateway": new}},
        "pre-cutover-check": {"health_urls": [f"{old}/health", f"{new}/health"]},
        "data-switch": {"fences": fences},
        "dns-cutover": {
            "record_name": n["record"],
            "old_target": n["old"],
            "new_target": n["new"],
            "direct_urls": [f"{new}/health"],
            "record_urls": [f"{router}/health"],
            "min_sample": 300,
            "max_p95_ms": 1000.0,  # stdlib processes on a shared laptop: the SLO of production would flap here
            "sample_rps": 150.0,
            "soak_s": 2.0,
            "probe_interval_s": 1.0,
            "low_ttl": 1,
            "insync_poll_s": 0.2,
            "bake_time_s": 600.0,
        },
        "post-cutover-watch": {"window_s": 5.0, "interval_s": 1.0, "max_p95_ms": 1000.0},
        "decommission": {
            "old_stack": {"kind": "process", "config_file": str((data_dir / "app-old" / "config.json").resolve())},
            "reverse_stream": "stop",  # the rehearsal ends the way back on purpose (production keeps "keep")
        },
    }
