"""Live progress bars for long work (rate, done/total, elapsed, ETA): imported by the console reporter when a step
reports progress, never by read-only commands such as ``status`` (rich.progress costs ~10 ms to import)."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text


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
