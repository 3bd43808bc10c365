"""Step ``pgvector``: Enable pgvector on the target (CREATE EXTENSION IF NOT EXISTS vector) before the data that needs it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import _target_address_known, pg


class PgVector(Step):
    """Enable pgvector on the target (CREATE EXTENSION IF NOT EXISTS vector) before the data that needs it.

    Runs before rds-restore (which depends on it). Verify compares a nearest-neighbour query on source and target
    once the data is there.
    """

    id = "pgvector"
    phase = 2
    depends_on = ("rds",)
    reversibility = Reversibility.COMPENSABLE

    def summary(self, outputs: Mapping[str, Any]) -> str:
        if not outputs.get("version"):
            return ""
        return f"vector {outputs['version']} · {'created' if outputs.get('created') else 'was already there'}"

    def plan(self, ctx: StepContext) -> PlanResult:
        missing = _target_address_known(ctx, "postgres")
        if missing:
            return PlanResult(changes=[Change("create", "extension vector on target")], unknown=[missing])
        target = pg(ctx, "target")
        installed = target.extensions_installed()
        if "vector" in installed:
            return PlanResult(in_place=[f"extension vector {installed['vector']} on the target"])
        result = PlanResult(changes=[Change("create", "extension vector", f"on {target.endpoint}")])
        if "vector" not in target.extensions_available():
            result.findings.append(
                Finding(
                    "block",
                    "pgvector is not available on the target server",
                    "use an RDS PostgreSQL version that ships pgvector (≥ 15.2) or install it",
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        target = pg(ctx, "target")
        existed = "vector" in target.extensions_installed()
        if not existed:
            ctx.intent("create-extension", name="vector", target=target.endpoint)
            target.create_extension("vector")
        return {"version": target.extensions_installed()["vector"], "created": not existed}

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.postgres import nearest_ids, vector_columns

        target = pg(ctx, "target")
        installed = target.extensions_installed()
        checks = [
            Check(
                "extension vector installed on the target",
                "vector" in installed,
                observed=installed.get("vector"),
                expected="installed",
            )
        ]
        source = pg(ctx, "source")
        cols = vector_columns(source.tables())
        for table, column in cols[:1]:
            if not target.table_exists(table.schema, table.name) or target.row_count(table.schema, table.name) == 0:
                checks.append(
                    Check(
                        f"nearest-neighbour ids {table.qualified}.{column}",
                        True,
                        observed="no data yet",
                        detail="compared again by data-validate after rds-restore",
                    )
                )
                continue
            s, t = nearest_ids(source, table, column), nearest_ids(target, table, column)
            checks.append(Check(f"nearest-neighbour ids {table.qualified}.{column}", s == t, observed=t, expected=s))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        if ctx.upstream.get(self.id, {}).get("created") is False:
            ctx.log("extension vector existed before pgvector ran: left in place")
            return
        target = pg(ctx, "target")
        if "vector" in target.extensions_installed():
            ctx.intent("drop-extension", name="vector", target=target.endpoint)
            target.execute("DROP EXTENSION IF EXISTS vector RESTRICT")
