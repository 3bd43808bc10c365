"""Sandbox lifecycle as library functions: up, down, status, seed, reset. They return result objects; the typer
layer (:mod:`migrate.sandbox.cli`) only parses, calls and renders.

Layout (``<state>`` = the project's state dir, ``<data>`` = ``[environments.<env>] sandbox.data_dir`` or
``<state>/<env>``; ``sandbox.fsync = false`` trades crash safety of the sandbox's PostgreSQL for speed — tests only)::

    <state>/<env>/endpoints.json         endpoints + PIDs (merged over the env by migrate.config.load)
    <state>/<env>/terraform.tfvars.json  variables of the stand-in Terraform root (templates/sandbox/terraform)
    <state>/<env>/sandbox.lock           serialises concurrent up/down/reset
    <data>/{moto,pg-source,pg-target,redis-source,redis-target}/   server data, logs, server.json (pid, port)

Data policy: ``down`` stops every process and KEEPS the PostgreSQL clusters and the Redis RDB files (``up`` brings
them back on the same ports when free). moto keeps its state in memory only: AWS resources do not survive ``down``.
``down --wipe`` and ``reset`` also delete the data, the stand-in Terraform state and archive the env's SQLite ledger
(to ``<state>/archive/``), so the next ``apply --all`` rehearses from scratch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.adapters import localservers as ls
from migrate.errors import AdapterError, UsageError

if TYPE_CHECKING:
    from migrate.config import Config, EnvConfig

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Component:
    name: str  # key in sandbox.pids and the data sub-directory
    kind: str  # postgres | redis | moto
    role: str  # human description
    expect: str  # substring of the process command line (guards against PID reuse)


COMPONENTS: tuple[Component, ...] = (
    Component("moto", "moto", "AWS (moto server)", "moto"),
    Component("pg-source", "postgres", "source PostgreSQL (Compose)", "postgres"),
    Component("pg-target", "postgres", "target PostgreSQL (RDS)", "postgres"),
    Component("redis-source", "redis", "source Redis (Compose, DBs 0-2)", "redis-server"),
    Component("redis-target", "redis", "target Redis (ElastiCache)", "redis-server"),
    # traffic stand-ins (migrate/sandbox/standins.py): started after the data servers they use
    Component("app-old", "app", "old app stack (Compose stand-in)", "migrate.sandbox.app"),
    Component("app-new", "app", "new app stack (EKS stand-in)", "migrate.sandbox.app"),
    Component("router", "router", "DNS router (Route53 weights)", "migrate.sandbox.router"),
)


@dataclass(frozen=True)
class SandboxPaths:
    env_dir: Path
    data_dir: Path
    endpoints: Path
    tfvars: Path
    lock: Path
    terraform_state: Path
    ledger: Path | None  # the env's SQLite ledger file when the default URL is used


@dataclass
class ComponentStatus:
    name: str
    role: str
    kind: str
    pid: int | None
    port: int | None
    endpoint: str
    alive: bool
    answers: bool
    action: str = ""  # up: started | adopted | restarted ; down: stopped | not running

    @property
    def ok(self) -> bool:
        return self.alive and self.answers


@dataclass
class SandboxStatus:
    env: str
    state: str  # up | down | degraded | absent
    data_dir: str
    endpoints_file: str
    started_at: str | None
    components: list[ComponentStatus] = field(default_factory=list)
    seeded: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    already_up: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for comp, raw in zip(self.components, out["components"], strict=True):
            raw["ok"] = comp.ok
        return out


@dataclass
class SeedResult:
    env: str
    postgres: dict[str, Any]
    redis: dict[str, Any]
    seconds: float

    @property
    def skipped(self) -> bool:
        return bool(self.postgres.get("skipped")) and bool(self.redis.get("skipped"))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skipped": self.skipped}


# ---------------------------------------------------------------------------------------------------------------
# paths, files, lock
# ---------------------------------------------------------------------------------------------------------------
def sandbox_env(config: Config, env_name: str) -> EnvConfig:
    env = config.env(env_name)
    if env.kind != "sandbox":
        names = [n for n, e in config.environments.items() if e.kind == "sandbox"]
        raise UsageError(
            f"environment {env.name!r} is not a sandbox (kind = {env.kind!r})",
            '`bpmigrate sandbox ...` only manages local rehearsal environments (kind = "sandbox" in migrate.toml); '
            f"sandboxes: {', '.join(names) or 'none defined'}",
            f"bpmigrate sandbox up --env {names[0]}"
            if names
            else f'add an environment with kind = "sandbox" to {config.path}',
        )
    return env


def paths(config: Config, env_name: str) -> SandboxPaths:
    env = sandbox_env(config, env_name)
    env_dir = config.state_dir / env.name
    configured = env.sandbox.get("data_dir")
    if configured:
        data_dir = Path(str(configured))
        if not data_dir.is_absolute():
            data_dir = (config.root / data_dir).resolve()
    else:
        data_dir = env_dir
    ledger: Path | None = None
    url = config.ledger_url(env.name)
    if url.startswith("sqlite:///"):
        ledger = Path(url.removeprefix("sqlite:///"))
    return SandboxPaths(
        env_dir=env_dir,
        data_dir=data_dir,
        endpoints=env_dir / "endpoints.json",
        tfvars=env_dir / "terraform.tfvars.json",
        lock=env_dir / "sandbox.lock",
        terraform_state=env_dir / "terraform",
        ledger=ledger,
    )


@contextlib.contextmanager
def _locked(p: SandboxPaths, *, wait: float = 120.0) -> Iterator[None]:
    p.env_dir.mkdir(parents=True, exist_ok=True)
    with open(p.lock, "a+") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise UsageError(
                        f"another `bpmigrate sandbox` command holds {p.lock}",
                        "up/down/reset of one sandbox run one at a time",
                        "wait for it to finish, then retry",
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _recorded(p: SandboxPaths, endpoints: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per component: {"pid", "port"} from endpoints.json, or from the server's own record when that is newer."""
    out: dict[str, dict[str, Any]] = {}
    sandbox = (endpoints or {}).get("sandbox", {}) if endpoints else {}
    pids = sandbox.get("pids", {}) if isinstance(sandbox, dict) else {}
    ports = sandbox.get("ports", {}) if isinstance(sandbox, dict) else {}
    data_dir = Path(str(sandbox.get("data_dir"))) if isinstance(sandbox, dict) and sandbox.get("data_dir") else None
    for comp in COMPONENTS:
        entry: dict[str, Any] = {"pid": pids.get(comp.name), "port": ports.get(comp.name)}
        for folder in {p.data_dir, data_dir} - {None}:
            assert folder is not None
            record = ls.read_record(folder / comp.name)
            if (
                record
                and record.get("pid")
                and record.get("pid") != entry["pid"]
                and ls.is_alive(record["pid"], comp.expect)
            ):
                entry = {"pid": record["pid"], "port": record.get("port")}  # a server started by a crashed `up`
        out[comp.name] = entry
    return out


