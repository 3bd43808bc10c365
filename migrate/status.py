"""Read-only reports: status dashboard data, history, step details, estimates from rehearsal history.

This module never imports SQLAlchemy, boto3 or kubernetes for a SQLite ledger, so `bpmigrate status` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from migrate.config import Config
from migrate.ledger_read import AttemptRow, LedgerReader
from migrate.plan import Graph
from migrate.states import IN_FLIGHT, State
from migrate.step import CHECKSUM_PREFIX, Step

#: outputs shown first, untruncated, in the dashboard's summary (where a step's proof lives)
_LEAD_OUTPUTS = ("terraform_state",)


def _summary(outputs: dict[str, Any]) -> str:
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
    state_dir = config.state_dir
    for name in config.environments:
        if name == current_env:
            continue
        url = config.ledger_url(name)
        if url.startswith("sqlite:///") and Path(url[len("sqlite:///") :]).exists():
            try:
                readers.append(LedgerReader(url, name))
            except Exception:  # noqa: BLE001 - an unreadable other ledger just gives no estimate
                continue
    del state_dir
    for reader in readers:
        try:
            for attempt in reader.attempts(limit=5000):
                if attempt.action != "apply" or attempt.status not in ("ok",) or attempt.duration is None:
                    continue
                best = latest.get(attempt.step_id)
                if best is None or attempt.started_at > best.started_at:
                    latest[attempt.step_id] = attempt
        except Exception:  # noqa: BLE001
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


def build_status(config: Config, env_name: str, graph: Graph) -> dict[str, Any]:
    from migrate.render import fmt_duration

    url = config.ledger_url(env_name)
    reader = LedgerReader(url, env_name)
    try:
        states = reader.states()
        outputs = reader.outputs()
        lock = reader.lock()
        attempts = reader.attempts(limit=2000)
        latest = _latest_ok_applies(config, env_name, reader)
    finally:
        reader.close()
    last_by_step: dict[str, AttemptRow] = {}
    for attempt in attempts:  # newest first
        last_by_step.setdefault(attempt.step_id, attempt)
    counts: dict[str, int] = {s.value: 0 for s in State}
    phases: list[dict[str, Any]] = []
    warnings: list[str] = []
    next_cmd = ""
    for number, name in graph.phases.items():
        rows = []
        total_estimate = 0.0
        have_estimate = True
        downtime = 0.0
        have_downtime = True
        for step in graph.phase_steps(number):
            row = states.get(step.id)
            state = row.state if row else State.PENDING.value
            counts[state] = counts.get(state, 0) + 1
            last = last_by_step.get(step.id)
            est = estimate(latest.get(step.id))
            if state not in (State.VERIFIED.value, State.SKIPPED.value):
                if est is None:
                    have_estimate = False
                else:
                    total_estimate += est
            if step.causes_downtime:
                if est is None:
                    have_downtime = False
                else:
                    downtime += est
            recorded = row.definition_checksum if row else None
            # a checksum recorded by an older bpmigrate (another format: a hash of the class source) is not compared
            changed = bool(
                recorded
                and recorded.startswith(CHECKSUM_PREFIX)
                and state in ("applied", "verified")
                and recorded != step.definition_checksum()
            )
            if changed:
                warnings.append(f"{step.id}: its code changed after it was applied (re-verify: bpmigrate verify {step.id})")
            if row and State(state) in IN_FLIGHT:
                warnings.append(f"{step.id}: started, never finished ({state}); the next mutating command reconciles it")
            if not next_cmd and state not in (State.VERIFIED.value, State.SKIPPED.value):
                next_cmd = f"bpmigrate --env {env_name} apply" if state != "rollback_failed" else f"bpmigrate --env {env_name} rollback --step {step.id}"
            rows.append(
                {
                    "id": step.id,
                    "title": step.display_title(),
                    "state": state,
                    "reason": row.reason if row else None,
                    "definition_changed": changed,
                    "outputs_summary": _summary(outputs.get(step.id, {})),
                    "outputs": outputs.get(step.id, {}),
                    "estimate": fmt_duration(est) if est is not None else "no estimate",
                    "estimate_seconds": est,
                    "last_attempt": None
                    if last is None
                    else {
                        "action": last.action,
                        "status": last.status,
                        "started_at": last.started_at,
                        "duration": last.duration,
                        "operator": last.operator,
                        "host": last.host,
                        "error": last.error,
                    },
                }
            )
        if rows:
            phases.append(
                {
                    "number": number,
                    "name": name,
                    "steps": rows,
                    "estimate_seconds": total_estimate if have_estimate else None,
                    "downtime_seconds": (downtime if have_downtime else None)
                    if any(s.causes_downtime for s in graph.phase_steps(number))
                    else 0.0,
                }
            )
    if lock and lock["expired"]:
        warnings.append(f"the lock held by {lock['holder']}@{lock['host']} expired; if that run is gone: bpmigrate unlock --force")
    return {
        "project": config.project.name,
        "env": env_name,
        "ledger": url if not url.startswith("sqlite:///") else str(Path(url[len("sqlite:///") :]).relative_to(config.root) if Path(url[len("sqlite:///") :]).is_relative_to(config.root) else url),
        "lock": lock,
        "counts": {k: v for k, v in counts.items() if v},
        "phases": phases,
        "warnings": warnings,
        "next": next_cmd if next_cmd else "",
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
