"""Reporters: the engine never prints, it emits events to a reporter (doit's model).

* ``ConsoleReporter``: rich output, progress bars with rate and ETA.
* ``JsonReporter``: collects everything; the CLI prints one JSON document (for CI).
* ``RecordingReporter``: keeps the events in order, for tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Protocol

from migrate.redact import redact, redact_obj
from migrate.step import Check, PlanResult


class Reporter(Protocol):
    def message(self, level: str, text: str, step_id: str | None = None) -> None: ...

    def plan(self, step_id: str, title: str, plan: PlanResult | None, note: str = "") -> None: ...

    def step_started(self, step_id: str, action: str) -> None: ...

    def step_finished(self, step_id: str, action: str, ok: bool, detail: str, duration: float) -> None: ...

    def checks(self, step_id: str, checks: list[Check]) -> None: ...

    def progress(self, description: str, total: float | None, unit: str) -> Any: ...


class _NullProgress:
    def __init__(self) -> None:
        self.completed = 0.0

    def advance(self, amount: float = 1, **counters: float) -> None:
        self.completed += amount

    def update(self, *, total: float | None = None, description: str | None = None) -> None:
        pass


class RecordingReporter:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _add(self, kind: str, **data: Any) -> None:
        self.events.append((kind, data))

    def message(self, level: str, text: str, step_id: str | None = None) -> None:
        self._add("message", level=level, text=redact(text), step_id=step_id)

    def plan(self, step_id: str, title: str, plan: PlanResult | None, note: str = "") -> None:
        self._add("plan", step_id=step_id, plan=plan.to_dict() if plan else None, note=note)

    def step_started(self, step_id: str, action: str) -> None:
        self._add("started", step_id=step_id, action=action)

    def step_finished(self, step_id: str, action: str, ok: bool, detail: str, duration: float) -> None:
        self._add("finished", step_id=step_id, action=action, ok=ok, detail=redact(detail))

    def checks(self, step_id: str, checks: list[Check]) -> None:
        self._add("checks", step_id=step_id, checks=[asdict(c) for c in checks])

    @contextmanager
    def progress(self, description: str, total: float | None, unit: str) -> Iterator[_NullProgress]:
        handle = _NullProgress()
        yield handle
        self._add("progress", description=description, completed=handle.completed, unit=unit)

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


class JsonReporter(RecordingReporter):
    """Collects events; ``document()`` is what `--json` prints."""

    def document(self) -> list[dict[str, Any]]:
        return [{"event": kind, **redact_obj(data)} for kind, data in self.events]


class ConsoleReporter:
    def __init__(self, console: Any = None, verbose: bool = False) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=False, highlight=False)
        self.verbose = verbose
        self._started: dict[str, float] = {}

    def message(self, level: str, text: str, step_id: str | None = None) -> None:
        style = {"info": "", "warn": "yellow", "error": "bold red", "ok": "green", "note": "dim"}.get(level, "")
        prefix = f"[bold]{step_id}[/bold]: " if step_id else ""
        self.console.print(f"{prefix}{_esc(redact(text))}", style=style or None)

    def plan(self, step_id: str, title: str, plan: PlanResult | None, note: str = "") -> None:
        from migrate.render import plan_panel

        self.console.print(plan_panel(step_id, title, plan, note))

    def step_started(self, step_id: str, action: str) -> None:
        self._started[f"{step_id}:{action}"] = time.monotonic()
        self.console.print(f"[cyan]→[/cyan] {action} [bold]{step_id}[/bold] …")

    def step_finished(self, step_id: str, action: str, ok: bool, detail: str, duration: float) -> None:
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        extra = f" — {_esc(redact(detail))}" if detail else ""
        self.console.print(f"{mark} {action} [bold]{step_id}[/bold] ({duration:.1f}s){extra}")

    def checks(self, step_id: str, checks: list[Check]) -> None:
        from migrate.render import checks_table

        if checks:
            self.console.print(checks_table(step_id, checks))

    @contextmanager
    def progress(self, description: str, total: float | None, unit: str) -> Iterator[Any]:
        from migrate.render import make_progress

        progress, task_id, handle = make_progress(self.console, description, total, unit)
        with progress:
            yield handle
            progress.update(task_id, completed=handle.completed)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
