"""Read simple top-level values (``key = "value"``) from an environment's Terraform variables file (read-only).

Enough for the values bpmigrate needs from an environment's tfvars when Terraform outputs are not at hand (e.g. the
VPC CIDR of the network policies); anything more complex is Terraform's business.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from migrate.config import EnvConfig

_LINE = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"]*)"\s*(?:#.*)?$')


def var_file(project_root: Path, env: EnvConfig) -> Path:
    """The environment's tfvars: ``terraform.var_file`` or ``<root>/environments/<env>.tfvars``."""
    root = project_root / env.terraform.root
    return (root / env.terraform.var_file) if env.terraform.var_file else root / "environments" / f"{env.name}.tfvars"


def string_value(path: Path, key: str) -> str | None:
    """The string value of top-level ``key`` in ``path``, or None (file or key absent)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match.group(1) == key:
            return match.group(2)
    return None
