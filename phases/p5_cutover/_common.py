"""Helpers shared by the phase-5 steps (no step lives here)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from migrate.errors import BpmError
from migrate.step import StepContext

PHASE = 5


class Clock:
    """Wall clock and sleep, as one replaceable object (tests substitute a fast one)."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts is not None else None


def parse_ts(value: Any) -> float | None:
    """A recorded timestamp (epoch seconds or ISO 8601) as epoch seconds; None when absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def kube_unreachable(ctx: StepContext) -> str | None:
    """Why no Kubernetes cluster can be used here (None = reachable)."""
    try:
        return ctx.adapters.kube().unreachable_reason()
    except BpmError as exc:
        return str(exc)


def app_namespaces(ctx: StepContext) -> list[str]:
    configured = ctx.setting("namespaces")
    if configured:
        return [str(n) for n in configured]
    return [ctx.env.kube.namespace]
