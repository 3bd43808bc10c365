"""Load the migration plan from the phases directory (like alembic loads revision scripts) and resolve selectors.

Every module named ``p<N>_<name>.py`` in the phases directory is imported; each ``Step`` subclass it defines with
an ``id`` becomes a step. Modules starting with ``_`` are helpers. The steps are ordered by phase, then
topologically by ``depends_on``, then by definition order.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from migrate.errors import ConfigError, UsageError
from migrate.step import Reversibility, Step

PHASE_NAMES = {1: "foundation", 2: "data", 3: "app", 4: "ml", 5: "cutover", 6: "cleanup"}
_NAME_TO_PHASE = {name: num for num, name in PHASE_NAMES.items()}
_MODULE_RE = re.compile(r"^p(\d)_[a-z0-9_]+\.py$")


@dataclass(frozen=True)
class Graph:
    steps: tuple[type[Step], ...]  # in execution order

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.steps]

    def get(self, step_id: str) -> type[Step]:
        for step in self.steps:
            if step.id == step_id:
                return step
        close = [s.id for s in self.steps if step_id in s.id or s.id in step_id][:5]
        hint = f"did you mean: {', '.join(close)}" if close else "list them with `bpmigrate steps`"
        raise UsageError(f"unknown step {step_id!r}", f"no step with that id in the plan; {hint}", "bpmigrate steps")

    def index(self, step_id: str) -> int:
        return self.ids.index(self.get(step_id).id)

    def phase_steps(self, phase: int) -> list[type[Step]]:
        return [s for s in self.steps if s.phase == phase]

    def dependents(self, step_id: str) -> list[type[Step]]:
        """Every step that depends on step_id, directly or not."""
        out: list[type[Step]] = []
        frontier = {step_id}
        for step in self.steps:
            if frontier.intersection(step.depends_on):
                out.append(step)
                frontier.add(step.id)
        return out

    def dependencies(self, step_id: str) -> list[type[Step]]:
        """Every step step_id depends on, directly or not, in execution order."""
        needed: set[str] = set()
        stack = list(self.get(step_id).depends_on)
        while stack:
            dep = stack.pop()
            if dep not in needed:
                needed.add(dep)
                stack.extend(self.get(dep).depends_on)
        return [s for s in self.steps if s.id in needed]

    def select(self, selector: str | None) -> list[type[Step]]:
        """``None``/``all``, ``phase-N``, ``N``, a phase name, or a step id."""
        if selector in (None, "", "all"):
            return list(self.steps)
        assert selector is not None
        phase = parse_phase(selector, strict=False)
        if phase is not None:
            return self.phase_steps(phase)
        return [self.get(selector)]

    def from_step(self, step_id: str) -> list[type[Step]]:
        return list(self.steps[self.index(step_id) :])


def parse_phase(selector: str, *, strict: bool = True) -> int | None:
    text = selector.strip().lower()
    if text.startswith("phase-"):
        text = text[len("phase-") :]
    if text.isdigit() and 1 <= int(text) <= 6:
        return int(text)
    if text in _NAME_TO_PHASE:
        return _NAME_TO_PHASE[text]
    if strict:
        raise UsageError(
            f"unknown phase {selector!r}",
            "phases are phase-1 … phase-6 or foundation, data, app, ml, cutover, cleanup",
            "bpmigrate steps",
        )
    return None


def _import(path: Path) -> list[type[Step]]:
    import hashlib

    tag = hashlib.sha1(str(path.parent.resolve()).encode()).hexdigest()[:8]
    name = f"bpm_phases_{tag}.{path.stem}"
    if name in sys.modules:
        module = sys.modules[name]
    else:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load {path}", "not a Python module", "check the phases directory")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - a broken phase module is a config error, not a trace
            del sys.modules[name]
            raise ConfigError(
                f"phase module {path.name} failed to import: {type(exc).__name__}: {exc}",
                "the plan could not be loaded",
                f"fix {path} (run `python {path}` to see the traceback)",
            ) from exc
    found: list[type[Step]] = []
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Step) and value.__module__ == module.__name__ and value.id:
            found.append(value)
    # steps defined in a helper module (phases/_x.py) join a phase by being listed in its __steps__
    for value in getattr(module, "__steps__", ()):
        if isinstance(value, type) and issubclass(value, Step) and value.id and value not in found:
            found.append(value)
    return found


def load_graph(phases_dir: Path) -> Graph:
    if not phases_dir.is_dir():
        raise ConfigError(
            f"phases directory {phases_dir} not found",
            "migrate.toml's project.phases_dir must name a directory of p<N>_<name>.py modules",
            "fix project.phases_dir in migrate.toml",
        )
    parent = str(phases_dir.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)  # lets phase modules import their helpers as `phases._x`
    steps: list[type[Step]] = []
    for path in sorted(phases_dir.iterdir()):
        match = _MODULE_RE.match(path.name)
        if not match:
            continue
        for step in _import(path):
            if step.phase != int(match.group(1)):
                raise ConfigError(
                    f"step {step.id} in {path.name} says phase = {step.phase}",
                    f"a step in module {path.name} must belong to phase {match.group(1)}",
                    f"fix the step's phase in {path}",
                )
            steps.append(step)
    return Graph(tuple(_order(steps)))


def _order(steps: list[type[Step]]) -> list[type[Step]]:
    by_id: dict[str, type[Step]] = {}
    for step in steps:
        if step.id in by_id:
            raise ConfigError(f"duplicate step id {step.id!r}", "step ids must be unique across phases", "rename one of them")
        if not isinstance(step.reversibility, Reversibility):
            raise ConfigError(f"step {step.id}: bad reversibility {step.reversibility!r}", "", "use Reversibility.*")
        by_id[step.id] = step
    for step in steps:
        for dep in step.depends_on:
            if dep not in by_id:
                raise ConfigError(f"step {step.id} depends on unknown step {dep!r}", "every dependency must be a step", "fix depends_on")
            if by_id[dep].phase > step.phase:
                raise ConfigError(
                    f"step {step.id} (phase {step.phase}) depends on {dep} (phase {by_id[dep].phase})",
                    "a step cannot depend on a later phase",
                    "fix depends_on",
                )
    position = {s.id: i for i, s in enumerate(steps)}
    ordered: list[type[Step]] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(step: type[Step], trail: tuple[str, ...]) -> None:
        if step.id in done:
            return
        if step.id in visiting:
            raise ConfigError(f"dependency cycle: {' -> '.join((*trail, step.id))}", "steps must form a DAG", "fix depends_on")
        visiting.add(step.id)
        for dep in sorted(step.depends_on, key=lambda d: (by_id[d].phase, position[d])):
            visit(by_id[dep], (*trail, step.id))
        visiting.discard(step.id)
        done.add(step.id)
        ordered.append(step)

    for step in sorted(steps, key=lambda s: (s.phase, position[s.id])):
        visit(step, ())
    return ordered
