"""Resolve a secret reference (environment variable or AWS Secrets Manager) and register it for redaction."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from migrate.errors import ConfigError
from migrate.redact import register

if TYPE_CHECKING:
    from migrate.adapters.aws import AwsAdapter


def resolve(*, env_var: str | None, secret_ref: str | None, aws: AwsAdapter | None = None, key: str = "password") -> str | None:
    """Return the secret value (or None when neither reference is set); the value is registered for redaction."""
    value: str | None = None
    if env_var:
        value = os.environ.get(env_var)
        if value is None:
            raise ConfigError(
                f"environment variable {env_var} is not set",
                "migrate.toml names it as the source of a password",
                f"export {env_var}=... (or change the *_env setting) and re-run",
            )
    elif secret_ref:
        if aws is None:
            raise ConfigError(f"secret {secret_ref} needs AWS access", "no AWS adapter was given", "configure aws in migrate.toml")
        raw = aws.call("secretsmanager", "get_secret_value", SecretId=secret_ref)["SecretString"]
        try:
            parsed = json.loads(raw)
            value = str(parsed[key]) if isinstance(parsed, dict) and key in parsed else raw
        except ValueError:
            value = raw
    register(value)
    return value