def _endpoint(comp: Component, port: int | None, endpoints: dict[str, Any] | None) -> str:
    if port is None:
        return "-"
    if comp.kind in ("app", "router"):
        return f"http://{ls.LOOPBACK}:{port}"
    if comp.kind == "moto":
        return f"http://{ls.LOOPBACK}:{port}"
    if comp.kind == "postgres":
        role = "source" if comp.name == "pg-source" else "target"
        dbname = ((endpoints or {}).get("postgres", {}).get(role, {}) or {}).get("dbname", "betterprompts")
        return f"postgresql://postgres@{ls.LOOPBACK}:{port}/{dbname}"
    if comp.name == "redis-target" and ((endpoints or {}).get("redis", {}).get("target") or {}).get("cluster_mode"):
        return f"redis://{ls.LOOPBACK}:{port} (cluster)"
    return f"redis://{ls.LOOPBACK}:{port}"


def _ping(comp: Component, port: int | None) -> bool:
    if port is None:
        return False
    if comp.kind in ("app", "router"):
        from migrate.sandbox import standins

        return standins.ping(comp.name, port)
    if comp.kind == "moto":
        return ls.ping_http(f"http://{ls.LOOPBACK}:{port}/moto-api/")
    if comp.kind == "postgres":
        return ls.ping_postgres(ls.LOOPBACK, port)
    return ls.ping_redis(ls.LOOPBACK, port)


