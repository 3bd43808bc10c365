"""HTTP: single requests and a small closed-loop probe (asyncio + httpx) for smoke and health checks.

Load is not generated here: load gates run Locust through :mod:`migrate.adapters.load` (open model, latency from
the intended send time).

Safety: the adapter only talks to loopback addresses or to hosts the environment configures (URLs found in the
environment's step settings, and ``*.<env.domain>``); anything else is refused with an AdapterError, so a typo in a
load-test setting can never point a load generator at someone else's server.

Latency percentiles are computed exactly from every recorded sample (nearest-rank method on the sorted samples:
``p`` = the smallest sample such that at least p % of samples are <= it); nothing is estimated or bucketed.

A probe is bounded by its number of requests and by wall time (``max_seconds``); anything still running after that
is cancelled and counted as an error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from migrate.errors import AdapterError, TransientError
from migrate.redact import redact

if TYPE_CHECKING:
    import httpx

    from migrate.config import EnvConfig

T = TypeVar("T")

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: str
    elapsed_ms: float
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass(frozen=True)
class LatencyStats:
    """Latency and errors of a batch of requests. Percentiles are exact (nearest rank over all samples)."""

    count: int
    errors: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float = 0.0
    mean_ms: float = 0.0
    duration_s: float = 0.0
    achieved_rps: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)  # "HTTP 503" / "timeout" / "connect" -> count
    status_counts: dict[str, int] = field(default_factory=dict)  # "200" -> count
    stopped_by: str = ""  # "count" | "time" | "requests"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """(metric, value) pairs for a table."""
        rows = [
            ("requests", str(self.count)),
            ("errors", f"{self.errors} ({self.error_rate * 100:.2f} %)"),
            ("p50", f"{self.p50_ms:.1f} ms"),
            ("p95", f"{self.p95_ms:.1f} ms"),
            ("p99", f"{self.p99_ms:.1f} ms"),
            ("max", f"{self.max_ms:.1f} ms"),
            ("duration", f"{self.duration_s:.2f} s"),
            (
                "achieved rps",
                f"{self.achieved_rps:.1f}",
            ),
        ]
        if self.error_kinds:
            rows.append(("error kinds", ", ".join(f"{k}: {v}" for k, v in sorted(self.error_kinds.items()))))
        return rows


def percentile(sorted_samples: Sequence[float], pct: float) -> float:
    """Exact nearest-rank percentile of already sorted samples (0.0 for no samples)."""
    if not sorted_samples:
        return 0.0
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    rank = math.ceil(pct / 100 * len(sorted_samples))
    return float(sorted_samples[max(rank, 1) - 1])


@dataclass
class _Sample:
    elapsed_ms: float
    error: str | None  # None = success
    status: int | None


def summarize(
    samples: Iterable[_Sample],
    *,
    duration_s: float,
    stopped_by: str = "",
) -> LatencyStats:
    items = list(samples)
    latencies = sorted(s.elapsed_ms for s in items)
    errors = [s.error for s in items if s.error is not None]
    count = len(items)
    statuses = Counter(str(s.status) for s in items if s.status is not None)
    return LatencyStats(
        count=count,
        errors=len(errors),
        error_rate=(len(errors) / count) if count else 0.0,
        p50_ms=round(percentile(latencies, 50), 3),
        p95_ms=round(percentile(latencies, 95), 3),
        p99_ms=round(percentile(latencies, 99), 3),
        max_ms=round(latencies[-1], 3) if latencies else 0.0,
        min_ms=round(latencies[0], 3) if latencies else 0.0,
        mean_ms=round(sum(latencies) / count, 3) if count else 0.0,
        duration_s=round(duration_s, 3),
        achieved_rps=round(count / duration_s, 2) if duration_s > 0 else 0.0,
        error_kinds=dict(Counter(e for e in errors if e is not None)),
        status_counts=dict(statuses),
        stopped_by=stopped_by,
    )


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


class HttpAdapter:
    """HTTP client restricted to loopback and the configured hosts."""

    def __init__(
        self,
        *,
        allowed_hosts: Iterable[str] = (),
        allowed_suffixes: Iterable[str] = (),
        user_agent: str = "bpmigrate",
    ) -> None:
        self.allowed_hosts = {h.lower() for h in allowed_hosts if h}
        self.allowed_suffixes = tuple(s.lower().lstrip(".") for s in allowed_suffixes if s)
        self.user_agent = user_agent
        self._client: httpx.Client | None = None

    # -- target policy ---------------------------------------------------------------------------------------
    def allow(self, url_or_host: str) -> None:
        """Add a host (or the host of a URL) to the allowed targets."""
        host = _host_of(url_or_host) if "://" in url_or_host else url_or_host.lower()
        if host:
            self.allowed_hosts.add(host)

    def check_target(self, url: str) -> str:
        """Return the URL's host if the adapter may talk to it; raise AdapterError otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AdapterError(
                f"not an http(s) URL: {redact(url)!r}",
                "the HTTP adapter only speaks http:// and https:// to a named host",
                "fix the endpoint in migrate.toml ([steps.<id>] endpoints/url)",
                service="http",
            )
        host = parts.hostname.lower()
        if _is_loopback(host) or host in self.allowed_hosts:
            return host
        if any(host == s or host.endswith("." + s) for s in self.allowed_suffixes):
            return host
        raise AdapterError(
            f"refusing to send HTTP requests to {host}",
            "only loopback and hosts configured for this environment (step settings, *.<domain>) are allowed targets",
            "add the endpoint to the step's settings in migrate.toml (e.g. [steps.app-smoke] endpoints = {...})",
            service="http",
        )

    # -- single requests -------------------------------------------------------------------------------------
    def _sync_client(self) -> httpx.Client:
        if self._client is None:
            import httpx

            self._client = httpx.Client(
                headers={"User-Agent": self.user_agent}, follow_redirects=False, trust_env=False
            )
        return self._client

    def request(
        self,
        method: str,
        url: str,
        *,
        timeout: float = 10.0,
        json_body: Any = None,
        content: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        import httpx

        self.check_target(url)
        start = time.perf_counter()
        try:
            resp = self._sync_client().request(
                method, url, json=json_body, content=content, headers=dict(headers or {}), timeout=timeout
            )
        except httpx.TimeoutException:
            raise TransientError(
                f"HTTP {method} {redact(url)} timed out after {timeout:g} s",
                "the service did not answer in time",
                "check the service's pods/logs (kubectl -n <ns> get pods) and re-run",
                service="http",
            ) from None
        except httpx.HTTPError as exc:
            raise TransientError(
                f"HTTP {method} {redact(url)} failed: {type(exc).__name__}",
                redact(str(exc)) or "connection failed",
                "check the endpoint is up and reachable from this machine, then re-run",
                service="http",
            ) from None
        elapsed = (time.perf_counter() - start) * 1000
        return HttpResponse(resp.status_code, redact(resp.text), round(elapsed, 3), dict(resp.headers))

    def get(self, url: str, timeout: float = 10.0, *, headers: Mapping[str, str] | None = None) -> HttpResponse:
        return self.request("GET", url, timeout=timeout, headers=headers)

    def post(
        self,
        url: str,
        json_body: Any = None,
        timeout: float = 10.0,
        *,
        content: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        return self.request("POST", url, timeout=timeout, json_body=json_body, content=content, headers=headers)

    # -- batches ---------------------------------------------------------------------------------------------
    def probe(
        self,
        url: str,
        *,
        requests: int,
        concurrency: int,
        timeout: float,
        method: str = "GET",
        json_body: Any = None,
        max_seconds: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> LatencyStats:
        """Closed loop: ``concurrency`` workers send ``requests`` requests in total, each as soon as the last ends.

        Bounded by ``max_seconds`` (default: enough for every request to time out once per worker round).
        """
        self.check_target(url)
        if requests < 1 or concurrency < 1 or timeout <= 0:
            raise AdapterError("probe needs requests >= 1, concurrency >= 1 and timeout > 0", "", "fix the settings")
        budget = max_seconds if max_seconds is not None else timeout * math.ceil(requests / concurrency) + 5
        return _run(self._probe(url, requests, concurrency, timeout, method, json_body, budget, dict(headers or {})))

    # -- asyncio internals -----------------------------------------------------------------------------------
    def _async_client(self, concurrency: int) -> httpx.AsyncClient:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        return httpx.AsyncClient(
            headers={"User-Agent": self.user_agent}, limits=limits, follow_redirects=False, trust_env=False
        )

    @staticmethod
    async def _one(
        client: httpx.AsyncClient, method: str, url: str, timeout: float, json_body: Any, headers: dict[str, str]
    ) -> _Sample:
        import httpx

        start = time.perf_counter()
        try:
            resp = await client.request(method, url, json=json_body, headers=headers, timeout=timeout)
            await resp.aread()
        except httpx.TimeoutException:
            return _Sample((time.perf_counter() - start) * 1000, "timeout", None)
        except httpx.ConnectError:
            return _Sample((time.perf_counter() - start) * 1000, "connect", None)
        except httpx.HTTPError as exc:
            return _Sample((time.perf_counter() - start) * 1000, type(exc).__name__, None)
        elapsed = (time.perf_counter() - start) * 1000
        error = f"HTTP {resp.status_code}" if resp.status_code >= 400 else None
        return _Sample(elapsed, error, resp.status_code)

    async def _probe(
        self,
        url: str,
        requests: int,
        concurrency: int,
        timeout: float,
        method: str,
        json_body: Any,
        budget: float,
        headers: dict[str, str],
    ) -> LatencyStats:
        samples: list[_Sample] = []
        remaining = [requests]
        started = time.perf_counter()
        deadline = started + budget

        async with self._async_client(concurrency) as client:

            async def worker() -> None:
                while remaining[0] > 0 and time.perf_counter() < deadline:
                    remaining[0] -= 1
                    samples.append(await self._one(client, method, url, timeout, json_body, headers))

            tasks = [asyncio.create_task(worker()) for _ in range(min(concurrency, requests))]
            _done, pending = await asyncio.wait(tasks, timeout=budget + timeout)
            for task in pending:
                task.cancel()
            cancelled = len(pending)
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        samples.extend(_Sample(timeout * 1000, "cancelled", None) for _ in range(cancelled))
        stopped = "count" if remaining[0] <= 0 else "time"
        return summarize(samples, duration_s=time.perf_counter() - started, stopped_by=stopped)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also when the caller already runs an event loop (then in a thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    failure: list[BaseException] = []

    def runner() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=runner, name="bpmigrate-http", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _urls_in(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        if "://" in obj:
            yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _urls_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _urls_in(value)


def from_config(env: EnvConfig, **_: Any) -> HttpAdapter:
    """Allowed targets: loopback, every host named by a URL in this environment's step settings, *.<domain>."""
    hosts = {_host_of(url) for url in _urls_in(env.steps)}
    suffixes = [env.domain] if env.kind == "aws" and env.domain else []
    return HttpAdapter(allowed_hosts=hosts, allowed_suffixes=suffixes)
