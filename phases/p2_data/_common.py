"""Helpers shared by the phase-2 steps (no step lives here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from migrate.errors import ConfigError, StepFailed
from migrate.step import Check, Finding, PlanResult, StepContext, StepSettings

from .._terraform_step import TerraformModuleStep

if TYPE_CHECKING:
    from migrate.adapters.postgres import PostgresAdapter
    from migrate.adapters.redis import RedisAdapter
    from migrate.adapters.redis_copy import DbRoute


MB = 1 << 20


def summary_line(outputs: Mapping[str, Any], head: list[str], **counted: str) -> str:
    """A dashboard line: ``head``, then "<n> <label>" for each ``key=label`` whose output is set (n: the value, or the
    length of a list or dict), joined with " · "."""
    parts = list(head)
    for key, label in counted.items():
        if value := outputs.get(key):
            parts.append(f"{len(value) if isinstance(value, list | dict) else value} {label}")
    return " · ".join(parts)


def fail_on(problems: list[str], step_id: str, noun: str, fix: str) -> None:
    """A checking step fails naming how many ``problems`` it found (``noun``: "mismatch(es)") and the first one; the
    first ten are the why. Nothing happens when there are none."""
    if problems:
        raise StepFailed(f"{step_id} found {len(problems)} {noun}; first: {problems[0]}", "; ".join(problems[:10]), fix)


def _host_port(value: Any, default_port: int) -> tuple[str, int]:
    text = str(value or "")
    if ":" in text and text.rsplit(":", 1)[1].isdigit():
        host, port = text.rsplit(":", 1)
        return host, int(port)
    return text, default_port


def pg(ctx: StepContext, role: str) -> PostgresAdapter:
    """The source, or the target — whose address comes from the rds step when migrate.toml says from-terraform."""
    adapter = ctx.adapters.postgres(role)
    if role == "target" and adapter.needs_address:
        host, port = _host_port(ctx.output("rds", "endpoint"), int(ctx.output("rds", "port", adapter.port) or 5432))
        adapter = adapter.with_address(host, port)
    return adapter


def rds(ctx: StepContext, role: str) -> RedisAdapter:
    adapter = ctx.adapters.redis(role)
    if role == "target" and adapter.needs_address:
        host, port = _host_port(
            ctx.output("elasticache", "endpoint"), int(ctx.output("elasticache", "port", adapter.port) or 6379)
        )
        adapter = adapter.with_address(host, port)
    return adapter


def _target_address_known(ctx: StepContext, kind: str) -> str | None:
    """None when the target address is known; else what is missing (for plan's ``unknown``)."""
    adapter = ctx.adapters.postgres("target") if kind == "postgres" else ctx.adapters.redis("target")
    step = "rds" if kind == "postgres" else "elasticache"
    if adapter.needs_address and ctx.upstream.get(step, {}).get("endpoint") in (None, ""):
        return f"{kind} target address (output 'endpoint' of step {step}, recorded when it is applied)"
    return None


def _refuse_same_database(source: PostgresAdapter, target: PostgresAdapter) -> None:
    if (source.host, source.port, source.dbname) == (target.host, target.port, target.dbname):
        raise ConfigError(
            f"postgres.source and postgres.target are the same database ({source.endpoint})",
            "the restore overwrites the target: it would destroy the source",
            "fix postgres.target in migrate.toml",
        )


def extension_findings(source: PostgresAdapter, target: PostgresAdapter) -> list[Finding]:
    """Extensions used on the source but not available on the target (like RDS's allow-list)."""
    available = target.extensions_available()
    findings: list[Finding] = []
    for use in source.extension_uses():
        if use.name in available:
            continue
        if use.tables:
            findings.append(
                Finding(
                    "block",
                    f"extension {use.name} {use.version} is used by {', '.join(use.tables[:5])} on the source but is "
                    "not available on the target",
                    f"install/allow {use.name} on the target (RDS: check the engine version's extension list), or "
                    "rewrite those columns/defaults without it before migrating",
                )
            )
        else:
            findings.append(
                Finding(
                    "warn",
                    f"extension {use.name} {use.version} is installed on the source but not available on the target",
                    f"no table depends on it: drop it from the source dump (DROP EXTENSION {use.name}) or accept that "
                    "the schema restore will fail on its CREATE EXTENSION",
                )
            )
    return findings


def not_replicated_findings(source: PostgresAdapter) -> list[Finding]:
    """What logical replication does not carry on this source: unlogged tables, materialized views (data-switch
    refreshes them: ``migrate.adapters.pgcopy.refresh_matviews``), large objects."""
    out: list[Finding] = []
    unlogged = [t.qualified for t in source.tables() if t.unlogged]
    if unlogged:
        out.append(
            Finding(
                "warn",
                f"unlogged tables cannot be replicated: {', '.join(unlogged[:5])} keep the rows rds-restore copied",
                "stop writing to them before the switch, or make them logged (ALTER TABLE ... SET LOGGED)",
            )
        )
    views = [v.qualified for v in source.matviews() if v.populated]
    if views:
        out.append(
            Finding(
                "info",
                f"materialized views are not replicated ({', '.join(views[:5])}): on the target they hold what "
                "rds-restore refreshed",
                "refresh them on the target at the switch (migrate.adapters.pgcopy.refresh_matviews)",
            )
        )
    if source.large_object_count():
        out.append(
            Finding(
                "warn",
                f"{source.large_object_count()} large object(s): logical replication does not carry them",
                "freeze writes to large objects until the switch, or re-run rds-restore's copy after it",
            )
        )
    return out


SANDBOX_ENDPOINT_NOTE = (
    "sandbox: the {what} in moto has no server behind it; the data steps connect to the local target {engine} "
    "from the sandbox's config (state/{env}/endpoints.json), and verify reads the moto resource back"
)


def _sandbox_note(kind: str, env_name: str) -> str:
    what, engine = ("RDS instance", "PostgreSQL") if kind == "postgres" else ("ElastiCache group", "Redis")
    return SANDBOX_ENDPOINT_NOTE.format(what=what, engine=engine, env=env_name)


def _local_target(ctx: StepContext, kind: str) -> Any:
    """The sandbox's local target server (None outside a sandbox, or when its address comes from Terraform)."""
    target = (ctx.env.postgres if kind == "postgres" else ctx.env.redis).get("target")
    if not ctx.is_sandbox or target is None or target.host == "from-terraform":
        return None
    return target


def sandbox_connection(
    ctx: StepContext, kind: str, tf_outputs: dict[str, Any], endpoint_output: str, port_output: str
) -> dict[str, Any]:
    """Sandbox with the real modules: the connection endpoint is the local server, not moto's fake address.

    Returns the outputs that replace ``endpoint``/``port`` (with the moto address kept as ``aws_endpoint``), or {}
    outside that case (real AWS: Terraform's outputs are the connection endpoints; stand-in: they already point at
    the local servers)."""
    target = _local_target(ctx, kind)
    if target is None:
        return {}
    note = _sandbox_note(kind, ctx.env_name)
    ctx.log(f"{note}: {target.host}:{target.port}")
    return {
        "endpoint": target.host,
        "port": target.port,
        "aws_endpoint": tf_outputs.get(endpoint_output),
        "aws_port": tf_outputs.get(port_output),
        "endpoint_source": note,
    }


class _SandboxTargetStep(TerraformModuleStep):
    """A data-store module whose sandbox connection endpoint is the local server (see :func:`sandbox_connection`)."""

    kind: ClassVar[str] = "postgres"

    def plan(self, ctx: StepContext) -> PlanResult:
        result = super().plan(ctx)
        if _local_target(ctx, self.kind) is not None and not self.stand_in(ctx):
            result.findings.append(Finding("info", _sandbox_note(self.kind, ctx.env_name), ""))
        return result

    def extra_outputs(self, ctx: StepContext, tf_outputs: dict[str, Any]) -> dict[str, Any]:
        if self.stand_in(ctx):
            return {}
        return sandbox_connection(ctx, self.kind, tf_outputs, self.output_map["endpoint"], self.output_map["port"])


def _restore_options(ctx: StepContext) -> Any:
    from migrate.adapters.pgcopy import RestoreOptions

    return RestoreOptions(
        workers=int(ctx.setting("workers", 2)),
        chunk_rows=int(ctx.setting("chunk_rows", 500_000)),
        chunk_bytes=int(float(ctx.setting("chunk_mb", 64)) * MB),
        pause_s=float(ctx.setting("pause_between_chunks_s", 0.0)),
        analyze=bool(ctx.setting("analyze", True)),
        maintenance_work_mem=str(ctx.setting("maintenance_work_mem", "256MB")),
        consistent_snapshot=bool(ctx.setting("consistent_snapshot", True)),
    )


class RedisMapping(StepSettings):
    """Where each source DB's keys land on the target (shared by the Redis steps)."""

    db_prefix: dict[str, str] | None = Field(
        None,
        description='cluster-mode targets (only DB 0): source DB -> key prefix, e.g. {"1" = "sessions:"}; '
        "default db<n>: for n > 0. redis-verify and redis-sync use what redis-migrate recorded",
    )
    db_map: dict[str, int] | None = Field(
        None, description="non-cluster targets: source DB -> target DB (default: the same number)"
    )


def _recorded_routes(ctx: StepContext) -> list[DbRoute] | None:
    """The mapping redis-migrate applied (its ``route_map`` output), for the steps that read what it wrote."""
    from migrate.adapters.redis_copy import DbRoute

    if ctx.step_id == "redis-migrate":
        return None
    recorded = None
    for step in ("redis-sync", "redis-migrate"):  # redis-sync re-records what it followed (for data-switch)
        recorded = recorded or (ctx.upstream.get(step) or {}).get("route_map")
    if not recorded:
        return None
    return [DbRoute(int(r["source_db"]), int(r["target_db"]), str(r["prefix"]).encode()) for r in recorded]


def redis_routes(ctx: StepContext, source: RedisAdapter, target: RedisAdapter) -> list[DbRoute]:
    """Source DB -> (target DB, key prefix). Steps after redis-migrate use the mapping it recorded (the keys are
    where it wrote them); a db_prefix/db_map of their own that disagrees is refused."""
    from migrate.adapters.redis_copy import routes

    prefix, dbmap = _declared(ctx, "db_prefix"), _declared(ctx, "db_map")
    configured = routes(source.dbs, cluster_mode=target.cluster_mode, db_map=dbmap, db_prefix=prefix)
    recorded = _recorded_routes(ctx)
    if recorded is None:
        return configured
    if (prefix is not None or dbmap is not None) and configured != recorded:
        raise ConfigError(
            f"{ctx.step_id}: its db_prefix/db_map maps the source DBs differently from what redis-migrate wrote",
            "recorded by redis-migrate: " + "; ".join(r.describe() for r in recorded),
            f"remove db_prefix/db_map from [steps.{ctx.step_id}] in migrate.toml (the recorded mapping is used)",
        )
    return recorded


def _declared(ctx: StepContext, key: str) -> Any:
    """A mapping setting of the calling step, or None when that step (e.g. data-switch) declares none."""
    model = ctx.settings_model
    if model is None:
        return ctx.settings.get(key)
    return ctx.setting(key) if key in type(model).model_fields else None


def route_map(routes_: list[DbRoute]) -> list[dict[str, Any]]:
    """A mapping as recorded in redis-migrate's outputs."""
    return [{"source_db": r.source_db, "target_db": r.target_db, "prefix": r.prefix.decode()} for r in routes_]


def _redis_counts(source: RedisAdapter, target: RedisAdapter, routes_: list[DbRoute]) -> dict[int, tuple[int, int]]:
    """source DB -> (source keys, target keys under that DB's mapping); a cluster's counts are summed over its
    primaries (DBSIZE per primary, prefixed keys by SCAN over every primary)."""
    out: dict[int, tuple[int, int]] = {}
    for r in routes_:
        src_n = source.dbsize(r.source_db)
        sharing = [p for p in routes_ if p.target_db == r.target_db and p is not r]
        if not any(p.prefix for p in sharing) and not r.prefix:
            dst_n = target.dbsize(r.target_db)
        elif r.prefix:
            longer = [p.prefix for p in sharing if p.prefix.startswith(r.prefix) and p.prefix != r.prefix]
            dst_n = target.count_matching(r.target_db, r.prefix) - sum(
                target.count_matching(r.target_db, p) for p in longer
            )
        else:
            dst_n = target.dbsize(r.target_db) - sum(
                target.count_matching(r.target_db, p.prefix) for p in sharing if p.prefix
            )
        out[r.source_db] = (src_n, dst_n)
    return out


def _redis_count_checks(ctx: StepContext) -> list[Check]:
    source, target = rds(ctx, "source"), rds(ctx, "target")
    routes_ = redis_routes(ctx, source, target)
    counts = _redis_counts(source, target, routes_)
    return [
        Check(
            f"keys {r.describe()}",
            counts[r.source_db][0] == counts[r.source_db][1],
            observed=counts[r.source_db][1],
            expected=counts[r.source_db][0],
        )
        for r in routes_
    ]