# ---------------------------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------------------------
def status(config: Config, env_name: str, *, with_seed: bool = True) -> SandboxStatus:
    """Read endpoints.json, check every PID and ping every server; works from any shell."""
    p = paths(config, env_name)
    endpoints = _read_json(p.endpoints)
    recorded = _recorded(p, endpoints)
    sandbox = (endpoints or {}).get("sandbox", {})
    result = SandboxStatus(
        env=env_name,
        state="absent",
        data_dir=str(sandbox.get("data_dir") or p.data_dir),
        endpoints_file=str(p.endpoints),
        started_at=sandbox.get("started_at"),
    )
    for comp in COMPONENTS:
        pid, port = recorded[comp.name].get("pid"), recorded[comp.name].get("port")
        alive = ls.is_alive(pid, comp.expect)
        result.components.append(
            ComponentStatus(
                comp.name,
                comp.role,
                comp.kind,
                pid if alive else None,
                port,
                _endpoint(comp, port, endpoints),
                alive,
                alive and _ping(comp, port),
            )
        )
    oks = [c.ok for c in result.components]
    if endpoints is None and not any(c.alive for c in result.components):
        result.state = "absent"
        result.notes.append("the sandbox was never started here: bpmigrate sandbox up")
    elif all(oks):
        result.state = "up"
    elif not any(c.alive for c in result.components):
        result.state = "down"
        result.notes.append(f"stopped; data kept in {result.data_dir} — start it again: bpmigrate sandbox up")
    else:
        result.state = "degraded"
        bad = ", ".join(c.name for c in result.components if not c.ok)
        result.notes.append(f"not answering: {bad} — repair with `bpmigrate sandbox up` (restarts only those)")
    if with_seed and result.state == "up":
        result.seeded = _seed_info(result)
    return result


def _seed_info(st: SandboxStatus) -> dict[str, Any] | None:
    from migrate.adapters import sandbox_seed

    by_name = {c.name: c for c in st.components}
    pg, rd = by_name["pg-source"], by_name["redis-source"]
    try:
        pg_info = sandbox_seed.pg_seed_info(pg.endpoint) if pg.ok else None
        rd_info = sandbox_seed.redis_seed_info(ls.LOOPBACK, rd.port) if rd.ok and rd.port else None
    except AdapterError:
        return None
    if pg_info is None and rd_info is None:
        return None
    return {"postgres": pg_info, "redis": rd_info}


# ---------------------------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------------------------
def _start(
    comp: Component,
    folder: Path,
    port: int | None,
    *,
    fsync: bool = True,
    ports: dict[str, int] | None = None,
    domain: str = "",
    redis_cluster: bool = False,
) -> tuple[int, int]:
    if comp.kind in ("app", "router"):
        from migrate.sandbox import standins

        return standins.start(comp.name, folder, port, dict(ports or {}), domain)
    if comp.kind == "moto":
        moto = ls.start_moto(folder, port=port, keep_running=True)
        return moto.pid, moto.port
    if comp.kind == "postgres":
        pg = ls.start_postgres(folder, port=port, fsync=fsync, keep_running=True)
        return pg.pid, pg.port
    if redis_cluster:  # three primaries in folder/node-<i>; the first node's port is the one recorded
        cluster = ls.start_redis_cluster(folder, persist=True, keep_running=True)
        return cluster.pid, cluster.port
    rd = ls.start_redis(folder, port=port, persist=True, keep_running=True)
    return rd.pid, rd.port


def _stop(comp: Component, pid: int, folder: Path | None = None) -> None:
    import signal

    sig = signal.SIGINT if comp.kind == "postgres" else signal.SIGTERM
    ls.stop_pid(pid, 60.0 if comp.kind == "postgres" else 30.0, sig=sig)
    if comp.kind == "redis" and folder is not None:
        ls.stop_redis_cluster(folder)  # the other nodes of a cluster


def redis_topology(config: Config, env: EnvConfig) -> tuple[str, str]:
    """("cluster" | "single", why) for the sandbox's target Redis.

    ``[environments.<sandbox>] sandbox = { redis_topology = "auto" | "cluster" | "single" }`` (or
    ``BPMIGRATE_SANDBOX_REDIS_TOPOLOGY``); "auto" (the default) rehearses what production will meet: the
    ``cluster_mode`` of the production environment's redis.target (else of any AWS environment's)."""
    chosen = os.environ.get("BPMIGRATE_SANDBOX_REDIS_TOPOLOGY") or str(env.sandbox.get("redis_topology") or "auto")
    if chosen in ("cluster", "single"):
        source = (
            "BPMIGRATE_SANDBOX_REDIS_TOPOLOGY"
            if os.environ.get("BPMIGRATE_SANDBOX_REDIS_TOPOLOGY")
            else (f"[environments.{env.name}] sandbox.redis_topology")
        )
        return chosen, f"{source} = {chosen!r}"
    real = [e for e in config.environments.values() if e.kind != "sandbox" and "target" in e.redis]
    mirrored = [e for e in real if e.name == "production"] or real
    if not mirrored:
        return "single", "no AWS environment defines redis.target"
    clustered = [e.name for e in mirrored if e.redis["target"].cluster_mode]
    if clustered:
        return "cluster", f"auto: {', '.join(clustered)} redis.target has cluster_mode = true"
    return "single", f"auto: {', '.join(e.name for e in mirrored)} redis.target has cluster_mode = false"


