"""Helpers shared by the phase-6 steps (no step lives here)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.step import StepContext

if TYPE_CHECKING:
    from migrate.adapters.archive import ArchiveAdapter


PHASE = 6


DEFAULT_COMPOSE_FILE = "templates/compose/docker-compose.yml"


def files(ctx: StepContext) -> ArchiveAdapter:
    return ctx.adapters.get("archive")  # type: ignore[no-any-return]


def reports_dir(ctx: StepContext) -> Path:
    return ctx.project_root / str(ctx.setting("reports_dir", "runbooks/reports"))


def find_number(outputs: Any, *keys: str) -> float | None:
    """The first numeric value under one of ``keys`` (dotted paths allowed) in a step's outputs."""
    for key in keys:
        node = outputs
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            return float(node)
    return None


