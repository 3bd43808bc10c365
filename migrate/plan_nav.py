"""The plan's steps in order and the lookups every command makes on them (`get`, `select`, `dependencies`…).

Shared by the loaded plan (``migrate.plan.Graph``: step classes) and the cached index the dashboard reads
(``migrate.plan_index.PlanIndex``: plain records), so this module imports neither the step contract nor pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from migrate.errors import UsageError


class StepMeta(Protocol):
    """What navigation and read-only reports use of a step: a ``Step`` class, or an entry of the cached plan index."""

    @property
    def id(self) -> str: ...

    @property
    def phase(self) -> int: ...

    @property
    def depends_on(self) -> tuple[str, ...]: ...


S = TypeVar("S", bound=StepMeta)


@dataclass(frozen=True)
class Steps(Generic[S]):
    """The plan's steps in execution order and its phases, with the lookups every command needs."""

    steps: tuple[S, ...]  # in execution order
    phases: dict[int, str] = field(default_factory=dict)  # number -> name, as the phase packages say

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.steps]

    def get(self, step_id: str) -> S:
        for step in self.steps:
            if step.id == step_id:
                return step
        close = [s.id for s in self.steps if step_id in s.id or s.id in step_id][:5]
        hint = f"did you mean: {', '.join(close)}" if close else "list them with `bpmigrate steps`"
        raise UsageError(f"unknown step {step_id!r}", f"no step with that id in the plan; {hint}", "bpmigrate steps")

    def index(self, step_id: str) -> int:
        return self.ids.index(self.get(step_id).id)

    def phase_steps(self, phase: int) -> list[S]:
        return [s for s in self.steps if s.phase == phase]

    def dependents(self, step_id: str) -> list[S]:
        """Every step that depends on step_id, directly or not."""
        out: list[S] = []
        frontier = {step_id}
        for step in self.steps:
            if frontier.intersection(step.depends_on):
                out.append(step)
                frontier.add(step.id)
        return out

    def dependencies(self, step_id: str) -> list[S]:
        """Every step step_id depends on, directly or not, in execution order."""
        needed: set[str] = set()
        stack = list(self.get(step_id).depends_on)
        while stack:
            dep = stack.pop()
            if dep not in needed:
                needed.add(dep)
                stack.extend(self.get(dep).depends_on)
        return [s for s in self.steps if s.id in needed]

    def select(self, selector: str | None) -> list[S]:
        """``None``/``all``, ``phase-N``, ``N``, a phase name, or a step id."""
        if selector in (None, "", "all"):
            return list(self.steps)
        assert selector is not None
        phase = self.parse_phase(selector, strict=False)
        if phase is not None:
            return self.phase_steps(phase)
        return [self.get(selector)]

    def from_step(self, step_id: str) -> list[S]:
        return list(self.steps[self.index(step_id) :])

    def parse_phase(self, selector: str, *, strict: bool = True) -> int | None:
        return parse_phase(selector, self.phases, strict=strict)


def parse_phase(selector: str, phases: dict[int, str], *, strict: bool = True) -> int | None:
    text = selector.strip().lower()
    if text.startswith("phase-"):
        text = text[len("phase-") :]
    if text.isdigit() and int(text) in phases:
        return int(text)
    for number, name in phases.items():
        if text == name:
            return number
    if strict:
        numbers = sorted(phases)
        span = f"phase-{numbers[0]} … phase-{numbers[-1]}" if numbers else "none are defined"
        raise UsageError(
            f"unknown phase {selector!r}",
            f"phases are {span} or {', '.join(phases[n] for n in numbers)}",
            "bpmigrate steps",
        )
    return None