def _running_topology(folder: Path) -> str | None:
    record = ls.read_record(folder) or {}
    kind = record.get("kind")
    return "cluster" if kind == "redis-cluster" else "single" if kind == "redis" else None


def _endpoints_doc(
    config: Config,
    env: EnvConfig,
    p: SandboxPaths,
    pids: dict[str, int],
    ports: dict[str, int],
    state: str,
    started_at: str,
) -> dict[str, Any]:
    from migrate.adapters.localservers import pg_bin_dir

    bin_dir = str(pg_bin_dir(16))
    doc: dict[str, Any] = {
        "aws": {},
        "postgres": {},
        "redis": {},
        "sandbox": {
            "state": state,
            "pids": pids,
            "ports": ports,
            "data_dir": str(p.data_dir),
            "started_at": started_at,
            "updated_at": _now(),
            "aws_state": "in-memory (moto): lost on `sandbox down`",
        },
    }
    if "moto" in ports:
        doc["aws"]["endpoint_url"] = f"http://{ls.LOOPBACK}:{ports['moto']}"
    for name, role in (("pg-source", "source"), ("pg-target", "target")):
        if name in ports:
            doc["postgres"][role] = {
                "host": ls.LOOPBACK,
                "port": ports[name],
                "user": ls.PG_SUPERUSER,
                "dbname": "betterprompts",
                "bin_dir": bin_dir,
            }
    if "redis-source" in ports:
        doc["redis"]["source"] = {"host": ls.LOOPBACK, "port": ports["redis-source"], "dbs": [0, 1, 2]}
    if "redis-target" in ports:
        clustered = _running_topology(p.data_dir / "redis-target") == "cluster"
        doc["redis"]["target"] = {"host": ls.LOOPBACK, "port": ports["redis-target"], "cluster_mode": clustered}
        topology, why = redis_topology(config, env)
        nodes = [n["port"] for n in (ls.read_record(p.data_dir / "redis-target") or {}).get("nodes", [])]
        doc["sandbox"]["redis_target"] = {"topology": topology, "why": why, "nodes": nodes}
    from migrate.sandbox import standins

    stand_in_steps = standins.step_settings(p.data_dir, ports, env.domain)
    if stand_in_steps:
        doc["steps"] = stand_in_steps
    return doc


def _tfvars(env: EnvConfig, ports: dict[str, int]) -> dict[str, Any]:
    return {
        "pg_target_host": ls.LOOPBACK,
        "pg_target_port": ports["pg-target"],
        "redis_target_host": ls.LOOPBACK,
        "redis_target_port": ports["redis-target"],
        "aws_endpoint_url": f"http://{ls.LOOPBACK}:{ports['moto']}",
        "env_name": env.name,
    }


