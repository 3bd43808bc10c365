"""The sandbox's stand-in for DNS: a small HTTP router splitting requests between the old and the new stack by the
Route53 weighted records ``dns-cutover`` writes to moto (re-read every second).

Config (``router.json`` in its data directory)::

    {"aws_endpoint_url": "http://127.0.0.1:5000", "region": "us-east-1",
     "record_name": "api.betterprompts.sandbox.local",
     "backends": {"old.betterprompts.sandbox.local": "http://127.0.0.1:8101",
                  "new.betterprompts.sandbox.local": "http://127.0.0.1:8102"},
     "default": "old.betterprompts.sandbox.local"}

A weighted record's value (the CNAME target) names a backend; weights are summed per backend and a request goes to
one of them at random in proportion (as resolvers spread over weighted answers). With no record, or all weights
0, everything goes to ``default`` (the world before the cutover). Every answer carries ``X-Backend: <value>``.
``GET /_router`` shows the weights in force.

Run: ``python -m migrate.sandbox.router --config state/sandbox/data/router/router.json --port 8100``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def weights_from_records(records: list[dict[str, Any]], record_name: str, backends: dict[str, str]) -> dict[str, int]:
    """backend value -> summed weight, from Route53 ResourceRecordSets (API shape)."""
    name = record_name.rstrip(".").lower()
    out: dict[str, int] = {}
    for rec in records:
        if str(rec.get("Name", "")).rstrip(".").lower() != name:
            continue
        values = [str(r.get("Value", "")).rstrip(".") for r in rec.get("ResourceRecords") or []]
        alias = rec.get("AliasTarget") or {}
        if alias.get("DNSName"):
            values = [str(alias["DNSName"]).rstrip(".")]
        weight = int(rec.get("Weight", 100 if rec.get("SetIdentifier") is None else 0))
        for value in values:
            if value in backends:
                out[value] = out.get(value, 0) + weight
    return out


class Router:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.backends: dict[str, str] = {str(k): str(v) for k, v in dict(cfg["backends"]).items()}
        self.default = str(cfg.get("default") or next(iter(self.backends)))
        self.weights: dict[str, int] = {}
        self.read_at = 0.0
        self.error: str | None = None
        self.lock = threading.Lock()

    def refresh(self) -> None:
        import boto3

        client = boto3.client(
            "route53",
            endpoint_url=self.cfg["aws_endpoint_url"],
            region_name=self.cfg.get("region", "us-east-1"),
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        record = str(self.cfg["record_name"]).rstrip(".").lower()
        while True:
            try:
                records: list[dict[str, Any]] = []
                for zone in client.list_hosted_zones().get("HostedZones", []):
                    zname = str(zone["Name"]).rstrip(".").lower()
                    if record == zname or record.endswith("." + zname):
                        page = client.list_resource_record_sets(HostedZoneId=zone["Id"], StartRecordName=record)
                        records.extend(page.get("ResourceRecordSets", []))
                weights = weights_from_records(records, record, self.backends)
                with self.lock:
                    self.weights, self.read_at, self.error = weights, time.time(), None
            except Exception as exc:
                with self.lock:
                    self.error = f"{type(exc).__name__}: {exc}"[:200]
            time.sleep(float(self.cfg.get("refresh_s", 1.0)))

    def pick(self) -> str:
        with self.lock:
            weights = {k: w for k, w in self.weights.items() if w > 0}
        if not weights:
            return self.default
        keys = list(weights)
        return random.choices(keys, weights=[weights[k] for k in keys])[0]

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "weights": dict(self.weights),
                "read_at": self.read_at,
                "error": self.error,
                "default": self.default,
            }


def make_handler(router: Router) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, body: bytes, backend: str, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", backend)
            self.end_headers()
            self.wfile.write(body)

        def _proxy(self, method: str) -> None:
            if self.path == "/_router":
                self._reply(200, json.dumps(router.state()).encode(), "router")
                return
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
            backend = router.pick()
            url = urlsplit(router.backends[backend])
            conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=30)
            try:
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                conn.request(method, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self._reply(resp.status, data, backend, resp.getheader("Content-Type") or "application/json")
            except OSError as exc:
                self._reply(502, json.dumps({"error": f"backend {backend}: {exc}"}).encode(), backend)
            finally:
                conn.close()

        def do_GET(self) -> None:
            self._proxy("GET")

        def do_POST(self) -> None:
            self._proxy("POST")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrate.sandbox.router")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    router = Router(json.loads(args.config.read_text()))
    threading.Thread(target=router.refresh, daemon=True).start()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(router))
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
