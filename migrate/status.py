"""Read-only reports: status dashboard data, history, step details, estimates from rehearsal history.

This module never imports SQLAlchemy, boto3 or kubernetes for a SQLite ledger, so `bpmigrate status` stays fast.
It reads the ledger only (never the lock), so `status --watch` works from a second terminal while `apply` runs.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.config import Config
from migrate.ledger_read import AttemptRow, LedgerReader, StepRow
from migrate.states import CHECKSUM_PREFIX, IN_FLIGHT, SATISFIES_DEPENDENCY, Reversibility, State

if TYPE_CHECKING:  # the dashboard reads the cached plan index: no step contract (pydantic models) to import
    from migrate.plan import Graph
    from migrate.plan_index import PlanIndex, StepInfo
    from migrate.step import Step

    #: the plan as `status` reads it: loaded (step classes) or from the cached index (no step module imported)
    Plan = Graph | PlanIndex
    Shown = type[Step] | StepInfo

DONE = frozenset({State.VERIFIED.value, State.SKIPPED.value})
FAILED = frozenset({State.APPLY_FAILED.value, State.VERIFY_FAILED.value, State.ROLLBACK_FAILED.value})
#: the longest short label of a skip reason (the text before its first ":" or ";", cut at a word boundary)
LABEL_MAX = 28


#: outputs shown first in ``outputs_summary`` (the --json field kept from 0.1.0; the dashboard shows ``summary``)
_LEAD_OUTPUTS = ("terraform_state",)


def _outputs_summary(outputs: dict[str, Any]) -> str:
    """The 0.1.0 ``outputs_summary`` of --json, unchanged: lead outputs whole, then up to 4 ``key=value`` (≤ 40)."""
    parts = [f"{key}={outputs[key]}" for key in _LEAD_OUTPUTS if outputs.get(key)]
    rest = [(k, v) for k, v in outputs.items() if k not in _LEAD_OUTPUTS]
    for key, value in rest[: 4 - len(parts)]:
        text = value if isinstance(value, str) else repr(value)
        parts.append(f"{key}={text[:40]}")
    return ", ".join(parts)


def _latest_ok_applies(config: Config, current_env: str, current: LedgerReader) -> dict[str, AttemptRow]:
    """The latest successful apply of every step across every environment's SQLite ledger (rehearsals count)."""
    latest: dict[str, AttemptRow] = {}
    readers: list[LedgerReader] = [current]
    for name in config.environments:
        if name == current_env:
            continue
        url = config.ledger_url(name)
        if url.startswith("sqlite:///") and Path(url[len("sqlite:///") :]).exists():
            try:
                readers.append(LedgerReader(url, name))
            except Exception:  # noqa: BLE001 - an unreadable other ledger just gives no estimate
                continue
    for reader in readers:
        try:
            for attempt in reader.attempts(limit=5000):
                if attempt.action != "apply" or attempt.status != "ok" or attempt.duration is None:
                    continue
                best = latest.get(attempt.step_id)
                if best is None or attempt.started_at > best.started_at:
                    latest[attempt.step_id] = attempt
        except Exception:  # noqa: BLE001 - an unreadable other ledger just gives no estimate
            continue
        finally:
            if reader is not current:
                reader.close()
    return latest


def estimate(attempt: AttemptRow | None, size_now: dict[str, float] | None = None) -> float | None:
    """Duration of the latest rehearsal of the step, scaled by data size when both runs report the same measure."""
    if attempt is None or attempt.duration is None:
        return None
    for measure in ("bytes", "rows", "keys"):
        then = attempt.metrics.get(measure)
        now = (size_now or {}).get(measure)
        if then and now:
            return float(attempt.duration * (now / then))
    return attempt.duration


def latest_rehearsals(config: Config, env_name: str) -> dict[str, AttemptRow]:
    reader = LedgerReader(config.ledger_url(env_name), env_name)
    try:
        return _latest_ok_applies(config, env_name, reader)
    finally:
        reader.close()


def skip_label(reason: str) -> str:
    """A short label for a skip reason: its text up to the first ":" or ";", at most LABEL_MAX chars, whole words."""
    head = re.split(r"[:;(]", reason, maxsplit=1)[0].strip().rstrip(".,")
    if len(head) <= LABEL_MAX:
        return head
    words, out = head.split(), ""
    for word in words:
        if len(out) + len(word) + 1 > LABEL_MAX - 1:
            break
        out = f"{out} {word}".strip()
    return (out or words[0][: LABEL_MAX - 1]) + "…"