def up(config: Config, env_name: str, *, progress: Progress | None = None) -> SandboxStatus:
    """Start whatever is not running (adopting what is), record endpoints + PIDs, write the tfvars. Idempotent."""
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    env = sandbox_env(config, env_name)
    p = paths(config, env_name)
    with _locked(p):
        endpoints = _read_json(p.endpoints)
        prev_sandbox = (endpoints or {}).get("sandbox", {})
        recorded = _recorded(p, endpoints)
        was_down = endpoints is not None and prev_sandbox.get("state") == "down"
        pids: dict[str, int] = {}
        ports: dict[str, int] = {}
        actions: dict[str, str] = {}
        started_at = prev_sandbox.get("started_at") if prev_sandbox.get("state") == "up" else None
        started_at = started_at or _now()
        p.data_dir.mkdir(parents=True, exist_ok=True)
        topology, why = redis_topology(config, env)
        for comp in COMPONENTS:
            pid, port = recorded[comp.name].get("pid"), recorded[comp.name].get("port")
            running = _running_topology(p.data_dir / comp.name) if comp.name == "redis-target" else None
            switch = running is not None and running != topology
            if ls.is_alive(pid, comp.expect) and _ping(comp, port) and not switch:
                assert pid is not None and port is not None
                pids[comp.name], ports[comp.name] = int(pid), int(port)
                actions[comp.name] = "adopted"
                continue
            if comp.kind == "redis":
                ls.stop_redis_cluster(p.data_dir / comp.name)  # nodes left by a crashed or degraded cluster
            if ls.is_alive(pid, comp.expect):
                assert pid is not None
                if switch:
                    say(f"{comp.name}: switching from {running} to {topology} ({why})")
                else:
                    say(f"{comp.name}: pid {pid} runs but does not answer; restarting it")
                _stop(comp, int(pid), p.data_dir / comp.name)
                actions[comp.name] = "restarted"
            else:
                actions[comp.name] = "started"
            reuse = int(port) if port and ls.port_is_free(int(port)) else None
            clustered = comp.name == "redis-target" and topology == "cluster"
            say(f"starting {comp.role}{' as a 3-primary Redis Cluster' if clustered else ''} ...")
            new_pid, new_port = _start(
                comp,
                p.data_dir / comp.name,
                reuse,
                fsync=bool(env.sandbox.get("fsync", True)),
                ports=ports,
                domain=env.domain,
                redis_cluster=clustered,
            )
            pids[comp.name], ports[comp.name] = new_pid, new_port
            # record after every start: a crash of this command leaves nothing unrecorded
            _write_json(p.endpoints, _endpoints_doc(config, env, p, pids, ports, "starting", started_at))
        _write_json(p.endpoints, _endpoints_doc(config, env, p, pids, ports, "up", started_at))
        _write_json(p.tfvars, _tfvars(env, ports))
    result = status(config, env_name)
    result.seconds = round(time.perf_counter() - started, 3)
    result.already_up = all(a == "adopted" for a in actions.values())
    for item in result.components:
        item.action = actions.get(item.name, "")
    if was_down and any(a != "adopted" for a in actions.values()):
        result.notes.append(
            "moto (AWS) state does not survive `sandbox down`: steps that created AWS resources will fail verify "
            "until re-applied; for a clean rehearsal run `bpmigrate sandbox reset`"
        )
    if result.state != "up":
        bad = ", ".join(c.name for c in result.components if not c.ok)
        raise AdapterError(
            f"sandbox started but {bad} does not answer",
            "a server died right after starting (see its log in the data directory)",
            f"check the logs under {p.data_dir}, then run `bpmigrate sandbox up` again",
            service="sandbox",
        )
    return result


# ---------------------------------------------------------------------------------------------------------------
# down / reset
# ---------------------------------------------------------------------------------------------------------------
def down(config: Config, env_name: str, *, wipe: bool = False, progress: Progress | None = None) -> SandboxStatus:
    """Stop every sandbox process (by recorded PID, then verified dead). ``wipe`` also deletes data (see module doc)."""
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    env = sandbox_env(config, env_name)
    p = paths(config, env_name)
    with _locked(p):
        endpoints = _read_json(p.endpoints)
        recorded = _recorded(p, endpoints)
        actions: dict[str, str] = {}
        for comp in reversed(COMPONENTS):
            pid = recorded[comp.name].get("pid")
            if ls.is_alive(pid, comp.expect):
                assert pid is not None
                say(f"stopping {comp.role} (pid {pid}) ...")
                _stop(comp, int(pid), p.data_dir / comp.name)
                actions[comp.name] = "stopped"
            elif comp.kind == "redis" and ls.stop_redis_cluster(p.data_dir / comp.name):
                actions[comp.name] = "stopped"  # the first node had died: its peers are stopped all the same
            else:
                actions[comp.name] = "not running"
        still = [c.name for c in COMPONENTS if ls.is_alive(recorded[c.name].get("pid"), c.expect)]
        if still:
            raise AdapterError(
                f"sandbox processes still running after stop: {', '.join(still)}",
                "they ignored SIGTERM/SIGINT and SIGKILL",
                "inspect them with `bpmigrate sandbox status` and `ps`, then retry `bpmigrate sandbox down`",
                service="sandbox",
            )
        data_dir = Path(str((endpoints or {}).get("sandbox", {}).get("data_dir") or p.data_dir))
        if endpoints is not None and not wipe:
            sandbox = dict(endpoints.get("sandbox", {}))
            sandbox.update(state="down", pids={}, stopped_at=_now())
            _write_json(p.endpoints, {**endpoints, "sandbox": sandbox})
        notes: list[str] = []
        if wipe:
            notes += _wipe(p, data_dir, env.name, say)
    result = status(config, env_name, with_seed=False)
    result.seconds = round(time.perf_counter() - started, 3)
    for item in result.components:
        item.action = actions.get(item.name, "")
    result.notes = notes + (
        [] if wipe else [f"data kept in {data_dir} (moto/AWS state is in memory and is gone); `down --wipe` deletes it"]
    )
    return result


