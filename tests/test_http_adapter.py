"""HttpAdapter against real local HTTP servers (stdlib ThreadingHTTPServer on 127.0.0.1) whose latency and error
rate the tests control: exact percentiles, probe/load bounds, error accounting, target restrictions."""

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
    """A local HTTP server: ``delay_s`` per request, every ``fail_every``-th request answers ``fail_status``."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.fail_every = 0
        self.fail_status = 500
        self.count = 0
        self.paths: list[str] = []
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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
    stats = summarize(samples, duration_s=2.0, target_rps=50)
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
        http.load("http://10.1.2.3/", rps=1, duration_s=1, max_requests=1, timeout=1)
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


def test_load_stops_at_max_requests(server: ControlledServer) -> None:
    stats = HttpAdapter().load(f"{server.url}/health", rps=200, duration_s=30, max_requests=25, timeout=5)
    assert stats.count == 25
    assert server.count == 25
    assert stats.stopped_by == "count"
    assert stats.errors == 0 and stats.target_rps == 200


def test_load_stops_at_duration(server: ControlledServer) -> None:
    stats = HttpAdapter().load(f"{server.url}/health", rps=20, duration_s=0.5, max_requests=10_000, timeout=5)
    assert stats.stopped_by == "time"
    assert 1 <= stats.count <= 11  # 20 rps for 0.5 s: at most 10 scheduled (+1 at t=0)
    assert server.count == stats.count


def test_load_counts_timeouts_and_still_ends(server: ControlledServer) -> None:
    server.delay_s = 2.0
    stats = HttpAdapter().load(f"{server.url}/slow", rps=10, duration_s=15, max_requests=3, timeout=0.2)
    assert stats.count == 3
    assert stats.errors == 3
    assert stats.error_kinds == {"timeout": 3}
    assert stats.error_rate == 1.0


def test_load_against_a_closed_port_counts_connect_errors() -> None:
    with ControlledServer() as srv:
        url = srv.url
    stats = HttpAdapter().load(f"{url}/health", rps=50, duration_s=15, max_requests=5, timeout=1)
    assert stats.count == 5 and stats.errors == 5
    assert set(stats.error_kinds) == {"connect"}


def test_load_bounds_requests_in_flight(server: ControlledServer) -> None:
    server.delay_s = 0.2
    stats = HttpAdapter().load(
        f"{server.url}/slow", rps=100, duration_s=0.3, max_requests=30, timeout=5, max_in_flight=2
    )
    # with 2 in flight and 200 ms each, only a handful can start inside the 0.3 s window
    assert stats.count <= 6
    assert stats.max_schedule_lag_ms > 0


def test_load_works_inside_a_running_event_loop(server: ControlledServer) -> None:
    async def inner() -> LatencyStats:
        return HttpAdapter().load(f"{server.url}/health", rps=100, duration_s=15, max_requests=5, timeout=5)

    stats = asyncio.run(inner())
    assert stats.count == 5 and stats.errors == 0


def test_invalid_load_parameters_are_refused(server: ControlledServer) -> None:
    with pytest.raises(AdapterError, match="rps > 0"):
        HttpAdapter().load(server.url, rps=0, duration_s=1, max_requests=1, timeout=1)
    with pytest.raises(AdapterError, match="probe needs"):
        HttpAdapter().probe(server.url, requests=0, concurrency=1, timeout=1)
