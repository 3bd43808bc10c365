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


# -- the add-on version table and the Kubernetes versions bpmigrate supports (one place) -----------------------------
VERSIONS_FILE = Path("k8s") / "versions.toml"


def version_table(templates_dir: Path) -> dict[str, dict[str, str]]:
    """``templates/k8s/versions.toml``: per Kubernetes minor ("1.33"), the add-on versions that match it."""
    import tomllib

    path = templates_dir / VERSIONS_FILE
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"cannot read the add-on version table {path}",
            str(exc)[:300],
            f"restore {VERSIONS_FILE} from git (templates/), then re-run",
        ) from None
    table = data.get("kubernetes") or {}
    return {str(minor): {str(k): str(v) for k, v in row.items()} for minor, row in table.items()}


def minor_of(version: str) -> str:
    """``v1.33.4-eks-abc`` / ``1.33`` -> ``1.33``."""
    parts = version.strip().lstrip("v").split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else version


def addon_versions(templates_dir: Path, kubernetes_version: str) -> dict[str, str]:
    """The add-on versions for the cluster's Kubernetes version (ConfigError naming the supported ones)."""
    table = version_table(templates_dir)
    minor = minor_of(kubernetes_version)
    if minor not in table:
        raise ConfigError(
            f"Kubernetes {minor} is not in the add-on version table ({', '.join(sorted(table))})",
            "the Cluster Autoscaler's minor version must match the cluster's; the table pins one per version",
            f'add a [kubernetes."{minor}"] row to templates/{VERSIONS_FILE}, or run a supported cluster version',
        )
    return table[minor]


def schema_problems(docs: list[dict[str, Any]], kubernetes_version: str) -> list[str]:
    """Strict offline OpenAPI validation (kubernetes-validate) of each manifest; kinds without a bundled schema (CRDs)
    are not checked. Returns one line per invalid manifest: ``Kind/name: path: message``."""
    import kubernetes_validate

    version = minor_of(kubernetes_version)
    problems: list[str] = []
    for doc in docs:
        meta = doc.get("metadata") or {}
        what = f"{doc.get('kind')}/{meta.get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            continue
        except kubernetes_validate.ValidationError as exc:
            location = ".".join(str(p) for p in exc.path) or "(document)"
            problems.append(f"{what}: {location}: {exc.message}")
        except kubernetes_validate.InvalidSchemaError as exc:  # pragma: no cover - a broken library install
            problems.append(f"{what}: cannot validate ({exc})")
    return problems


def schema_versions() -> tuple[str, ...]:
    """The Kubernetes minors kubernetes-validate ships schemas for."""
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    found = {minor_of(p.name.split("-")[0]) for p in root.iterdir() if p.name.startswith("v")}
    return tuple(sorted(found, key=lambda v: tuple(int(x) for x in v.split("."))))


# -- the user's own manifests (bring your own) -------------------------------------------------------------------------
def load_user_manifests(path: Path, *, kustomize: Any = None) -> list[dict[str, Any]]:
    """A team's own manifests: plain YAML files in ``path`` (sorted, not rendered: ``$`` stays as written), or, when
    ``path`` holds a kustomization.yaml, the output of ``kustomize(path) -> str`` (``kubectl kustomize``)."""
    import yaml

    if not path.is_dir():
        raise ConfigError(
            f"manifests_dir {path} is not a directory",
            "the step applies the YAML files found there instead of the bundled templates",
            "fix manifests_dir in migrate.toml ([steps.<id>] or [environments.<env>.steps.<id>])",
        )
    if any((path / name).is_file() for name in ("kustomization.yaml", "kustomization.yml", "Kustomization")):
        if kustomize is None:
            raise ConfigError(
                f"{path} is a kustomize layout but kubectl is not available to render it",
                "bpmigrate renders kustomize layouts with `kubectl kustomize`",
                f"install kubectl, or render it yourself (`kustomize build {path} > out/all.yaml`) and point "
                "manifests_dir at the output directory",
            )
        texts = [(f"{path} (kustomize)", str(kustomize(path)))]
    else:
        texts = [(str(f), f.read_text()) for f in template_files(path)]
    docs: list[dict[str, Any]] = []
    for source, text in texts:
        try:
            loaded = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source} is not valid YAML", str(exc)[:400], f"fix {source}") from None
        for doc in loaded:
            if not isinstance(doc, dict) or not doc.get("kind"):
                raise ConfigError(f"{source} has a document that is not a manifest", repr(doc)[:200], f"fix {source}")
            if doc["kind"] == "List":
                docs.extend(d for d in doc.get("items") or [] if isinstance(d, dict))
            else:
                docs.append(doc)
    return docs
