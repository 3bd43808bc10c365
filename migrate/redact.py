"""Secret redaction, applied at the adapter boundary, in the ledger writer, in logs, --json output and errors.

Two mechanisms, both cheap:
* patterns: URL credentials (``scheme://user:pass@host``), ``key=value`` / ``"key": "value"`` pairs whose key
  looks secret (password, secret, token, api_key, access_key, private_key, credential), ``Authorization``/Bearer
  headers, AWS secret access keys;
* exact values: adapters that read a secret (from the environment or Secrets Manager) call :func:`register` so the
  literal value is masked wherever it later appears.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

MASK = "***"

_SECRET_KEY = r"(?:[A-Za-z0-9_\-]*?(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|authorization)[A-Za-z0-9_\-]*)"
_KEY_RE = re.compile(rf"^{_SECRET_KEY}$", re.IGNORECASE)

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: Bearer xxx
    (re.compile(r"(?P<pre>\bBearer\s+)(?P<secret>[A-Za-z0-9._~+/=\-]{8,})"), rf"\g<pre>{MASK}"),
    # scheme://user:password@host  -> scheme://user:***@host
    (re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)(?P<secret>[^@/?#\s]+)(?P<post>@)"), rf"\g<pre>{MASK}\g<post>"),
    # "password": "value"  (JSON)
    (re.compile(rf"(?P<pre>\"{_SECRET_KEY}\"\s*:\s*\")(?P<secret>[^\"]*)(?P<post>\")", re.IGNORECASE), rf"\g<pre>{MASK}\g<post>"),
    # password=value / PGPASSWORD=value / token: value  (libpq DSNs, env dumps, YAML-ish)
    (re.compile(rf"(?P<pre>\b{_SECRET_KEY}\s*[=:]\s*)(?P<q>['\"]?)(?P<secret>[^\s'\"&;,]+)(?P=q)", re.IGNORECASE), rf"\g<pre>\g<q>{MASK}\g<q>"),
    # AWS secret access keys (40 chars base64-ish) following an access key id context
    (re.compile(r"(?P<pre>\bAKIA[0-9A-Z]{16}\b[^A-Za-z0-9/+]{1,8})(?P<secret>[A-Za-z0-9/+]{40})"), rf"\g<pre>{MASK}"),
]

_lock = threading.Lock()
_values: set[str] = set()


def register(value: str | None) -> None:
    """Remember a secret's literal value so that it is masked wherever it appears later."""
    if value and len(value) >= 4:
        with _lock:
            _values.add(value)


def is_secret_key(key: str) -> bool:
    return bool(_KEY_RE.match(key))


def redact(text: str) -> str:
    """Mask anything in ``text`` that looks like a credential."""
    if not text:
        return text
    out = text
    with _lock:
        values = sorted(_values, key=len, reverse=True)
    for value in values:
        if value in out:
            out = out.replace(value, MASK)
    for pattern, repl in _PATTERNS:
        out = pattern.sub(repl, out)
    return out


def redact_obj(obj: Any) -> Any:
    """Redact a JSON-like structure: values under secret-looking keys are masked; strings are pattern-redacted."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        result: dict[str, Any] = {}
        for key, value in obj.items():
            skey = str(key)
            if is_secret_key(skey) and value not in (None, "", False, True) and not isinstance(value, (Mapping, list)):
                result[skey] = MASK
            else:
                result[skey] = redact_obj(value)
        return result
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj
