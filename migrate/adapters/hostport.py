"""``host:port`` parsing and formatting, IPv6-correct (``[::1]:5432``), in one place for every step and adapter."""

from __future__ import annotations

import ipaddress
from typing import Any


def split_host_port(value: Any, default_port: int) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``host``, a bare IPv6 address (``::1``) -> (host, port); brackets removed.

    A bare IPv6 address is never split at its last colon (``fe80::1`` is a host, not host ``fe80:`` port 1)."""
    text = str(value or "").strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if sep and rest.startswith(":") and rest[1:].isdigit():
            return host, int(rest[1:])
        return (host if sep else text), default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if port.isdigit() and host:
            return host, int(port)
    return text, default_port


def join_host_port(host: str, port: int) -> str:
    """The inverse of :func:`split_host_port`: brackets around an IPv6 address."""
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"
