"""The Docker Compose deployment being migrated: its plaintext credentials, and URL rewriting towards AWS.

``credentials(path)`` reads a docker-compose.yml and returns, per service, the values that look secret (variables
with secret-looking names, URLs carrying a password, ``--requirepass``); every value is registered for redaction
before it is returned. The URL helpers point Compose hostnames (``postgres://u:p@postgres:5432/db``) at the AWS
endpoints and swap in the target database's login.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from migrate.errors import ConfigError
from migrate.redact import is_secret_key, register

_URL_CRED_RE = re.compile(r"://[^/@\s]*:[^@/\s]+@")

#: the keys whose value is the database password (replaced by the target database's)
DB_PASSWORD_KEYS = ("DATABASE_PASSWORD", "DB_PASSWORD", "POSTGRES_PASSWORD", "PGPASSWORD")


def service_environment(body: Mapping[str, Any]) -> dict[str, str]:
    """A Compose service's ``environment`` (mapping or ``KEY=value`` list form) as a dict."""
    env = body.get("environment") or {}
    out: dict[str, str] = {}
    if isinstance(env, Mapping):
        for key, value in env.items():
            if value is not None:
                out[str(key)] = str(value)
    elif isinstance(env, list):
        for item in env:
            key, sep, value = str(item).partition("=")
            if sep:
                out[key] = value
    return out


def parse_credentials(text: str, *, source: str = "docker-compose.yml") -> dict[str, dict[str, str]]:
    """Plaintext credentials per Compose service: secret-looking variables, URLs with passwords, --requirepass.

    Every value is registered for redaction before this function returns.
    """
    import yaml

    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML", str(exc)[:300], f"fix {source}") from None
    found: dict[str, dict[str, str]] = {}
    for svc, body in (doc.get("services") or {}).items():
        if not isinstance(body, Mapping):
            continue
        creds: dict[str, str] = {}
        for key, value in service_environment(body).items():
            if value and (is_secret_key(key) or _URL_CRED_RE.search(value)):
                creds[key] = value
        command = body.get("command")
        args = command.split() if isinstance(command, str) else [str(a) for a in command or []]
        for i, arg in enumerate(args[:-1]):
            if arg == "--requirepass":
                creds["REDIS_PASSWORD"] = args[i + 1]
        for value in creds.values():
            register(value)
        if creds:
            found[str(svc)] = creds
    return found


def credentials(path: Path) -> dict[str, dict[str, str]]:
    """:func:`parse_credentials` of the Compose file at ``path`` (ConfigError when it is missing)."""
    if not path.is_file():
        raise ConfigError(
            f"Compose file {path} not found",
            "k8s-config moves the credentials of the Compose deployment into Secrets Manager",
            'set [steps.k8s-config] compose_file = "path/to/docker-compose.yml" in migrate.toml',
        )
    return parse_credentials(path.read_text(), source=str(path))


def with_database_login(data: Mapping[str, str], login: tuple[str, str], db_hosts: set[str]) -> dict[str, str]:
    """Replace the Compose database credentials with the target database's (password keys and database URLs)."""
    user, password = login
    out = dict(data)
    for key, value in data.items():
        if key in DB_PASSWORD_KEYS:
            out[key] = password
        elif "://" in value:
            parts = urlsplit(value)
            hostport = parts.netloc.rpartition("@")[2]
            if parts.scheme.startswith("postgres") and (hostport in db_hosts or parts.hostname in db_hosts):
                login_part = f"{quote(user or parts.username or '', safe='')}:{quote(password, safe='')}"
                out[key] = urlunsplit(
                    (parts.scheme, f"{login_part}@{hostport}", parts.path, parts.query, parts.fragment)
                )
    return out


def rewrite_url_hosts(value: str, host_map: Mapping[str, str]) -> str:
    """Point a Compose URL (``postgres://u:p@postgres:5432/db``) at the AWS endpoint mapped for its host."""
    if "://" not in value:
        return value
    parts = urlsplit(value)
    if not parts.hostname or parts.hostname not in host_map:
        return value
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@{host_map[parts.hostname]}" if userinfo else host_map[parts.hostname]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def from_config(env: Any, **_: Any) -> Any:
    """Module-level functions only (no state): ``ctx.adapters.get("compose")`` returns this module."""
    import sys

    return sys.modules[__name__]
