"""`bpmigrate doctor`: tell the operator, before anything runs, what will fail.

Each check is a small function ``(DoctorContext) -> list[Result]`` over the adapters, testable on its own. A check
never raises: adapter errors become a failing result carrying the error's "next" as the fix.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from migrate.adapters import Adapters
from migrate.config import Config, EnvConfig
from migrate.errors import AdapterError, BpmError


@dataclass(frozen=True)
class Result:
    check: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: str = ""
    blocking: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DoctorContext:
    config: Config
    env: EnvConfig
    adapters: Adapters
    outputs: dict[str, dict[str, Any]]

    def pg(self, role: str) -> Any:
        adapter = self.adapters.postgres(role)
        if adapter.needs_address:
            out = self.outputs.get("rds", {})
            if out.get("endpoint"):
                return adapter.with_address(str(out["endpoint"]), int(out.get("port") or 5432))
        return adapter

    def redis(self, role: str) -> Any:
        adapter = self.adapters.redis(role)
        if adapter.needs_address:
            out = self.outputs.get("elasticache", {})
            if out.get("endpoint"):
                return adapter.with_address(str(out["endpoint"]), int(out.get("port") or 6379))
        return adapter


Check = Callable[[DoctorContext], list[Result]]


def _guard(name: str, fn: Callable[[], list[Result]], *, blocking: bool = True) -> list[Result]:
    try:
        return fn()
    except BpmError as exc:
        return [Result(name, "fail", exc.what + (f" ({exc.why})" if exc.why else ""), exc.next_cmd, blocking)]
    except Exception as exc:  # noqa: BLE001 - a check must never crash doctor
        return [Result(name, "fail", f"{type(exc).__name__}: {exc}", "re-run with --traceback", blocking)]


# -- checks ------------------------------------------------------------------------------------------------------
def check_terraform(ctx: DoctorContext) -> list[Result]:
    def run() -> list[Result]:
        runner = ctx.adapters.terraform()
        return [Result("terraform engine", "ok", runner.engine_description())]

    return _guard("terraform engine", run)


def check_pg_tools(ctx: DoctorContext) -> list[Result]:
    results: list[Result] = []
    for role in ("source", "target"):
        if role not in ctx.env.postgres:
            continue

        def run(role: str = role) -> list[Result]:
            pg = ctx.pg(role)
            tool = pg.binary("pg_dump")
            version_line = ctx.adapters.proc().run([tool, "--version"], service="postgres").stdout.strip()
            tool_major = _major(version_line.split()[-1])
            if pg.unreachable_reason():
                return [Result(f"pg_dump for {role}", "warn", f"{version_line}; server not reachable, version unchecked")]
            server_major = _major(pg.server_version())
            if tool_major < server_major:
                return [
                    Result(
                        f"pg_dump for {role}",
                        "fail",
                        f"{version_line} cannot dump a PostgreSQL {server_major} server",
                        f"install the PostgreSQL {server_major} client tools and set postgres.{role}.bin_dir",
                        True,
                    )
                ]
            return [Result(f"pg_dump for {role}", "ok", f"{version_line} (server {server_major})")]

        results += _guard(f"pg_dump for {role}", run)
    return results


def check_sandbox_binaries(ctx: DoctorContext) -> list[Result]:
    if ctx.env.kind != "sandbox":
        return []
    found = ctx.adapters.proc().which("redis-server")
    if found:
        return [Result("redis-server (sandbox)", "ok", found)]
    return [Result("redis-server (sandbox)", "fail", "redis-server is not installed", "apt-get install -y redis-server", True)]


def check_builder(ctx: DoctorContext) -> list[Result]:
    def run() -> list[Result]:
        builder = ctx.adapters.get("builder")
        info = builder.detect()
        if info.available:
            return [Result("container builder", "ok", info.describe())]
        return [
            Result(
                "container builder",
                "warn",
                info.describe(),
                "install docker/buildah with a running engine, or set [steps.images] tags to already-pushed images",
            )
        ]

    return _guard("container builder", run, blocking=False)


def check_aws(ctx: DoctorContext) -> list[Result]:
    def run() -> list[Result]:
        aws = ctx.adapters.aws()
        identity = aws.call("sts", "get_caller_identity")
        where = f" via {aws.endpoint_url} (emulated)" if aws.endpoint_url else ""
        return [Result("AWS credentials", "ok", f"account {identity['Account']} in {aws.region}{where}")]

    if ctx.env.kind == "sandbox" and not ctx.env.aws.endpoint_url:
        return [Result("AWS credentials", "fail", "the sandbox's moto server is not recorded", "bpmigrate sandbox up", True)]
    return _guard("AWS credentials", run)


def _servers(
    label: str, configured: Any, connect: Callable[[str], Any], provider_step: str, fix: str
) -> list[Result]:
    """Reachability and version of the source and target servers of one kind (PostgreSQL or Redis)."""
    results: list[Result] = []
    for role in ("source", "target"):
        name = f"{label} {role}"
        if role not in configured:
            results.append(Result(name, "skip", "not configured for this environment"))
            continue

        def run(role: str = role, name: str = name) -> list[Result]:
            server = connect(role)
            if server.needs_address:
                return [Result(name, "skip", f"address comes from the {provider_step} step's output (not applied yet)")]
            reason = server.unreachable_reason()
            if reason:
                return [Result(name, "fail", reason, fix, True)]
            return [Result(name, "ok", f"{server.endpoint} — {label} {server.server_version()}")]

        results += _guard(name, run)
    return results


def check_postgres(ctx: DoctorContext) -> list[Result]:
    return _servers("PostgreSQL", ctx.env.postgres, ctx.pg, "rds", "check the host/port/credentials in migrate.toml")


def check_extension_parity(ctx: DoctorContext) -> list[Result]:
    if not {"source", "target"} <= set(ctx.env.postgres):
        return []

    def run() -> list[Result]:
        source, target = ctx.pg("source"), ctx.pg("target")
        if source.needs_address or target.needs_address or source.unreachable_reason() or target.unreachable_reason():
            return [Result("extension parity", "skip", "needs both servers reachable")]
        available = target.extensions_available()
        results = []
        for use in source.extension_uses():
            if use.name in available:
                results.append(Result(f"extension {use.name}", "ok", f"{use.version} on source; available on target"))
                continue
            used_by = ", ".join(use.tables[:5]) or "no table depends on it"
            results.append(
                Result(
                    f"extension {use.name}",
                    "fail" if use.tables else "warn",
                    f"installed on the source but NOT available on the target (used by: {used_by})",
                    "replace its use before migrating (e.g. gen_random_uuid() is built in since PostgreSQL 13)"
                    " or choose a target that allows it (RDS extension allow-list)",
                    bool(use.tables),
                )
            )
        return results or [Result("extension parity", "ok", "the source uses no extension")]

    return _guard("extension parity", run)


def check_redis(ctx: DoctorContext) -> list[Result]:
    results = _servers("Redis", ctx.env.redis, ctx.redis, "elasticache", "check redis host/port/password in migrate.toml")
    target_cfg = ctx.env.redis.get("target")
    if "source" in ctx.env.redis and target_cfg is not None and target_cfg.cluster_mode:

        def finding() -> list[Result]:
            rd = ctx.redis("source")
            migrated = list(ctx.env.redis["source"].dbs)
            used = sorted(db for db, n in rd.keyspace().items() if n) if not rd.unreachable_reason() else migrated
            prefixes = ctx.config.step_settings(ctx.env.name, "redis-migrate").get("db_prefix") or {}
            unmapped = [db for db in used if db in migrated and db != 0 and str(db) not in prefixes]
            ignored = [db for db in used if db not in migrated]
            note = f"; DB(s) {ignored} are not in redis.source.dbs and are not migrated" if ignored else ""
            if unmapped:
                return [
                    Result(
                        "Redis logical DBs",
                        "warn",
                        f"the source uses DBs {used}; ElastiCache cluster mode has only DB 0 and DB(s) {unmapped} "
                        f"would get the default prefix db<n>:{note}",
                        "set [steps.redis-migrate] db_prefix = {\"1\" = \"sessions:\", \"2\" = \"ratelimit:\"} and"
                        " make the apps use those prefixes",
                    )
                ]
            mapped = ", ".join(f"DB {db} -> {prefixes.get(str(db), '')!r}" for db in used if db in migrated)
            return [Result("Redis logical DBs", "ok", f"cluster mode: {mapped or 'nothing to map'}{note}")]

        results += _guard("Redis logical DBs", finding, blocking=False)
    return results


def check_redis_topology(ctx: DoctorContext) -> list[Result]:
    """Which Redis topology every environment's target has (cluster mode or a single node), and whether the one
    this environment will meet really has that shape (a sandbox: the shape `sandbox up` starts)."""
    shapes = []
    for name, env in ctx.config.environments.items():
        target = env.redis.get("target")
        if target is None:
            continue
        if env.kind == "sandbox":
            from migrate.sandbox.orchestrate import redis_topology

            topology, why = redis_topology(ctx.config, env)
            shapes.append(f"{name}: {topology} ({why})")
        else:
            shapes.append(f"{name}: {'cluster' if target.cluster_mode else 'single'} (cluster_mode = {str(target.cluster_mode).lower()})")
    results = [Result("Redis topology per environment", "ok", " · ".join(shapes) or "no redis.target configured")]
    target_cfg = ctx.env.redis.get("target")
    if target_cfg is None:
        return results

    def run() -> list[Result]:
        name = f"Redis target topology ({ctx.env.name})"
        expected = "cluster" if target_cfg.cluster_mode else "single"
        fix = f"set cluster_mode = {str(not target_cfg.cluster_mode).lower()} under [environments.{ctx.env.name}.redis.target]"
        if ctx.env.kind == "sandbox":
            from migrate.sandbox.orchestrate import redis_topology

            wanted, why = redis_topology(ctx.config, ctx.env)
            if wanted != expected:
                return [Result(name, "warn", f"the sandbox runs a {expected} target but rehearses {wanted} ({why})",
                               f"bpmigrate sandbox up --env {ctx.env.name}   (restarts the target Redis as {wanted})")]
            fix = f"bpmigrate sandbox up --env {ctx.env.name}"
        server = ctx.redis("target")
        unconfirmed = Result(name, "skip", f"will meet a {expected} target (cluster_mode = {str(target_cfg.cluster_mode).lower()}); not reachable to confirm")
        if server.needs_address:
            return [unconfirmed]
        try:
            actual = "cluster" if server.is_real_cluster() else "single"
        except AdapterError:
            return [unconfirmed]
        if actual != expected and target_cfg.cluster_mode is False:
            return [Result(name, "fail", f"{server.endpoint} is a Redis Cluster but cluster_mode = false", fix, True)]
        if actual != expected:
            return [Result(name, "warn", f"cluster_mode = true but {server.endpoint} is a single node (keys still map to DB 0 prefixes)", fix)]
        shown = server.topology() if actual == "cluster" else "single node"
        return [Result(name, "ok", f"{server.endpoint} — {shown}, as configured")]

    return results + _guard("Redis target topology", run, blocking=False)


def check_disk(ctx: DoctorContext) -> list[Result]:
    state_dir = ctx.config.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(state_dir).free
    if "source" not in ctx.env.postgres:
        return [Result("free disk for backups", "ok", f"{free / 1e9:.1f} GB free under {state_dir}")]

    def run() -> list[Result]:
        pg = ctx.pg("source")
        if pg.unreachable_reason():
            return [Result("free disk for backups", "skip", f"{free / 1e9:.1f} GB free; source size unknown (unreachable)")]
        size = int(pg.database_size())
        need = int(size * 1.2)  # custom-format dumps are usually far smaller; keep a margin for the final backup too
        if free < need:
            return [
                Result(
                    "free disk for backups",
                    "fail",
                    f"{free / 1e9:.1f} GB free, the source database is {size / 1e9:.1f} GB",
                    f"free at least {need / 1e9:.1f} GB under {state_dir} or point project.state_dir elsewhere",
                    True,
                )
            ]
        return [Result("free disk for backups", "ok", f"{free / 1e9:.1f} GB free; source is {size / 1e9:.2f} GB")]

    return _guard("free disk for backups", run)


def check_kube(ctx: DoctorContext) -> list[Result]:
    def run() -> list[Result]:
        kube = ctx.adapters.kube()
        reason = kube.unreachable_reason()
        if reason:
            # the sandbox runs without a cluster by design: its Kubernetes steps are skipped with this reason
            return [Result("Kubernetes context", "warn" if ctx.env.kind == "sandbox" else "fail", reason,
                           "point kube.kubeconfig/context at a cluster (kind, minikube, k3d or EKS)", ctx.env.kind != "sandbox")]
        return [Result("Kubernetes context", "ok", f"reachable, server {kube.server_version()}")]

    return _guard("Kubernetes context", run, blocking=ctx.env.kind != "sandbox")


def check_clock(ctx: DoctorContext) -> list[Result]:
    if "source" not in ctx.env.postgres:
        return []

    def run() -> list[Result]:
        pg = ctx.pg("source")
        if pg.unreachable_reason():
            return [Result("clock skew", "skip", "source PostgreSQL unreachable")]
        before = time.time()
        server = float(pg.query("SELECT extract(epoch FROM clock_timestamp())")[0][0])
        local = (before + time.time()) / 2
        skew = server - local
        if abs(skew) > 60:
            return [Result("clock skew", "fail", f"{skew:+.1f}s against the source database", "fix NTP on this machine", True)]
        if abs(skew) > 5:
            return [Result("clock skew", "warn", f"{skew:+.1f}s against the source database", "fix NTP; lease expiry and TTLs rely on clocks")]
        return [Result("clock skew", "ok", f"{skew:+.2f}s against the source database")]

    return _guard("clock skew", run, blocking=False)


def check_replication_slots(ctx: DoctorContext) -> list[Result]:
    if "source" not in ctx.env.postgres:
        return []

    def run() -> list[Result]:
        pg = ctx.pg("source")
        if pg.unreachable_reason():
            return []
        rows = pg.query(
            "SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots"
            " WHERE NOT active"
        )
        if not rows:
            return [Result("replication slots", "ok", "no inactive slot retains WAL on the source")]
        names = ", ".join(f"{r[0]} ({(r[2] or 0) / 1e6:.0f} MB retained)" for r in rows)
        return [
            Result(
                "replication slots",
                "warn",
                f"inactive slot(s) on the source retain WAL and will fill its disk: {names}",
                "bpmigrate rollback --step pg-sync (or SELECT pg_drop_replication_slot('<name>') if it is not ours)",
            )
        ]

    return _guard("replication slots", run, blocking=False)


MANIFEST_STEPS = ("k8s-deploy", "hpa", "autoscale-tune", "cost-controls")


def check_manifests_dirs(ctx: DoctorContext) -> list[Result]:
    """What a team's own manifests directory (``manifests_dir`` of the manifest steps) holds, by kind."""
    import shutil
    from collections import Counter
    from pathlib import Path

    from migrate.adapters.manifests import load_user_manifests

    out: list[Result] = []
    for step_id in MANIFEST_STEPS:
        directory = ctx.config.step_settings(ctx.env.name, step_id).get("manifests_dir")
        if not directory:
            continue
        name = f"{step_id} manifests_dir"
        path = Path(str(directory)).expanduser()
        path = path if path.is_absolute() else ctx.config.root / path

        def run(path: Path = path, name: str = name) -> list[Result]:
            kubectl = shutil.which("kubectl")

            def kustomize(target: Path) -> str:
                return str(ctx.adapters.proc().run([str(kubectl), "kustomize", str(target)], timeout=120).stdout)

            docs = load_user_manifests(path, kustomize=kustomize if kubectl else None)
            kinds = Counter(str(d.get("kind")) for d in docs)
            detail = f"{path}: {len(docs)} manifest(s): " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            return [Result(name, "ok" if docs else "warn", detail, "" if docs else f"put the YAML files in {path}")]

        out.extend(_guard(name, run))
    return out or [Result("manifests_dir", "skip", "no step uses a manifests directory: the bundled templates apply")]


CHECKS: list[Check] = [
    check_terraform,
    check_pg_tools,
    check_sandbox_binaries,
    check_builder,
    check_aws,
    check_postgres,
    check_extension_parity,
    check_redis,
    check_redis_topology,
    check_disk,
    check_kube,
    check_manifests_dirs,
    check_clock,
    check_replication_slots,
]


def _major(version: str) -> int:
    digits = ""
    for ch in version.strip():
        if ch.isdigit():
            digits += ch
        elif digits:
            break
    return int(digits or 0)


def run_checks(ctx: DoctorContext, checks: list[Check] | None = None) -> list[Result]:
    results: list[Result] = []
    for check in checks or CHECKS:
        results.extend(check(ctx))
    return results
