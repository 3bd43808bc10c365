"""HttpAdapter against real local HTTP servers (stdlib ThreadingHTTPServer on 127.0.0.1) whose latency and error
rate the tests control: exact percentiles, probe bounds, error accounting, target restrictions. (Load is Locust's:
tests/test_load.py, which reuses ControlledServer.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from migrate.adapters.http import HttpAdapter, LatencyStats, _Sample, from_config, percentile, summarize
from migrate.config import EnvConfig
from migrate.errors import AdapterError, TransientError


class ControlledServer:
    """A local HTTP server: ``delay_s`` per request, every ``fail_every``-th request answers ``fail_status``; with
    ``stall_every_s`` it stalls: every request arriving in the first ``stall_s`` of each ``stall_every_s`` period waits
    until that stall ends (a GC pause / lock convoy as the client sees it)."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.stall_every_s = 0.0
        self.stall_s = 1.0
        self.started = time.monotonic()
        self.fail_every = 0
        self.fail_status = 500
        self.count = 0
        self.paths: list[str] = []
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with server._lock:
                    server.count += 1
                    n = server.count
                    server.paths.append(self.path)
                    server.bodies.append(body)
                if server.delay_s:
                    time.sleep(server.delay_s)
                if server.stall_every_s:
                    phase = (time.monotonic() - server.started) % server.stall_every_s
                    if phase < server.stall_s:
                        time.sleep(server.stall_s - phase)
                failing = server.fail_every and n % server.fail_every == 0
                status = server.fail_status if failing else 200
                payload = json.dumps({"status": "ok" if not failing else "error", "n": n}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ControlledServer:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[ControlledServer]:
    with ControlledServer() as srv:
        yield srv


def test_percentile_is_exact_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 95) == 95.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 95) == 0.0
    # 20 samples: p95 is the 19th smallest, not an interpolation
    twenty = sorted([10.0] * 18 + [300.0, 900.0])
    assert percentile(twenty, 95) == 300.0
    with pytest.raises(ValueError):
        percentile(samples, 0)


def test_summarize_counts_errors_and_kinds() -> None:
    samples = [_Sample(float(i), None, 200) for i in range(1, 98)]
    samples += [_Sample(500.0, "HTTP 503", 503), _Sample(1000.0, "timeout", None), _Sample(2.0, "connect", None)]
    stats = summarize(samples, duration_s=2.0)
    assert stats.count == 100
    assert stats.errors == 3
    assert stats.error_rate == pytest.approx(0.03)
    assert stats.error_kinds == {"HTTP 503": 1, "timeout": 1, "connect": 1}
    assert stats.status_counts == {"200": 97, "503": 1}
    assert stats.max_ms == 1000.0 and stats.min_ms == 1.0
    assert stats.p99_ms == 500.0  # errored requests' latencies are samples too
    assert stats.achieved_rps == 50.0
    assert dict(stats.rows())["errors"] == "3 (3.00 %)"


def test_get_and_post(server: ControlledServer) -> None:
    http = HttpAdapter()
    resp = http.get(f"{server.url}/health", timeout=5)
    assert resp.status == 200 and resp.ok
    assert resp.json()["status"] == "ok"
    assert resp.elapsed_ms > 0
    resp = http.post(f"{server.url}/api/v1/enhance", {"text": "hello"}, timeout=5)
    assert resp.status == 200
    assert json.loads(server.bodies[-1]) == {"text": "hello"}
    assert server.paths == ["/health", "/api/v1/enhance"]
    http.close()


def test_get_translates_connection_errors() -> None:
    with ControlledServer() as srv:
        url = srv.url
    with pytest.raises(TransientError) as err:
        HttpAdapter().get(f"{url}/health", timeout=2)
    assert "failed" in err.value.what and err.value.next_cmd


def test_refuses_targets_that_are_not_loopback_or_configured() -> None:
    http = HttpAdapter(allowed_hosts=["api.example.test"], allowed_suffixes=["betterprompts.example.com"])
    with pytest.raises(AdapterError, match=r"refusing to send HTTP requests to example\.org"):
        http.get("http://example.org/")
    with pytest.raises(AdapterError, match="refusing"):
        http.probe("http://10.1.2.3/", requests=1, concurrency=1, timeout=1)
    with pytest.raises(AdapterError, match="not an http"):
        http.check_target("ftp://127.0.0.1/x")
    assert http.check_target("http://api.example.test/x") == "api.example.test"
    assert http.check_target("https://api.betterprompts.example.com/health") == "api.betterprompts.example.com"
    assert http.check_target("http://localhost:1/") == "localhost"
    assert http.check_target("http://[::1]:1/") == "::1"
    with pytest.raises(AdapterError):
        http.check_target("https://betterprompts.example.com.evil.test/")


def test_from_config_allows_hosts_from_step_settings_and_the_domain() -> None:
    env = EnvConfig(
        name="staging",
        kind="aws",
        domain="staging.betterprompts.example.com",
        steps={"app-smoke": {"endpoints": {"api-gateway": "https://gw.internal.test:8443"}}},
    )
    http = from_config(env)
    assert http.check_target("https://gw.internal.test:8443/health") == "gw.internal.test"
    assert (
        http.check_target("https://api.staging.betterprompts.example.com/") == "api.staging.betterprompts.example.com"
    )
    with pytest.raises(AdapterError):
        http.check_target("https://other.test/")
    sandbox = from_config(EnvConfig(name="sandbox", kind="sandbox", domain="betterprompts.sandbox.local"))
    with pytest.raises(AdapterError):
        sandbox.check_target("https://api.betterprompts.sandbox.local/")


def test_probe_counts_every_request_and_errors(server: ControlledServer) -> None:
    server.fail_every = 4
    stats = HttpAdapter().probe(f"{server.url}/health", requests=40, concurrency=4, timeout=5)
    assert stats.count == 40
    assert server.count == 40
    assert stats.errors == 10
    assert stats.error_rate == pytest.approx(0.25)
    assert stats.error_kinds == {"HTTP 500": 10}
    assert stats.stopped_by == "count"


def test_probe_latency_reflects_the_server_delay(server: ControlledServer) -> None:
    server.delay_s = 0.05
    stats = HttpAdapter().probe(f"{server.url}/slow", requests=8, concurrency=4, timeout=5)
    assert stats.errors == 0
    assert stats.min_ms >= 50.0  # every sample includes the server's 50 ms
    assert stats.p50_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms


def test_probe_against_a_closed_port_counts_connect_errors() -> None:
    with ControlledServer() as srv:
        url = srv.url
    stats = HttpAdapter().probe(f"{url}/health", requests=5, concurrency=2, timeout=1)
    assert stats.count == 5 and stats.errors == 5
    assert set(stats.error_kinds) == {"connect"}


def test_probe_works_inside_a_running_event_loop(server: ControlledServer) -> None:
    async def inner() -> LatencyStats:
        return HttpAdapter().probe(f"{server.url}/health", requests=5, concurrency=2, timeout=5)

    stats = asyncio.run(inner())
    assert stats.count == 5 and stats.errors == 0


def test_http_adapter_has_no_load_generator() -> None:
    # load is Locust's (migrate/adapters/load.py): the hand-written open loop is gone
    assert not hasattr(HttpAdapter, "load")


def test_invalid_probe_parameters_are_refused(server: ControlledServer) -> None:
    with pytest.raises(AdapterError, match="probe needs"):
        HttpAdapter().probe(server.url, requests=0, concurrency=1, timeout=1)
