"""Helpers shared by the phase-6 steps (no step lives here): report location, recorded results, and judging a
measurement against one of the plan's targets (``ctx.targets``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.step import StepContext

if TYPE_CHECKING:
    from migrate.adapters.archive import ArchiveAdapter


PHASE = 6


DEFAULT_COMPOSE_FILE = "templates/compose/docker-compose.yml"

#: one judged criterion: name, observed, op, limit, unit, ok, result (PASS | FAIL | NOT MEASURED)
Criterion = dict[str, Any]


def files(ctx: StepContext) -> ArchiveAdapter:
    return ctx.adapters.get("archive")  # type: ignore[no-any-return]


def reports_dir(ctx: StepContext) -> Path:
    """``reports_dir`` of the step's settings (a declared field, or a plain setting), default runbooks/reports."""
    model = ctx.settings_model
    rel = getattr(model, "reports_dir", None) if model is not None else ctx.settings.get("reports_dir")
    return ctx.project_root / str(rel or "runbooks/reports")


def recorded(ctx: StepContext, step_id: str) -> dict[str, Any]:
    """Everything ``step_id`` recorded (empty when it has not run); only a declared dependency may be read."""
    ctx.output(step_id, "", None)  # enforces the depends_on contract
    return dict(ctx.upstream.get(step_id) or {})


def find_number(outputs: Any, *keys: str) -> float | None:
    """The first numeric value under one of ``keys`` (dotted paths allowed) in a step's outputs."""
    for key in keys:
        node = outputs
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            return float(node)
    return None


def judge(ctx: StepContext, name: str, observed: float | None, op: str, limit: float, unit: str) -> Criterion:
    """PASS/FAIL of ``observed op limit``; unmeasured fails, except in a sandbox (reported NOT MEASURED)."""
    if observed is None:
        ok, result = ctx.is_sandbox, "NOT MEASURED"
    else:
        ok = {"<": observed < limit, "<=": observed <= limit, ">=": observed >= limit}[op]
        result = "PASS" if ok else "FAIL"
    return {"name": name, "observed": observed, "op": op, "limit": limit, "unit": unit, "ok": ok, "result": result}


def fmt_value(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value * 100:.3f} %"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "USD":
        return f"{value:,.2f} USD"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    return f"{value:g} {unit}".strip()


def criteria_table(rows: list[Criterion]) -> list[str]:
    """Markdown table lines: criterion, observed, target, result."""
    lines = ["| Criterion | Observed | Target | Result |", "|---|---:|---:|---|"]
    for c in rows:
        observed = "not measured" if c["observed"] is None else fmt_value(c["observed"], c["unit"])
        lines.append(f"| {c['name']} | {observed} | {c['op']} {fmt_value(c['limit'], c['unit'])} | {c['result']} |")
    return lines


def verdict(ctx: StepContext, rows: list[Criterion]) -> str:
    unmeasured = sum(1 for c in rows if c["observed"] is None)
    if not all(c["ok"] for c in rows):
        failed = sum(1 for c in rows if not c["ok"])
        return f"criteria NOT met ({failed} of {len(rows)} failed)"
    if unmeasured:
        return f"criteria met where measured ({unmeasured} not measured in this sandbox)"
    return "all criteria met"
