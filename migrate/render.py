"""Rich rendering: plan panels, check tables, the status dashboard, history, progress bars with rate and ETA."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from migrate.redact import redact

if TYPE_CHECKING:
    from migrate.step import Check, PlanResult

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


GLYPH = {
    "pending": ("·", "dim"),
    "planned": ("○", "cyan"),
    "applying": ("▶", "bold yellow"),
    "applied": ("●", "yellow"),
    "verifying": ("▶", "bold yellow"),
    "verified": ("✓", "green"),
    "apply_failed": ("✗", "bold red"),
    "verify_failed": ("✗", "bold red"),
    "rolling_back": ("↺", "bold magenta"),
    "rolled_back": ("↺", "magenta"),
    "rollback_failed": ("✗", "bold red"),
    "skipped": ("–", "blue"),
}
#: from this console width on, the dashboard adds the "last attempt" and "operator" columns
WIDE = 110


def fit(text: str, width: int) -> str:
    """``text`` in ``width`` columns, never cut inside a token.

    The " · "-separated parts that fit are kept in order and those that do not become one "…"; a text without
    parts that fit is cut after its last whole word that does."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    kept: list[str] = []
    for part in text.split(" · "):
        candidate = " · ".join([*kept, part])
        if len(candidate) + (4 if part != text.split(" · ")[-1] else 0) <= width:
            kept.append(part)
        elif kept[-1:] != ["…"]:
            kept.append("…")
    while kept and len(" · ".join(kept)) > width:
        kept.pop(-2 if len(kept) > 1 and kept[-1] == "…" else -1)
    if any(k != "…" for k in kept):
        return " · ".join(kept).replace(" · …", " …")
    cut = text.rfind(" ", 0, width)  # keep whole words, then "…"
    if cut > 0:
        return text[:cut].rstrip(",;:·") + "…"
    return "…" if width >= 1 else ""


def _bar(done: int, total: int, cells: int) -> Text:
    filled = round(cells * done / total) if total else cells
    bar = Text("━" * filled, style="green")
    bar.append("━" * (cells - filled), style="grey37")
    return bar


def _ago(seconds: float) -> str:
    return "just now" if seconds < 1 else f"{fmt_duration(seconds)} ago"


def _rate(progress: dict[str, Any]) -> str:
    unit = progress.get("unit") or ""
    parts = []
    total = progress.get("total")
    done = progress.get("completed") or 0
    if total:
        parts.append(f"{100 * done / total:.0f}% {done:,.0f}/{total:,.0f} {unit}".rstrip())
    else:
        parts.append(f"{done:,.0f} {unit}".rstrip())
    if progress.get("rate"):
        parts.append(f"{progress['rate']:,.0f} {unit}/s".replace(" /s", "/s"))
    nbytes = (progress.get("counters") or {}).get("bytes")
    if nbytes:
        parts.append(f"{nbytes / 1e6:,.0f} MB")
    if progress.get("eta_seconds") is not None:
        parts.append(f"ETA {fmt_duration(progress['eta_seconds'])}")
    return " · ".join(parts)


def _detail(step: dict[str, Any], notes: dict[str, int]) -> tuple[str, str]:
    """(text, style) of a step's last column: its summary, why it was skipped, what failed, how far it is."""
    state = step["state"]
    if state in ("applying", "verifying", "rolling_back"):
        progress = step.get("progress")
        text = state + (f" · {progress['description']} · {_rate(progress)}" if progress else "")
        return text, "yellow"
    if state == "skipped":
        reason = redact(step.get("reason") or "")
        note = notes.get(reason)
        return (f"skipped: {step.get('skip_label') or reason} [{note}]" if note else f"skipped: {reason}"), "blue"
    if state in ("apply_failed", "verify_failed", "rollback_failed"):
        error = step.get("reason") or (step.get("last_attempt") or {}).get("error") or ""
        return f"{state.replace('_', ' ')}: {redact(str(error))}", "red"
    if state in ("pending", "planned", "rolled_back"):
        est = step.get("estimate_seconds")
        text = state.replace("_", " ") + (f" · est {fmt_duration(est)}" if est is not None else "")
        return text + (" · gated" if step.get("gate") else "") + (" · one-way" if step.get("one_way") else ""), "dim"
    text = step.get("summary") or ""
    if state == "applied":
        text = "applied, not verified" + (f" · {text}" if text else "")
    if step.get("definition_changed"):
        text = "⚠ code changed since applied" + (f" · {text}" if text else "")
    return text, "yellow" if step.get("definition_changed") or state == "applied" else ""


