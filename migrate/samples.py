"""No sample in production: step settings that point at the bundled sample files are for the sandbox only.

The project ships sample inputs (``project.sample_paths``, e.g. ``templates/compose/docker-compose.yml`` with fake
credentials) so a rehearsal runs out of the box. Outside a sandbox a setting that still points there — configured
or a step's default — would archive, decommission or read the sample instead of the real deployment: plan (and
apply, which plans first) refuses with exit 2 and names the setting to set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from migrate.config import Config
from migrate.errors import ConfigError
from migrate.step import Step


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def sample_settings(config: Config, env_name: str, step: type[Step]) -> list[tuple[str, str]]:
    """(key, value) of the step's settings in ``env_name`` (defaults included) that point at a bundled sample."""
    from migrate.settings import model_for

    roots = [(config.root / rel).resolve() for rel in config.project.sample_paths]
    values: dict[str, Any] = dict(config.step_settings(env_name, step.id))
    model = model_for(config, env_name, step)
    if model is not None:
        values.update(model.model_dump())
    found = []
    for key, value in values.items():
        for text in _strings(value):
            if not text.strip() or "://" in text or "\n" in text:
                continue
            candidate = Path(text).expanduser()
            candidate = candidate if candidate.is_absolute() else config.root / candidate
            if _inside(candidate.resolve(), roots):
                found.append((key, text))
                break
    return found


def refuse_samples(config: Config, env_name: str, steps: Iterable[type[Step]]) -> None:
    """Outside a sandbox: a ConfigError (exit 2) naming the first setting that points at a sample file."""
    if config.env(env_name).kind == "sandbox":
        return
    for step in steps:
        for key, value in sample_settings(config, env_name, step):
            raise ConfigError(
                f"{config.path}: step {step.id}'s setting {key} = {value!r} is a bundled sample file, "
                f"allowed only in a sandbox (environment {env_name!r} is {config.env(env_name).kind!r})",
                f"in {env_name} the step would act on the sample instead of the real deployment's file",
                f"set [environments.{env_name}.steps.{step.id}] {key} = \"/path/to/the/real/file\" in {config.path}, "
                f"then: bpmigrate --env {env_name} plan",
            )
