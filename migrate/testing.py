"""Helpers for tests of steps and adapters: a real StepContext without running the whole engine.

``make_context`` builds the same StepContext the engine builds, with durable checkpoints and intents kept in a
real ledger under ``tmp_path`` (SQLite), so step tests exercise the real code paths.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from migrate.adapters import Adapters
from migrate.config import EnvConfig
from migrate.step import Check, PlanResult, Step, StepContext


class _DictCheckpoints:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def put(self, key: str, data: dict[str, Any] | None = None) -> None:
        self.data[key] = dict(data or {})

    def all(self) -> dict[str, dict[str, Any]]:
        return dict(self.data)

    def clear(self) -> None:
        self.data.clear()


class _Progress:
    def __init__(self) -> None:
        self.completed = 0.0
        self.counters: dict[str, float] = {}

    def advance(self, amount: float = 1, **counters: float) -> None:
        self.completed += amount
        for key, value in counters.items():
            self.counters[key] = self.counters.get(key, 0) + value

    def update(self, *, total: float | None = None, description: str | None = None) -> None:
        pass


class RecordingContext(StepContext):
    """A StepContext that also keeps what the step recorded, for assertions."""

    recorded_intents: list[tuple[str, dict[str, Any]]]
    recorded_logs: list[str]
    recorded_artifacts: list[tuple[str, Path, str, int]]
    recorded_metrics: dict[str, float]


def make_context(
    tmp_path: Path,
    env: EnvConfig,
    step_id: str = "test-step",
    *,
    settings: Mapping[str, Any] | None = None,
    upstream: Mapping[str, Mapping[str, Any]] | None = None,
    project_root: Path | None = None,
    plan: PlanResult | None = None,
    other_settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> RecordingContext:
    """A context for ``step_id``. When ``step_id`` names a step of the project's plan that declares ``Settings``,
    ``settings`` are validated against that model (as the engine does). ``ctx.reverify(other)`` runs the other
    step's verify through a context of its own, with ``other_settings[other]``."""
    root = project_root or Path(__file__).resolve().parent.parent
    step_cls = _plan_step(root, step_id)
    model = step_cls.Settings.model_validate(dict(settings or {})) if step_cls else None

    def reverify(other: str) -> list[Check]:
        other_cls = _plan_step(root, other)
        if other_cls is None:
            raise KeyError(f"no step {other!r} in the plan under {root}")
        child = make_context(
            tmp_path / "reverify" / other,
            env,
            other,
            settings=(other_settings or {}).get(other, {}),
            upstream=upstream,
            project_root=project_root,
            other_settings=other_settings,
        )
        step = other_cls()
        reason = step.skip_reason(child)
        if reason:
            return [Check(f"{other}: skipped in this environment", True, reason, "")]
        return step.verify(child)
    state_dir = tmp_path / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    intents: list[tuple[str, dict[str, Any]]] = []
    logs: list[str] = []
    artifacts: list[tuple[str, Path, str, int]] = []
    metrics: dict[str, float] = {}

    @contextmanager
    def progress(description: str, total: float | None, unit: str) -> Iterator[_Progress]:
        yield _Progress()

    def write_metrics(values: dict[str, float]) -> None:
        metrics.update(values)

    ctx = RecordingContext(
        step_id=step_id,
        env_name=env.name,
        env=env,
        settings=dict(settings or {}),
        adapters=Adapters(env, project_root=root, state_dir=state_dir),
        upstream=dict(upstream or {}),
        state_dir=state_dir,
        templates_dir=root / "templates",
        project_root=root,
        intent_writer=lambda action, details: intents.append((action, details)),
        intents=[],
        checkpoints=_DictCheckpoints(),
        progress_factory=progress,
        logger=logs.append,
        artifact_writer=lambda kind, path, sha, size: artifacts.append((kind, path, sha, size)),
        metrics_writer=write_metrics,
        plan=plan,
        settings_model=model,
        reverifier=reverify,
    )
    ctx.recorded_intents = intents
    ctx.recorded_logs = logs
    ctx.recorded_artifacts = artifacts
    ctx.recorded_metrics = metrics
    return ctx


def _plan_step(root: Path, step_id: str) -> type[Step] | None:
    from migrate.plan import load_step

    phases = root / "phases"
    if not phases.is_dir():
        return None
    return load_step(phases, step_id)