def _when(ts: float, now: float) -> str:
    """HH:MM the same day as ``now``, else MM-DD HH:MM."""
    local, today = time.localtime(ts), time.localtime(now)
    same_day = (local.tm_year, local.tm_yday) == (today.tm_year, today.tm_yday)
    return time.strftime("%H:%M" if same_day else "%m-%d %H:%M", local)


def _top(report: dict[str, Any], width: int, now: float) -> list[Text]:
    """Where we are (one line), then what needs a human (lock, failures, gates, fences, stale plans), then next."""
    total, done = report.get("total", 0), report.get("done", 0)
    head = Text.assemble((report["project"], "bold"), " · ", (report["env"], "bold"), " ")
    head.append_text(_bar(done, total, 10))
    order = ("verified", "skipped", "applied", "pending", "planned", "apply_failed", "verify_failed", "rollback_failed")
    counts = sorted(report["counts"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    facts = [f"{done}/{total}"] + [f"{v} {k.replace('_', ' ')}" for k, v in counts if v]
    if width >= WIDE:
        facts.append(f"ledger {report['ledger']}")
    head.append(" " + fit(" · ".join(facts), max(width - len(head.plain) - 1, 8)))
    lines = [head]
    lock = report.get("lock")
    attention = report.get("attention", [])
    marks = {"lock": ("⏵", "yellow"), "failed": ("✗", "bold red"), "gate": ("⏸", "bold cyan"), "fence": ("⚑", "bold yellow"), "stale_plan": ("↻", "yellow")}
    for item in attention:
        glyph, style = marks.get(item["kind"], ("!", "yellow"))
        text = item["text"]
        if item["kind"] == "lock" and lock:
            text += f" · heartbeat {_ago(max(now - lock['heartbeat_at'], 0))}"
        line = Text(f"{glyph} ", style=style)
        line.append(fit(redact(text), width - 2))
        lines.append(line)
        if item.get("command") and item["command"] != report.get("next"):
            lines.append(Text.assemble("  → ", (fit(item["command"], width - 4), "bold")))
    for warning in report.get("warnings", []):
        lines.append(Text("⚠ " + fit(redact(warning), width - 2), style="yellow"))
    if report.get("next"):
        lines.append(Text.assemble("next: ", (report["next"], "bold")))
    elif not attention:
        lines.append(Text("nothing needs you: every step is verified or skipped", style="green"))
    return lines


def _phase_header(phase: dict[str, Any], width: int) -> Text:
    header = Text.assemble(("phase ", "bold"), (f"{phase['number']} {phase['name']} ", "bold"))
    header.append_text(_bar(phase["done"], phase["total"], 10 if width < WIDE else 20))
    facts = [f"{phase['done']}/{phase['total']}"]
    finished = phase["done"] == phase["total"]
    if phase.get("elapsed_seconds"):
        facts.append(f"{'took' if finished else 'elapsed'} {fmt_duration(phase['elapsed_seconds'])}")
    if not finished and phase.get("eta_seconds") is not None:
        more = f" + {phase['eta_unknown_steps']} unestimated" if phase.get("eta_unknown_steps") else ""
        facts.append(f"ETA {fmt_duration(phase['eta_seconds'])}{more}")
    elif not finished:
        facts.append("ETA unknown: never rehearsed")
    if phase.get("downtime_steps"):
        down = phase.get("downtime_seconds")
        facts.append(f"downtime ≈ {fmt_duration(down)}" if down else "downtime: rehearse to estimate")
    header.append(" " + fit(" · ".join(facts), max(width - len(header.plain) - 1, 10)))
    return header


def _runs(steps: list[dict[str, Any]], notes: dict[str, int]) -> list[list[dict[str, Any]]]:
    """The phase's steps in order, neighbours skipped for the same shared reason grouped together."""
    runs: list[list[dict[str, Any]]] = []
    for step in steps:
        key = notes.get(redact(step.get("reason") or "")) if step["state"] == "skipped" else None
        previous = runs[-1][-1] if runs else None
        if key is not None and previous is not None and previous["state"] == "skipped" and previous.get("reason") == step.get("reason"):
            runs[-1].append(step)
        else:
            runs.append([step])
    return runs


def _step_lines(step: dict[str, Any], notes: dict[str, int], width: int, id_w: int, now: float) -> list[Text]:
    """One line (two at most, when the detail would not fit beside a long id) for one step."""
    wide = width >= WIDE
    glyph, style = GLYPH.get(step["state"], ("?", ""))
    row = Text(f" {glyph} ", style=style)
    row.append(step["id"].ljust(id_w) if len(step["id"]) <= id_w else step["id"])
    took = step.get("apply_duration")
    row.append(f" {fmt_duration(took) if took is not None else '':>6}  ", style="dim")
    if wide:
        last = step.get("last_attempt")
        last_text = f"{last['action']} {last['status']} {_when(last['started_at'], now)}" if last else ""
        row.append(f"{last_text:<24}", style="dim")
        row.append(f"{(last or {}).get('operator', '')[:12]:<13}", style="dim")
    text, detail_style = _detail(step, notes)
    room = width - len(row.plain)
    lines = []
    if len(text) > room and not wide and room < 30:
        lines.append(row)  # the detail goes under the id
        row = Text(" " * 5)
        room = width - 5
    row.append(fit(text, room), style=detail_style)
    return [*lines, row]


def status_dashboard(report: dict[str, Any], width: int | None = None, now: float | None = None) -> Group:
    """The status dashboard: what needs a human first, then one line per step under phase headers, then the
    skip reasons shared by several steps. Fits ``width`` columns (nothing cut inside a token); from WIDE columns on
    it adds the last attempt and its operator."""
    width = width or 80
    now = report.get("generated_at", time.time()) if now is None else now
    lines: list[RenderableType] = list(_top(report, width, now))
    shared = [g for g in report.get("skip_reasons", []) if len(g["steps"]) > 1]
    notes = {redact(g["reason"]): i for i, g in enumerate(shared, 1)}
    steps = [s for p in report["phases"] for s in p["steps"]]
    id_w = min(max((len(s["id"]) for s in steps), default=10), 24)
    for phase in report["phases"]:
        lines.append(_phase_header(phase, width))
        for run in _runs(phase["steps"], notes):
            if len(run) > 1:  # steps side by side, skipped for the same shared reason: one row names them all
                row = Text(f" {GLYPH['skipped'][0]} ", style=GLYPH["skipped"][1])
                row.append(" · ".join(st["id"] for st in run))  # wraps between ids: two lines at most
                label = run[0].get("skip_label") or "skipped"
                row.append(f"  skipped: {label} [{notes[redact(run[0]['reason'])]}]", style="blue")
                lines.append(row)
            else:
                lines.extend(_step_lines(run[0], notes, width, id_w, now))
    for i, group in enumerate(shared, 1):  # the full reason (and its fix) once, for every step that shares it
        line = Text(f"[{i}] ", style="blue")
        reason = redact(group["reason"])
        label = group["label"].rstrip("…")
        rest = reason[len(label) :].lstrip(":; ") if reason.startswith(label) else reason
        line.append(f"skipped, {len(group['steps'])} steps: {label}", style="bold")
        line.append(f": {rest}" if rest else "")
        lines.append(line)
    return Group(*lines)


def watch_view(report: dict[str, Any], width: int | None = None, now: float | None = None) -> Group:
    """`status --watch`: the dashboard, then the running step's progress and the newest ledger events."""
    width = width or 80
    now = time.time() if now is None else now
    parts: list[RenderableType] = [status_dashboard(report, width, now)]
    for run in report.get("running", []):
        line = Text.assemble(("▶ ", "bold yellow"), (f"{run['action']} {run['step']}", "bold"))
        if run.get("started_at"):
            line.append(f" · for {fmt_duration(max(now - run['started_at'], 0))}")
        progress = run.get("progress")
        if progress:
            line.append(f" · {progress['description']}")
            parts.append(line)
            done, total = progress.get("completed") or 0, progress.get("total")
            bar = Text("  ")
            if total:
                bar.append_text(_bar(int(done), int(total), 20))
                bar.append(" ")
            bar.append(fit(_rate(progress), width - len(bar.plain)))
            parts.append(bar)
        else:
            parts.append(line)
    events = report.get("recent_events", [])
    if events:
        parts.append(Text("last events:", style="bold"))
        for e in events[-5:]:
            text = f"{time.strftime('%H:%M:%S', time.localtime(e['ts']))} {e['step_id'] or '-'} {e['kind']} {e['detail']}".rstrip()
            parts.append(Text("  " + fit(redact(text), width - 2), style="dim"))
    parts.append(Text(f"watching the ledger (never the lock) · {time.strftime('%H:%M:%S', time.localtime(now))} · Ctrl-C to stop", style="dim"))
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
