"""Rich rendering: plan panels, check tables, the status dashboard, history, progress bars with rate and ETA."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from migrate.redact import redact
from migrate.step import Check, PlanResult

STATE_STYLE = {
    "pending": "dim",
    "planned": "cyan",
    "applying": "bold yellow",
    "applied": "yellow",
    "verifying": "bold yellow",
    "verified": "green",
    "apply_failed": "bold red",
    "verify_failed": "bold red",
    "rolling_back": "bold magenta",
    "rolled_back": "magenta",
    "rollback_failed": "bold red",
    "skipped": "blue",
}
ACTION_STYLE = {"create": "green", "update": "yellow", "replace": "yellow", "delete": "red", "run": "cyan", "noop": "dim"}


def _e(value: Any) -> str:
    return escape(redact(str(value)))


def plan_panel(step_id: str, title: str, plan: PlanResult | None, note: str = "") -> Panel:
    lines: list[RenderableType] = []
    if plan is None:
        lines.append(Text(note or "nothing to do", style="dim"))
    else:
        if plan.skip_reason:
            lines.append(Text(f"will be skipped: {plan.skip_reason}", style="blue"))
        for change in plan.changes:
            style = ACTION_STYLE.get(change.action, "")
            detail = f" — {_e(change.detail)}" if change.detail else ""
            lines.append(Text.from_markup(f"[{style}]{change.action:>7}[/{style}] {_e(change.target)}{detail}"))
        for item in plan.in_place:
            lines.append(Text.from_markup(f"[dim]in place[/dim] {_e(item)}"))
        for item in plan.unknown:
            lines.append(Text.from_markup(f"[yellow]unknown[/yellow] {_e(item)}"))
        for finding in plan.findings:
            style = {"block": "bold red", "warn": "yellow"}.get(finding.level, "cyan")
            fix = f" (fix: {_e(finding.fix)})" if finding.fix else ""
            lines.append(Text.from_markup(f"[{style}]{finding.level:>7}[/{style}] {_e(finding.message)}{fix}"))
        if not lines:
            lines.append(Text("no changes", style="dim"))
        if note:
            lines.append(Text(note, style="dim"))
    subtitle = f"fingerprint {plan.fingerprint()}" if plan is not None else None
    return Panel(Group(*lines), title=f"[bold]{escape(step_id)}[/bold] · {escape(title)}", subtitle=subtitle, title_align="left")


def checks_table(step_id: str, checks: list[Check]) -> Table:
    table = Table(title=f"verify {step_id}", title_justify="left", show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("observed")
    table.add_column("expected")
    for c in checks:
        table.add_row(_e(c.name), "[green]pass[/green]" if c.ok else "[bold red]FAIL[/bold red]", _e(_short(c.observed)), _e(_short(c.expected)))
    return table


def _short(value: Any, limit: int = 60) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"


def fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "—"


def _when(ts: float) -> str:
    """HH:MM for today, MM-DD HH:MM otherwise (keeps the dashboard's columns narrow)."""
    local = time.localtime(ts)
    today = time.localtime()
    same_day = (local.tm_year, local.tm_yday) == (today.tm_year, today.tm_yday)
    return time.strftime("%H:%M" if same_day else "%m-%d %H:%M", local)


#: below this console width the "last attempt" column is dropped so the outputs/reason column stays readable
NARROW_WIDTH = 110


def status_dashboard(report: dict[str, Any], width: int | None = None) -> Group:
    """Phases × steps with state, last attempt, duration, outputs summary; lock holder; warnings."""
    wide = width is None or width >= NARROW_WIDTH
    parts: list[RenderableType] = []
    lock = report.get("lock")
    header = f"[bold]{escape(report['project'])}[/bold] · env [bold]{escape(report['env'])}[/bold] · ledger {escape(report['ledger'])}"
    if lock:
        state = "[red]expired[/red]" if lock["expired"] else "[yellow]held[/yellow]"
        header += f"\nlock {state} by {escape(lock['holder'])}@{escape(lock['host'])} pid {lock['pid']} · `{escape(lock['command'])}`"
    else:
        header += "\nlock free"
    counts = report["counts"]
    header += "\n" + " · ".join(f"[{STATE_STYLE.get(k, '')}]{k}[/] {v}" for k, v in counts.items() if v)
    parts.append(Panel(Text.from_markup(header), title="bpmigrate status", title_align="left"))
    for phase in report["phases"]:
        est = phase.get("estimate_seconds")
        title = f"phase {phase['number']} · {phase['name']} · remaining {fmt_duration(est) if est is not None else 'no estimate'}"
        if phase.get("downtime_seconds"):
            title += f" · expected downtime window {fmt_duration(phase['downtime_seconds'])}"
        elif phase.get("downtime_seconds") is None:
            title += " · expected downtime window: no estimate yet (rehearse in the sandbox)"
        table = Table(title=title, title_justify="left", expand=True)
        pending = any(step["state"] not in ("verified", "skipped") for step in phase["steps"])
        table.add_column("step", no_wrap=True, min_width=14)
        table.add_column("state", no_wrap=True)
        if wide:
            table.add_column("last attempt", no_wrap=True)
        table.add_column("took", justify="right", no_wrap=True)
        if pending:  # a finished phase has nothing left to estimate: the column goes, the details get the room
            table.add_column("estimate", justify="right")
        table.add_column("outputs / reason", ratio=1, min_width=24, overflow="fold")
        for step in phase["steps"]:
            style = STATE_STYLE.get(step["state"], "")
            state = f"[{style}]{step['state']}[/{style}]"
            last = step.get("last_attempt")
            last_text = f"{last['action']} {last['status']} {_when(last['started_at'])}" if last else "—"
            detail = escape(_short(redact(step.get("reason") or step.get("outputs_summary") or ""), 160))
            if step.get("definition_changed"):
                detail = "[yellow]⚠ step code changed since it was applied[/yellow] " + detail
            cells = [escape(step["id"]), state]
            if wide:
                cells.append(escape(last_text))
            cells.append(fmt_duration(last.get("duration") if last else None))
            if pending:
                cells.append("" if step["state"] in ("verified", "skipped") else escape(step.get("estimate") or ""))
            cells.append(detail)
            table.add_row(*cells)
        parts.append(table)
    for warning in report.get("warnings", []):
        parts.append(Text(f"⚠ {warning}", style="yellow"))
    if report.get("next"):
        parts.append(Text.from_markup(f"next: [bold]{escape(report['next'])}[/bold]"))
    return Group(*parts)


def steps_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="steps", title_justify="left")
    table.add_column("phase", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("title", overflow="fold", ratio=2)
    table.add_column("depends on", overflow="fold", ratio=1)
    table.add_column("reversibility", no_wrap=True)
    table.add_column("gate", no_wrap=True)
    for r in rows:
        table.add_row(str(r["phase"]), escape(r["id"]), escape(r["title"]), escape(", ".join(r["depends_on"])), r["reversibility"], "yes" if r["gate"] else "")
    return table


def history_table(events: list[dict[str, Any]]) -> Table:
    table = Table(title="history", title_justify="left")
    for col in ("#", "time", "step", "event", "operator@host · AWS caller", "detail"):
        table.add_column(col)
    for e in events:
        data = e["data"]
        if e["kind"] == "transition":
            detail = f"{data.get('from')} → {data.get('to')}"
            if data.get("error") or data.get("reason"):
                detail += f" ({_short(data.get('error') or data.get('reason'), 60)})"
        else:
            detail = _short(", ".join(f"{k}={v}" for k, v in data.items() if k not in ("previous",)), 80)
        table.add_row(str(e["id"]), fmt_time(e["ts"]), escape(e["step_id"] or ""), escape(e["kind"]), escape(f"{e['operator']}@{e['host']}" + (f"\n{e['caller_arn']}" if e.get("caller_arn") else "")), escape(redact(detail)))
    return table


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        parts = []
        if speed is not None:
            parts.append(f"{speed:,.0f} {self.unit}/s")
        nbytes = task.fields.get("bytes")
        elapsed = task.elapsed or 0
        if nbytes and elapsed > 0:
            parts.append(f"{nbytes / elapsed / 1e6:,.1f} MB/s")
        return Text(" · ".join(parts), style="cyan")


class _Handle:
    def __init__(self, progress: Progress, task_id: Any) -> None:
        self.progress = progress
        self.task_id = task_id
        self.completed = 0.0
        self.counters: dict[str, float] = {}

    def advance(self, amount: float = 1, **counters: float) -> None:
        self.completed += amount
        for key, value in counters.items():
            self.counters[key] = self.counters.get(key, 0) + value
        fields: dict[str, Any] = dict(self.counters)
        self.progress.update(self.task_id, advance=amount, **fields)

    def update(self, *, total: float | None = None, description: str | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if total is not None:
            kwargs["total"] = total
        if description is not None:
            kwargs["description"] = description
        self.progress.update(self.task_id, **kwargs)


def make_progress(console: Any, description: str, total: float | None, unit: str) -> tuple[Progress, Any, _Handle]:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} " + unit if total else "{task.completed:,.0f} " + unit),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task_id = progress.add_task(description, total=total)
    return progress, task_id, _Handle(progress, task_id)
