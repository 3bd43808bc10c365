"""The sandbox's traffic stand-ins as real processes: the app writes to the database it is configured with, the
``process`` fence stops and repoints it through its config file, and the router follows moto's Route53 weights."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from migrate.adapters.aws_route53 import RecordSet, Route53Adapter, from_config
from migrate.adapters.fences import DataTarget, ProcessFence
from migrate.sandbox import standins
from tests.cutover_stack import DOMAIN, Stack, stack  # noqa: F401 - fixture


def _post(url: str, body: Any) -> tuple[int, dict[str, Any], str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers.get("X-Backend", "")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), exc.headers.get("X-Backend", "")


def test_app_writes_where_configured_and_the_process_fence_repoints_it(stack: Stack) -> None:  # noqa: F811
    old = stack.url("app-old")
    status, body, _ = _post(f"{old}/api/v1/enhance", {"id": "a1"})
    assert status == 200 and body["stack"] == "old"
    assert stack.src.query("SELECT write_id FROM app.write_log") == [("a1",)]
    # the target has the table (as rds-restore would have created it)
    stack.dst.execute("CREATE SCHEMA app")
    stack.dst.execute(
        "CREATE TABLE app.write_log (seq bigserial PRIMARY KEY, write_id text NOT NULL, kind text NOT NULL, "
        "stack text NOT NULL, payload jsonb, created_at timestamptz NOT NULL DEFAULT now())"
    )
    fence = ProcessFence("old", {"config_file": str(stack.config_file("app-old"))}, timeout=10)
    fence.on()
    assert _post(f"{old}/api/v1/enhance", {"id": "a2"})[0] == 503  # fenced: no writer
    dst = stack.env.postgres["target"]
    fence.point(DataTarget("target", {"DATABASE_URL": f"postgresql://postgres@{dst.host}:{dst.port}/{dst.dbname}"}))
    assert _post(f"{old}/api/v1/enhance", {"id": "a3"})[0] == 503  # still fenced while repointed
    fence.off()
    assert _post(f"{old}/api/v1/enhance", {"id": "a4"})[0] == 200
    assert stack.dst.query("SELECT write_id FROM app.write_log") == [("a4",)]
    assert stack.src.query("SELECT count(*) FROM app.write_log") == [(1,)]
    assert fence.state()["database_url"].endswith(f"/{dst.dbname}")


def test_router_follows_route53_weights(stack: Stack, moto_reset: Any) -> None:  # noqa: F811
    router = stack.router_url
    assert {_post(f"{router}/api/v1/enhance", {"id": f"r{i}"})[2] for i in range(5)} == {f"old.{DOMAIN}"}
    r53: Route53Adapter = from_config(stack.env)
    zone = r53.create_zone(DOMAIN, caller_reference="t")
    n = standins.names(DOMAIN)
    r53.change(
        zone,
        upserts=[
            RecordSet(n["record"], "CNAME", 1, (n["old"],), "old-stack", 0),
            RecordSet(n["record"], "CNAME", 1, (n["new"],), "new-stack", 100),
        ],
    )
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"{router}/_router", timeout=5) as resp:
            state = json.loads(resp.read())
        if state["weights"].get(n["new"]) == 100:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    with urllib.request.urlopen(f"{router}/health", timeout=5) as resp:
        assert resp.headers["X-Backend"] == n["new"] and json.loads(resp.read())["stack"] == "new"
