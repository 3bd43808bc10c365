"""Step settings: validate every ``[steps.<id>]`` section of migrate.toml against the step's declared model.

Project-wide ``[steps.<id>]`` is merged with ``[environments.<env>.steps.<id>]`` (the environment wins) and
validated against the step's nested ``Settings`` class when the plan loads, for every environment: a misspelled or
mistyped key is a configuration error (exit 2) that names the step, the key and the expected type.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from migrate.config import Config
from migrate.errors import ConfigError
from migrate.plan import Graph
from migrate.step import Step, StepSettings


def model_for(config: Config, env_name: str, step: type[Step]) -> StepSettings | None:
    """The step's validated settings in this environment (a step that declares no model accepts no key)."""
    return _validate(config, env_name, step)


def _where(config: Config, env_name: str, step_id: str, key: str) -> str:
    if key in config.env(env_name).steps.get(step_id, {}):
        return f"[environments.{env_name}.steps.{step_id}]"
    return f"[steps.{step_id}]"


def _expected(step: type[Step], key: str) -> str:
    field = step.Settings.model_fields.get(key)
    if field is None:
        return ""
    annotation = field.annotation
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _validate(config: Config, env_name: str, step: type[Step]) -> StepSettings:
    values = config.step_settings(env_name, step.id)
    try:
        return step.Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        first_key = ""
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "?"
            top = str(err["loc"][0]) if err["loc"] else key
            first_key = first_key or top
            if err["type"] == "extra_forbidden":
                known = ", ".join(sorted(step.Settings.model_fields)) or "none"
                problems.append(f"unknown key {key!r} (step {step.id} accepts: {known})")
            else:
                got = values.get(top, "?")
                problems.append(f"{key} = {got!r}: {err['msg']} (expected {_expected(step, top) or 'see bpmigrate show'})")
        raise ConfigError(
            f"{config.path}: {_where(config, env_name, step.id, first_key)}: {'; '.join(problems)}",
            f"the settings of step {step.id} are validated against its Settings model when migrate.toml loads",
            f"fix {config.path}; the accepted keys, types and defaults: bpmigrate show {step.id}",
        ) from None


def validate_settings(config: Config, graph: Graph) -> None:
    """Every environment's settings for every step; unknown step ids are refused too."""
    known = set(graph.ids)
    sections = [("", config.steps)] + [(name, env.steps) for name, env in config.environments.items()]
    for env_name, steps in sections:
        for step_id in steps:
            if step_id not in known:
                where = f"[environments.{env_name}.steps.{step_id}]" if env_name else f"[steps.{step_id}]"
                close = [s for s in known if step_id in s or s in step_id][:3]
                raise ConfigError(
                    f"{config.path}: {where} names no step of the plan",
                    f"known steps: {', '.join(close) if close else 'see bpmigrate steps'}",
                    f"fix the section name in {config.path} (list the steps: bpmigrate steps)",
                )
    for env_name in config.environments:
        for step in graph.steps:
            _validate(config, env_name, step)


def describe(step: type[Step], current: StepSettings | None = None) -> list[dict[str, Any]]:
    """The step's settings for `show` and the runbook: key, type, default, description (and the value in effect)."""
    rows = []
    for key, field in step.Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        row = {"key": key, "type": _expected(step, key), "default": default, "description": field.description or ""}
        if current is not None:
            row["value"] = getattr(current, key)
        rows.append(row)
    return rows
