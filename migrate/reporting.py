"""Reporters: the engine never prints, it emits events to a reporter (doit's model).

* ``ConsoleReporter``: rich output, progress bars with rate and ETA.
* ``JsonReporter``: collects everything; the CLI prints one JSON document (for CI).
* ``RecordingReporter``: keeps the events in order, for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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
        from migrate.render_progress import make_progress

        progress, task_id, handle = make_progress(self.console, description, total, unit)
        with progress:
            yield handle
            progress.update(task_id, completed=handle.completed)


class _Persisted:
    """A progress handle that also hands its latest snapshot to ``write`` (the ledger), at most every ``interval`` s."""

    def __init__(self, inner: Any, write: Callable[[dict[str, Any]], None], snapshot: dict[str, Any], interval: float) -> None:
        self.inner = inner
        self._write = write
        self.snapshot = snapshot
        self._interval = interval
        self._last = 0.0

    @property
    def completed(self) -> float:
        return float(self.snapshot["completed"])

    def advance(self, amount: float = 1, **counters: float) -> None:
        self.inner.advance(amount, **counters)
        self.snapshot["completed"] += amount
        for key, value in counters.items():
            self.snapshot["counters"][key] = self.snapshot["counters"].get(key, 0) + value
        self.flush()

    def update(self, *, total: float | None = None, description: str | None = None) -> None:
        self.inner.update(total=total, description=description)
        if total is not None:
            self.snapshot["total"] = total
        if description is not None:
            self.snapshot["description"] = description
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last >= self._interval:
            self._last = now
            try:
                self._write({**self.snapshot, "counters": dict(self.snapshot["counters"]), "at": now})
            except Exception:  # noqa: BLE001 - a progress report must never fail the step it reports on
                pass


def persisting(factory: Callable[..., Any], write: Callable[[dict[str, Any]], None], interval: float = 1.0) -> Callable[..., Any]:
    """Wrap a reporter's progress factory so the latest snapshot reaches the ledger too (``status --watch``)."""

    @contextmanager
    def progress(description: str, total: float | None, unit: str) -> Iterator[Any]:
        snapshot: dict[str, Any] = {
            "description": redact(description), "unit": unit, "total": total, "completed": 0.0, "counters": {},
            "started_at": time.time(),
        }
        with factory(description, total, unit) as inner:
            handle = _Persisted(inner, write, snapshot, interval)
            handle.flush(force=True)
            try:
                yield handle
            finally:
                snapshot["done"] = True
                handle.flush(force=True)

    return progress


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
