"""Writer fences: stop an application stack's writes, point it at another database, let it write again.

``data-switch`` keeps one writer at every instant with these: every stack that can write is fenced (``on``),
replication catches up, the stacks are pointed at the new primary (``point``) and released (``off``). Its
rollback runs the same three calls the other way. Kinds:

``compose``  the old host's Docker Compose project: ``on`` = ``docker compose stop <services>``; ``point`` writes
             an override file (``docker-compose.bpmigrate.yml`` next to the Compose file) whose ``environment``
             sets DATABASE_URL/REDIS_URL (templates: a ``${VAR}`` the step does not know, e.g. a password variable,
             is left for Compose to interpolate on the host — no secret is written); ``off`` = ``docker compose -f
             <file> -f <override> up -d <services>``. ``docker_host`` (``ssh://...``) drives a remote engine.
``http``     the app's own maintenance switch: POST ``on_url`` (must answer once in-flight writes finished), POST
             ``repoint_url`` with ``{"database_url", "redis_url"}``, POST ``off_url``.
``process``  a local process configured by a JSON file (the sandbox's stand-ins): the fence rewrites the file
             (``maintenance``, ``database_url``, ``redis_url``, a bumped ``generation``) and waits until the process
             acknowledges the generation in ``status.json`` next to it (in-flight writes done, new connections).

The scale kind (Kubernetes Deployments to 0 replicas) lives with the step helpers (it needs the kube adapter).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.errors import ConfigError, StepFailed

STATUS_FILE = "status.json"
OVERRIDE_NAME = "docker-compose.bpmigrate.yml"


# -- the process kind's file protocol (also used by migrate.sandbox.app) -------------------------------------------
def write_config(path: Path, **values: Any) -> int:
    """Merge ``values`` into a JSON config file atomically, bumping ``generation``; returns the new generation."""
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}
    current.update(values)
    current["generation"] = int(current.get("generation", 0)) + 1
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(current, indent=2))
    os.replace(tmp, path)
    return int(current["generation"])


def read_config(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def read_status(config_path: Path) -> dict[str, Any]:
    return read_config(config_path.parent / STATUS_FILE)


@dataclass(frozen=True)
class DataTarget:
    """Where a stack should read and write: the connection URLs (templates already substituted; no secrets)."""

    role: str  # source | target
    env: dict[str, str] = field(default_factory=dict)  # DATABASE_URL, REDIS_URL, ...

    @property
    def database_url(self) -> str:
        return self.env.get("DATABASE_URL", "")

    @property
    def redis_url(self) -> str:
        return self.env.get("REDIS_URL", "")


class Fence:
    kind = ""

    def __init__(self, name: str, raw: dict[str, Any], timeout: float) -> None:
        self.name = name
        self.raw = raw
        self.timeout = timeout

    def describe(self) -> str:
        return f"{self.name} ({self.kind})"

    def on(self) -> None:
        raise NotImplementedError

    def point(self, target: DataTarget) -> None:
        raise NotImplementedError

    def off(self) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """What the stack is configured with now (for verify); {} when it cannot be read."""
        return {}


class ProcessFence(Fence):
    kind = "process"

    def __init__(self, name: str, raw: dict[str, Any], timeout: float) -> None:
        super().__init__(name, raw, timeout)
        if not raw.get("config_file"):
            raise ConfigError(
                f"fence {name}: kind process needs config_file",
                "the fence rewrites the process's JSON configuration and waits for its acknowledgement",
                f'set {{name = "{name}", kind = "process", config_file = "..."}} under [steps.data-switch] fences',
            )
        self.config_file = Path(str(raw["config_file"]))

    def describe(self) -> str:
        return f"{self.name} (process, {self.config_file})"

    def _set(self, what: str, **values: Any) -> None:
        generation = write_config(self.config_file, **values)
        deadline = time.monotonic() + self.timeout
        while True:
            status = read_status(self.config_file)
            if int(status.get("generation", -1)) >= generation:
                return
            if time.monotonic() >= deadline:
                raise StepFailed(
                    f"fence {self.name}: the process did not acknowledge '{what}' within {self.timeout:g}s",
                    f"{self.config_file.parent / STATUS_FILE} shows generation {status.get('generation')}, "
                    f"expected {generation}: the process is down or stuck",
                    "check the process (`bpmigrate sandbox status` in the sandbox) and re-run the step",
                )
            time.sleep(0.02)

    def on(self) -> None:
        self._set("maintenance on", maintenance=True)

    def point(self, target: DataTarget) -> None:
        self._set(
            f"point at the {target.role}",
            database_url=target.database_url,
            redis_url=target.redis_url,
            primary=True,  # the stack now writes to the primary (before: a replica's shadow, see the sandbox app)
        )

    def off(self) -> None:
        self._set("maintenance off", maintenance=False)

    def state(self) -> dict[str, Any]:
        cfg = read_config(self.config_file)
        return {"database_url": cfg.get("database_url"), "maintenance": cfg.get("maintenance")}


class HttpFence(Fence):
    kind = "http"

    def __init__(self, name: str, raw: dict[str, Any], timeout: float, http: Any) -> None:
        super().__init__(name, raw, timeout)
        self.http = http
        self.on_url = str(raw.get("on_url", ""))
        self.off_url = str(raw.get("off_url", ""))
        self.repoint_url = str(raw.get("repoint_url", ""))
        if not (self.on_url and self.off_url):
            raise ConfigError(
                f"fence {name}: kind http needs on_url and off_url",
                "the switch must be able to both enter and leave maintenance",
                f'set {{name = "{name}", kind = "http", on_url = "...", off_url = "...", repoint_url = "..."}}',
            )

    def describe(self) -> str:
        return f"{self.name} (http, {self.on_url})"

    def _post(self, url: str, what: str, body: Any = None) -> None:
        resp = (
            self.http.post(url, json_body=body, timeout=self.timeout)
            if body is not None
            else self.http.post(url, timeout=self.timeout)
        )
        if not resp.ok:
            raise StepFailed(
                f"fence {self.name}: {what}: POST {url} answered HTTP {resp.status}",
                resp.body[:200],
                f"check the endpoint ({url}) and re-run the step",
            )

    def on(self) -> None:
        self._post(self.on_url, "maintenance on")

    def point(self, target: DataTarget) -> None:
        if self.repoint_url:
            self._post(
                self.repoint_url,
                f"point at the {target.role}",
                {"database_url": target.database_url, "redis_url": target.redis_url},
            )

    def off(self) -> None:
        self._post(self.off_url, "maintenance off")


class ComposeFence(Fence):
    kind = "compose"

    def __init__(self, name: str, raw: dict[str, Any], timeout: float, proc: Any) -> None:
        super().__init__(name, raw, timeout)
        self.proc = proc
        self.compose_file = Path(str(raw.get("compose_file", "")))
        self.project = str(raw.get("project", "") or "")
        self.services = [str(s) for s in raw.get("services", []) or []]
        self.docker_host = str(raw.get("docker_host", "") or "")
        if not raw.get("compose_file") or not self.services:
            raise ConfigError(
                f"fence {name}: kind compose needs compose_file and services",
                "the fence stops and restarts exactly the services that write to the databases",
                f'set {{name = "{name}", kind = "compose", compose_file = "/srv/app/docker-compose.yml", '
                'services = ["api-gateway", "prompt-generator"]}}',
            )
        self.override = self.compose_file.parent / OVERRIDE_NAME

    def describe(self) -> str:
        return f"{self.name} (compose {self.compose_file}: {', '.join(self.services)})"

    def _compose(self, *args: str) -> None:
        argv = ["docker", "compose", "-f", str(self.compose_file)]
        if self.override.exists():
            argv += ["-f", str(self.override)]
        if self.project:
            argv += ["-p", self.project]
        env = {"DOCKER_HOST": self.docker_host} if self.docker_host else None
        result = self.proc.run([*argv, *args], timeout=self.timeout, env=env, check=False)
        if result.returncode != 0:
            raise StepFailed(
                f"fence {self.name}: `docker compose {' '.join(args)}` failed (exit {result.returncode})",
                (result.stderr or result.stdout or "")[-400:],
                f"fix the Compose host ({self.docker_host or 'local engine'}) and re-run the step",
            )

    def on(self) -> None:
        self._compose("stop", *self.services)

    def point(self, target: DataTarget) -> None:
        doc = {"services": {svc: {"environment": dict(target.env)} for svc in self.services}}
        tmp = self.override.with_name(f".{OVERRIDE_NAME}.tmp")
        tmp.write_text(json.dumps(doc, indent=2))  # JSON is YAML: Compose reads it
        os.replace(tmp, self.override)

    def off(self) -> None:
        self._compose("up", "-d", *self.services)

    def state(self) -> dict[str, Any]:
        doc = read_config(self.override)
        services = doc.get("services") or {}
        first: dict[str, Any] = next(iter(services.values()), {}) if services else {}
        return {"database_url": (first.get("environment") or {}).get("DATABASE_URL")}


def build(name: str, raw: dict[str, Any], *, http: Any = None, proc: Any = None) -> Fence:
    kind = str(raw.get("kind", ""))
    timeout = float(raw.get("timeout_s", 120))
    if kind == "process":
        return ProcessFence(name, raw, timeout)
    if kind == "http":
        return HttpFence(name, raw, timeout, http)
    if kind == "compose":
        return ComposeFence(name, raw, timeout, proc)
    raise ConfigError(
        f"fence {name}: kind {kind!r} is not known",
        "a writer fence is compose (the old host's Docker Compose), http (the app's maintenance URLs), process "
        "(a local process configured by a JSON file) or scale (Kubernetes Deployments to 0)",
        f'set kind = "compose" | "http" | "process" | "scale" for fence {name} under [steps.data-switch] fences',
    )


def stop_process(config_file: Path, timeout: float = 20.0) -> int | None:
    """Stop a ``process``-kind stack for good (decommission): the pid recorded next to its config (``server.json``,
    written when it was started). Returns the pid stopped, None when it was not running."""
    from migrate.adapters import localservers as ls

    record = ls.read_record(config_file.parent) or {}
    pid = record.get("pid")
    if not pid or not ls.is_alive(int(pid)):
        return None
    ls.stop_pid(int(pid), timeout)
    return int(pid)


def process_alive(config_file: Path) -> bool:
    from migrate.adapters import localservers as ls

    pid = (ls.read_record(config_file.parent) or {}).get("pid")
    return pid is not None and ls.is_alive(int(pid))