def _wipe(p: SandboxPaths, data_dir: Path, env_name: str, say: Progress) -> list[str]:
    notes: list[str] = []
    for comp in COMPONENTS:
        for folder in {data_dir / comp.name, p.data_dir / comp.name}:
            if folder.exists():
                say(f"deleting {folder}")
                ls.remove_tree(folder)
    for path in (p.endpoints, p.tfvars):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if p.terraform_state.exists():
        shutil.rmtree(p.terraform_state)
        notes.append(f"deleted the stand-in Terraform state {p.terraform_state}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    artifacts = p.env_dir / "artifacts"  # backups, saved plans, reports: they belong to the archived ledger
    if artifacts.is_dir() and any(artifacts.iterdir()):
        archive = (p.ledger.parent if p.ledger is not None else p.env_dir.parent) / "archive"
        archive.mkdir(parents=True, exist_ok=True)
        os.replace(artifacts, archive / f"{env_name}-{stamp}-artifacts")
        notes.append(
            f"archived the artifacts (backups, saved plans, reports) to {archive / f'{env_name}-{stamp}-artifacts'}, "
            "beside the ledger they belong to: nothing of the old rehearsal is reused"
        )
    if p.ledger is not None and p.ledger.exists():
        archive = p.ledger.parent / "archive"
        archive.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):
            src = Path(f"{p.ledger}{suffix}")
            if src.exists():
                os.replace(src, archive / f"{env_name}-{stamp}.db{suffix}")
        notes.append(f"archived the ledger to {archive / f'{env_name}-{stamp}.db'} (the rehearsal starts from scratch)")
    notes.append(f"wiped sandbox data in {data_dir}")
    return notes


def reset(config: Config, env_name: str, *, progress: Progress | None = None) -> SandboxStatus:
    """down --wipe, then up: a clean sandbox (unseeded) and a fresh ledger."""
    gone = down(config, env_name, wipe=True, progress=progress)
    from migrate import config as config_mod

    fresh = config_mod.load(config.path)  # endpoints.json is gone: reload without the overlay
    result = up(fresh, env_name, progress=progress)
    result.notes = gone.notes + result.notes
    return result


# ---------------------------------------------------------------------------------------------------------------
# seed
# ---------------------------------------------------------------------------------------------------------------
def seed(
    config: Config,
    env_name: str,
    *,
    scale: int = 1,
    seed_value: int = 42,
    redis_keys: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> SeedResult:
    """Fill the source PostgreSQL and Redis with the dataset; already seeded with the same inputs = no-op."""
    from migrate.adapters import sandbox_seed

    if scale < 1:
        raise UsageError(
            f"--scale {scale} is not allowed",
            "scale is a positive integer (1 ≈ 60 MB)",
            "bpmigrate sandbox seed --scale 1",
        )
    say = progress or (lambda _msg: None)
    st = status(config, env_name, with_seed=False)
    by_name = {c.name: c for c in st.components}
    pg, rd = by_name["pg-source"], by_name["redis-source"]
    if not (pg.ok and rd.ok and rd.port):
        raise UsageError(
            f"the sandbox {env_name!r} is not up (state: {st.state})",
            "seed writes into the running source PostgreSQL and Redis",
            f"bpmigrate sandbox up --env {env_name}",
        )
    started = time.perf_counter()
    keys = redis_keys if redis_keys is not None else 5000 * scale
    pg_info = sandbox_seed.pg_seed_info(pg.endpoint)
    if not (pg_info and pg_info.get("scale") == scale and pg_info.get("seed") == seed_value) or force:
        say(f"seeding PostgreSQL (scale {scale}, seed {seed_value}) ...")
    pg_report = sandbox_seed.seed_postgres(
        pg.endpoint, scale, seed_value, force=force, progress=lambda t, n: say(f"  {t}: {n} rows")
    )
    rd_info = sandbox_seed.redis_seed_info(ls.LOOPBACK, rd.port)
    if not (rd_info and rd_info.get("keys") == keys and rd_info.get("seed") == seed_value) or force:
        say(f"seeding Redis ({keys} keys) ...")
    rd_report = sandbox_seed.seed_redis(ls.LOOPBACK, rd.port, keys, seed_value, force=force)
    return SeedResult(env_name, pg_report.to_dict(), rd_report.to_dict(), round(time.perf_counter() - started, 3))