def _progress_view(snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """rate, done/total and ETA from the latest progress report of a running attempt."""
    if not snapshot:
        return None
    completed = float(snapshot.get("completed") or 0)
    total = snapshot.get("total")
    elapsed = max(float(snapshot.get("at") or snapshot.get("updated_at") or 0) - float(snapshot.get("started_at") or 0), 0.0)
    rate = completed / elapsed if elapsed > 0 and completed > 0 else None
    eta = (float(total) - completed) / rate if rate and total else None
    return {
        "description": snapshot.get("description", ""),
        "unit": snapshot.get("unit", ""),
        "completed": completed,
        "total": total,
        "rate": rate,
        "eta_seconds": eta,
        "counters": snapshot.get("counters", {}),
        "updated_at": snapshot.get("updated_at"),
    }


def _attempt_view(attempt: AttemptRow | None) -> dict[str, Any] | None:
    if attempt is None:
        return None
    return {
        "action": attempt.action,
        "status": attempt.status,
        "started_at": attempt.started_at,
        "duration": attempt.duration,
        "operator": attempt.operator,
        "host": attempt.host,
        "error": attempt.error,
    }


def _ledger_label(config: Config, url: str) -> str:
    if not url.startswith("sqlite:///"):
        from migrate.redact import redact

        return redact(url)
    path = Path(url[len("sqlite:///") :])
    return str(path.relative_to(config.root)) if path.is_relative_to(config.root) else str(path)


class _Reading:
    """Everything `status` reads from the ledger, in one pass."""

    def __init__(self, config: Config, env_name: str) -> None:
        reader = LedgerReader(config.ledger_url(env_name), env_name)
        try:
            self.states: dict[str, StepRow] = reader.states()
            self.outputs = reader.outputs()
            self.lock = reader.lock()
            self.attempts = reader.attempts(limit=2000)  # newest first
            self.plans = reader.plans()
            self.approved = reader.approved_steps()
            self.progress = reader.progress()
            self.events = reader.events(limit=6)
            self.latest = _latest_ok_applies(config, env_name, reader)
        finally:
            reader.close()
        self.last: dict[str, AttemptRow] = {}
        self.last_apply: dict[str, AttemptRow] = {}
        for attempt in self.attempts:
            self.last.setdefault(attempt.step_id, attempt)
            if attempt.action == "apply":
                self.last_apply.setdefault(attempt.step_id, attempt)

    def state(self, step_id: str) -> str:
        row = self.states.get(step_id)
        return row.state if row else State.PENDING.value


def _step_row(graph: Plan, step: Shown, data: _Reading, env_name: str, warnings: list[str]) -> dict[str, Any]:
    from migrate.render import fmt_duration

    row = data.states.get(step.id)
    state = data.state(step.id)
    est = estimate(data.latest.get(step.id))
    recorded = row.definition_checksum if row else None
    # a checksum recorded by an older bpmigrate (another format: a hash of the class source) is not compared
    changed = bool(
        recorded and recorded.startswith(CHECKSUM_PREFIX) and state in ("applied", "verified") and recorded != step.definition_checksum()
    )
    if changed:
        warnings.append(f"{step.id}: its code changed after it was applied (re-verify: bpmigrate --env {env_name} verify {step.id})")
    live_run = bool(data.lock and not data.lock["expired"])  # a step in flight under a live lock is just running
    if row and State(state) in IN_FLIGHT and not live_run:
        warnings.append(f"{step.id}: started, never finished ({state}); the next mutating command reconciles it")
    outputs = data.outputs.get(step.id, {})
    last_apply = data.last_apply.get(step.id)
    running = row is not None and State(state) in IN_FLIGHT and row.attempt_id is not None
    return {
        "id": step.id,
        "title": step.display_title(),
        "state": state,
        "reason": row.reason if row else None,
        "skip_label": skip_label(row.reason) if row and state == State.SKIPPED.value and row.reason else None,
        "definition_changed": changed,
        "summary": graph.summary(step.id, outputs),
        "outputs_summary": _outputs_summary(outputs),
        "outputs": outputs,
        "apply_duration": last_apply.duration if last_apply else None,
        "estimate": fmt_duration(est) if est is not None else "no estimate",
        "estimate_seconds": est,
        "gate": step.gate,
        "one_way": step.reversibility == Reversibility.ONE_WAY,
        "last_attempt": _attempt_view(data.last.get(step.id)),
        "progress": _progress_view(data.progress.get(row.attempt_id)) if running and row and row.attempt_id else None,
    }


def _phase(number: int, name: str, steps: list[Shown], rows: list[dict[str, Any]]) -> dict[str, Any]:
    remaining = [r for r in rows if r["state"] not in DONE]
    known = [r["estimate_seconds"] for r in remaining if r["estimate_seconds"] is not None]
    downtime = [r["estimate_seconds"] for s, r in zip(steps, rows, strict=True) if s.causes_downtime]
    return {
        "number": number,
        "name": name,
        "steps": rows,
        "done": len(rows) - len(remaining),
        "total": len(rows),
        "elapsed_seconds": sum(r["apply_duration"] or 0.0 for r in rows),
        # what remains, from rehearsal history: None when nothing remains or none of it was ever rehearsed
        "eta_seconds": sum(known) if known else None,
        "eta_unknown_steps": len(remaining) - len(known),
        # 0.1.0's field: the whole remainder, or None when part of it has no estimate
        "estimate_seconds": sum(known) if len(known) == len(remaining) else None,
        "downtime_seconds": (sum(downtime) if None not in downtime else None) if downtime else 0.0,
        "downtime_steps": [s.id for s in steps if s.causes_downtime],
    }


def _attention(graph: Plan, data: _Reading, env_name: str, rows: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """What needs a human, most urgent first: lock, failures, gates waiting, a fence ahead, stale plans."""
    items: list[dict[str, str]] = []
    base = f"bpmigrate --env {env_name}"
    lock = data.lock
    if lock:
        who = f"{lock['holder']}@{lock['host']} pid {lock['pid']}"
        if lock["expired"]:
            items.append({"kind": "lock", "text": f"lock held by {who} expired (`{lock['command']}`)", "command": f"{base} unlock --force"})
        else:
            items.append({"kind": "lock", "text": f"lock held by {who}: `{lock['command']}`", "command": ""})
    for step in graph.steps:
        state = rows[step.id]["state"]
        if state in FAILED:
            detail = rows[step.id]["reason"] or (rows[step.id]["last_attempt"] or {}).get("error") or ""
            items.append({"kind": "failed", "step": step.id, "text": f"{step.id} {state.replace('_', ' ')}: {detail}".rstrip(": "), "command": f"{base} show {step.id}"})
    ready = [
        s for s in graph.steps
        if rows[s.id]["state"] not in DONE and rows[s.id]["state"] not in FAILED
        and all(data.state(d) in {x.value for x in SATISFIES_DEPENDENCY} for d in s.depends_on)
    ]
    for step in ready:
        if step.gate and step.id not in data.approved:
            items.append({"kind": "gate", "step": step.id, "text": f"{step.id} waits for approval: {step.gate}", "command": f"{base} approve {step.id} --reason '…'"})
    fence = next((s for s in ready if s.reversibility == Reversibility.ONE_WAY), None)
    if fence is not None:
        items.append({"kind": "fence", "step": fence.id, "text": f"{fence.id} is one-way: once applied, rollback cannot cross it", "command": f"{base} show {fence.id}"})
    for step_id, plan in data.plans.items():
        if plan.consumed_at is not None or step_id not in rows or rows[step_id]["state"] in DONE:
            continue
        step = graph.get(step_id)
        changed = [d.id for d in graph.dependencies(step_id) if (data.states.get(d.id) and data.states[d.id].updated_at > plan.created_at)]
        if changed:
            items.append({"kind": "stale_plan", "step": step_id, "text": f"the plan of {step.id} predates changes to {', '.join(changed[:3])}", "command": f"{base} plan {step_id}"})
    return items


def _next_command(graph: Plan, data: _Reading, env_name: str, attention: list[dict[str, str]]) -> str:
    base = f"bpmigrate --env {env_name}"
    for item in attention:
        if item["kind"] in ("failed", "gate") and item.get("command"):
            return item["command"]
    for step in graph.steps:
        state = data.state(step.id)
        if state == State.ROLLBACK_FAILED.value:
            return f"{base} rollback --step {step.id}"
        if state not in DONE:
            return f"{base} apply"
    return ""


def build_status(config: Config, env_name: str, graph: Plan) -> dict[str, Any]:
    url = config.ledger_url(env_name)
    data = _Reading(config, env_name)
    warnings: list[str] = []
    rows = {step.id: _step_row(graph, step, data, env_name, warnings) for step in graph.steps}
    counts: dict[str, int] = {s.value: 0 for s in State}
    for row in rows.values():
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    phases = []
    for number, name in graph.phases.items():
        members: list[Shown] = list(graph.phase_steps(number))
        if members:
            phases.append(_phase(number, name, members, [rows[s.id] for s in members]))
    groups: dict[str, dict[str, Any]] = {}
    for row in rows.values():
        if row["state"] == State.SKIPPED.value and row["reason"]:
            groups.setdefault(row["reason"], {"label": row["skip_label"], "reason": row["reason"], "steps": []})["steps"].append(row["id"])
    if data.lock and data.lock["expired"]:
        warnings.append(f"the lock held by {data.lock['holder']}@{data.lock['host']} expired; if that run is gone: bpmigrate --env {env_name} unlock --force")
    attention = _attention(graph, data, env_name, rows)
    running = [
        {"step": r["id"], "action": (r["last_attempt"] or {}).get("action", r["state"]), "started_at": (r["last_attempt"] or {}).get("started_at"), "progress": r["progress"]}
        for r in rows.values() if State(r["state"]) in IN_FLIGHT
    ]
    return {
        "project": config.project.name,
        "env": env_name,
        "ledger": _ledger_label(config, url),
        "lock": data.lock,
        "counts": {k: v for k, v in counts.items() if v},
        "total": len(rows),
        "done": sum(1 for r in rows.values() if r["state"] in DONE),
        "phases": phases,
        "skip_reasons": [g for g in groups.values()],
        "attention": attention,
        "running": running,
        "recent_events": [
            {"id": e.id, "ts": e.ts, "step_id": e.step_id, "kind": e.kind, "operator": e.operator,
             "detail": f"{e.data.get('from')} → {e.data.get('to')}" if e.kind == "transition" else ""}
            for e in data.events
        ],
        "warnings": warnings,
        "next": _next_command(graph, data, env_name, attention),
        "generated_at": time.time(),
    }


def step_details(config: Config, env_name: str, step: type[Step]) -> dict[str, Any]:
    from migrate.settings import describe, model_for

    reader = LedgerReader(config.ledger_url(env_name), env_name)
    try:
        row = reader.states().get(step.id)
        plan = reader.plans().get(step.id)
        outputs = reader.outputs().get(step.id, {})
        attempts = reader.attempts(step.id, limit=10)
        artifacts = reader.artifacts(step.id)
    finally:
        reader.close()
    return {
        "id": step.id,
        "phase": step.phase,
        "title": step.display_title(),
        "doc": step.describe(),
        "depends_on": list(step.depends_on),
        "reversibility": step.reversibility.value,
        "gate": step.gate,
        "destructive": step.destructive,
        "timeout": step.timeout,
        "retry_attempts": step.retry.attempts,
        "settings": describe(step, model_for(config, env_name, step)) if step.declares_settings() else [],
        "state": row.state if row else "pending",
        "reason": row.reason if row else None,
        "outputs": outputs,
        "last_plan": None if plan is None else {"fingerprint": plan.fingerprint, "complete": plan.complete, "created_at": plan.created_at, "consumed": plan.consumed_at is not None, **plan.summary},
        "attempts": [
            {"action": a.action, "status": a.status, "started_at": a.started_at, "duration": a.duration, "error": a.error, "operator": a.operator, "host": a.host, "metrics": a.metrics}
            for a in attempts
        ],
        "artifacts": artifacts,
    }


def history(config: Config, env_name: str, step_id: str | None, limit: int | None) -> list[dict[str, Any]]:
    reader = LedgerReader(config.ledger_url(env_name), env_name)
    try:
        events = reader.events(step_id, limit)
        callers = reader.run_callers()
    finally:
        reader.close()
    return [
        {"id": e.id, "ts": e.ts, "run_id": e.run_id, "step_id": e.step_id, "kind": e.kind, "operator": e.operator, "host": e.host,
         "caller_arn": callers.get(e.run_id) if e.run_id is not None else None, "data": e.data, "hash": e.hash}
        for e in events
    ]
