"""The cutover gates' view of the SLO alarms the `observability` step created: which are in ALARM, as evidence."""

from __future__ import annotations

from typing import Any

from migrate.step import Check, StepContext


def firing_alarms(ctx: StepContext) -> tuple[list[dict[str, Any]], str | None]:
    """(evidence of every alarm in ALARM, the prefix read); prefix None when `observability` recorded none."""
    prefix = ctx.output("observability", "alarm_prefix", None)
    if not prefix:
        return [], None
    firing = ctx.adapters.get("aws_observability").firing(str(prefix))
    return [a.evidence() for a in firing], str(prefix)


def alarm_check(ctx: StepContext) -> Check:
    """One gate check: passes when no SLO alarm is in ALARM (and says so when there are no alarms to read)."""
    firing, prefix = firing_alarms(ctx)
    if prefix is None:
        return Check("no SLO alarm in ALARM", True, "no alarms recorded (observability not applied or skipped)", "none in ALARM")
    detail = "; ".join(f"{a['alarm']}: {a['reason']} (since {a['at']})" for a in firing)
    return Check("no SLO alarm in ALARM", not firing, [a["alarm"] for a in firing] or "none", "none in ALARM", detail)
