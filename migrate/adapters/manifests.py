"""Render Kubernetes manifest templates: ``${name}`` placeholders (string.Template) in multi-document YAML.

``render(path, values)`` takes one file or a directory (its ``*.yaml``/``*.yml`` files, sorted by name, not
recursive) and returns the documents as dicts. A placeholder without a value is a ConfigError naming the file and the
placeholder; ``$$`` is a literal ``$``. Rendering reads files only (no cluster access), so plans can use it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migrate.errors import ConfigError


def template_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
    if path.is_file():
        return [path]
    raise ConfigError(
        f"manifest template {path} does not exist",
        "the step renders its Kubernetes manifests from this path",
        "restore the file from git (templates/k8s/...) or fix the step's template setting in migrate.toml",
    )


def placeholders(path: Path) -> set[str]:
    """Every ``${name}`` used by the template(s) at ``path``."""
    names: set[str] = set()
    for file in template_files(path):
        for match in string.Template.pattern.finditer(file.read_text()):
            name = match.group("named") or match.group("braced")
            if name:
                names.add(name)
    return names


def _text_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_text(text: str, values: Mapping[str, Any], *, source: str = "<template>") -> list[dict[str, Any]]:
    import yaml

    try:
        rendered = string.Template(text).substitute({k: _text_value(v) for k, v in values.items()})
    except KeyError as exc:
        name = exc.args[0]
        raise ConfigError(
            f"manifest template {source} uses ${{{name}}}, which has no value",
            f"the values given were: {', '.join(sorted(values)) or '(none)'}",
            f"add {name!r} to the step's settings in migrate.toml ([steps.<id>]) or remove it from {source}",
        ) from None
    except ValueError as exc:
        raise ConfigError(
            f"manifest template {source} has an invalid placeholder",
            str(exc),
            f"fix {source}: placeholders are ${{name}}; write $$ for a literal $",
        ) from None
    try:
        docs = [d for d in yaml.safe_load_all(rendered) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"manifest template {source} is not valid YAML after rendering",
            str(exc)[:400],
            f"fix {source} (check the substituted values are YAML-safe)",
        ) from None
    for doc in docs:
        if not isinstance(doc, dict):
            raise ConfigError(
                f"manifest template {source} has a document that is not a mapping",
                repr(doc)[:200],
                f"fix {source}",
            )
    return docs


def render(path: Path, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Render the template file or directory ``path`` with ``values`` into a list of manifest dicts."""
    docs: list[dict[str, Any]] = []
    for file in template_files(path):
        docs.extend(render_text(file.read_text(), values, source=str(file)))
    return docs


class ManifestRenderer:
    """Adapter-shaped access to :func:`render` (templates resolved relative to the project's templates dir)."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir

    def render(self, path: Path | str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        target = Path(path)
        return render(target if target.is_absolute() else self.templates_dir / target, values)


def from_config(env: Any, *, project_root: Path, state_dir: Path, **_: Any) -> ManifestRenderer:
    return ManifestRenderer(project_root / "templates")
