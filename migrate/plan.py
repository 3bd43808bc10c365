"""Load the migration plan from the phases directory (like alembic loads revision scripts) and resolve selectors.

A phase is a package ``p<N>_<name>/`` in the phases directory whose ``__init__`` may set ``NUMBER``, ``TITLE`` and
``ORDER`` (its step modules in definition order). Each public module in it (not starting with ``_``) holds one step:
a ``Step`` subclass with an ``id``. Modules starting with ``_`` are helpers. A single-file phase ``p<N>_<name>.py``
(all its steps in one module) is still accepted. The engine knows no phase names: they come from the packages.

The phases directory is imported once, as one package under one canonical name (its directory name, e.g.
``phases``, unless another package of that name is already loaded), so ``import phases.p5_cutover.dns_cutover``
in a test and the engine see the same module and the same classes.

The steps are ordered by phase, then topologically by ``depends_on``, then by definition order.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from migrate.errors import ConfigError
from migrate.plan_nav import Steps
from migrate.step import Reversibility, Step, summary_of

_PHASE_RE = re.compile(r"^p(\d+)_([a-z0-9_]+?)(\.py)?$")


@dataclass(frozen=True)
class Graph(Steps[type[Step]]):
    """The loaded plan: the step classes themselves."""

    def summary(self, step_id: str, outputs: dict[str, Any]) -> str:
        """The step's own one-line summary of its recorded outputs (see ``step_summary``)."""
        return step_summary(self.get(step_id), outputs)


def step_summary(step: type[Step], outputs: dict[str, Any]) -> str:
    """The step's own one-line summary of its outputs; the generic one when its ``summary`` fails or returns junk."""
    if not outputs:
        return ""
    from migrate.redact import redact

    try:
        text = step().summary(outputs)
    except Exception:  # noqa: BLE001 - a broken summary must never break the dashboard
        text = summary_of(outputs)
    if not isinstance(text, str):
        text = summary_of(outputs)
    return redact(" ".join(text.split()))


def _package_name(phases_dir: Path) -> str:
    """One canonical import name for the phases directory: its own name when free (or already this directory)."""
    base = phases_dir.name
    existing = sys.modules.get(base)
    if base.isidentifier() and existing is None and importlib.util.find_spec(base) is None:
        return base
    if base.isidentifier() and existing is not None:
        paths = [Path(p).resolve() for p in getattr(existing, "__path__", [])]
        if phases_dir.resolve() in paths:
            return base
    if base.isidentifier() and existing is None:
        spec = importlib.util.find_spec(base)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if any(Path(p).resolve() == phases_dir.resolve() for p in locations):
            return base
    tag = hashlib.sha1(str(phases_dir.resolve()).encode()).hexdigest()[:8]
    return f"bpm_phases_{tag}"


def _load_package(name: str, directory: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    init = directory / "__init__.py"
    if init.exists():
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(directory)])
    else:  # a plain directory of phase modules: a namespace-like package with no code of its own
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(directory)]
    if spec is None:
        raise ConfigError(f"cannot load {directory}", "not a Python package", "check the phases directory")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if spec.loader is not None and init.exists():
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise _import_error(init, exc) from exc
    return module


def _import_error(path: Path, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"phase module {path} failed to import: {type(exc).__name__}: {exc}",
        "the plan could not be loaded",
        f"fix {path} (run `python -c 'import runpy; runpy.run_path(\"{path}\")'` to see the traceback)",
    )


def _import(name: str, path: Path) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ConfigError:
        raise
    except Exception as exc:  # a broken phase module is a config error, not a trace
        sys.modules.pop(name, None)
        raise _import_error(path, exc) from exc


def _steps_in(module: ModuleType) -> list[type[Step]]:
    found: list[type[Step]] = []
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Step) and value.__module__ == module.__name__ and value.id:
            found.append(value)
    return found


def _phase_modules(package: ModuleType, directory: Path) -> list[str]:
    """The step modules of a phase package: ORDER first, then the others by name."""
    names = sorted(p.stem for p in directory.glob("*.py") if not p.name.startswith("_"))
    order = [str(n) for n in getattr(package, "ORDER", ()) if str(n) in names]
    return order + [n for n in names if n not in order]


def load_graph(phases_dir: Path) -> Graph:
    if not phases_dir.is_dir():
        raise ConfigError(
            f"phases directory {phases_dir} not found",
            "migrate.toml's project.phases_dir must name a directory of p<N>_<name>/ phase packages",
            "fix project.phases_dir in migrate.toml",
        )
    root_name = _package_name(phases_dir)
    _load_package(root_name, phases_dir)
    steps: list[type[Step]] = []
    phases: dict[int, str] = {}
    for path in sorted(phases_dir.iterdir()):
        match = _PHASE_RE.match(path.name)
        if not match or path.name.startswith("_") or (path.is_dir() and not (path / "__init__.py").exists()):
            continue
        if path.is_file() and not match.group(3):
            continue
        number, name = int(match.group(1)), match.group(2)
        if path.is_dir():
            package = _import(f"{root_name}.{path.name}", path / "__init__.py")
            number = int(getattr(package, "NUMBER", number))
            name = str(getattr(package, "TITLE", name))
            found: list[type[Step]] = []
            for mod_name in _phase_modules(package, path):
                module = _import(f"{root_name}.{path.name}.{mod_name}", path / f"{mod_name}.py")
                in_module = _steps_in(module)
                if len(in_module) > 1:
                    raise ConfigError(
                        f"{path.name}/{mod_name}.py defines {len(in_module)} steps ({', '.join(s.id for s in in_module)})",
                        "a phase package holds one step per module, so each step id maps to one file",
                        f"move each step into its own module in {path}",
                    )
                found.extend(in_module)
        else:
            module = _import(f"{root_name}.{path.stem}", path)
            found = _steps_in(module)
        if number in phases and phases[number] != name:
            raise ConfigError(f"two phases numbered {number}", f"{phases[number]} and {name}", "renumber one of them")
        phases[number] = name
        for step in found:
            if step.phase != number:
                raise ConfigError(
                    f"step {step.id} in {path.name} says phase = {step.phase}",
                    f"a step in {path.name} must belong to phase {number}",
                    f"fix the step's phase in {path}",
                )
            steps.append(step)
    return Graph(tuple(_order(steps)), dict(sorted(phases.items())))


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


def load_step(phases_dir: Path, step_id: str) -> type[Step] | None:
    """One step class by id, importing only its own module (``<phase package>/<id with _>.py``); None if absent."""
    root_name = _package_name(phases_dir)
    _load_package(root_name, phases_dir)
    module_name = step_id.replace("-", "_")
    for path in sorted(phases_dir.glob(f"p*_*/{module_name}.py")):
        module = _import(f"{root_name}.{path.parent.name}.{module_name}", path)
        for step in _steps_in(module):
            if step.id == step_id:
                return step
    return None
