"""pre-cutover-check on a live source: the stream's own proof (lag, subscription state) and drift on the ranges
replication confirmed — green while the app keeps writing, red when the stream stalls or an SLO alarm of the
`observability` step fires (moto's CloudWatch). Never exact counts of a table still being written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from migrate.config import AwsSettings
from migrate.errors import VerifyFailed
from migrate.testing import make_context
from phases._sync import _pgsync
from phases.p5_cutover.pre_cutover_check import PreCutoverCheck
from tests.servers_plugin import moto_client
from tests.test_data_switch import AppWriter, streaming  # noqa: F401 - fixture
from tests.test_pg_sync import pair  # noqa: F401 - fixture
from tests.test_route53_cutover import HealthServer, health_server  # noqa: F401 - fixture


@pytest.mark.slow
def test_gates_hold_while_the_source_takes_writes_and_catch_a_stalled_stream(
    tmp_path: Path,
    streaming: tuple[Any, ...],  # noqa: F811 - the fixture
    health_server: HealthServer,  # noqa: F811 - the fixture
    moto_reset: Any,
) -> None:
    src, dst, env, pg_out = streaming
    env = env.model_copy(update={"aws": AwsSettings(endpoint_url=moto_reset.endpoint_url)})
    upstream = {"pg-sync": pg_out, "load-test": {"passed": True, "finished_at": time.time() - 60}}
    settings = {"health_urls": [health_server.url], "drift_timeout_s": 20}
    with AppWriter(src, seed=4) as app:
        while sum(app.ops.values()) < 20:
            time.sleep(0.02)
        ctx = make_context(tmp_path, env, "pre-cutover-check", settings=settings, upstream=upstream)
        for _ in range(3):  # repeatedly green under writes: the gate does not flap
            out = PreCutoverCheck().apply(ctx)
            names = {c["name"] for c in out["checks"]}
            assert "pg-sync: verify re-run (lag, subscription, slot)" in names
            assert any(n.startswith("confirmed-range drift") for n in names)
            assert not any(n.startswith("data-validate") for n in names)  # no exact counts of a live table
        # an SLO alarm of the observability step fires: the whole gate holds the cutover and names it
        cw = moto_client(moto_reset.endpoint_url, "cloudwatch")
        cw.put_metric_alarm(
            AlarmName="bp-gate-api-p95", Namespace="AWS/ApplicationELB", MetricName="TargetResponseTime",
            ExtendedStatistic="p95", Period=60, EvaluationPeriods=3, Threshold=0.2, ComparisonOperator="GreaterThanThreshold",
        )
        cw.set_alarm_state(AlarmName="bp-gate-api-p95", StateValue="ALARM", StateReason="p95 412 ms > 200 ms")
        alarmed = upstream | {"observability": {"alarm_prefix": "bp-gate-"}}
        with pytest.raises(VerifyFailed) as info:
            PreCutoverCheck().apply(make_context(tmp_path, env, "pre-cutover-check", settings=settings, upstream=alarmed))
        assert "1 of" in info.value.what and "no SLO alarm in ALARM: observed ['bp-gate-api-p95']" in info.value.why
        assert "p95 412 ms > 200 ms" in info.value.why
        cw.set_alarm_state(AlarmName="bp-gate-api-p95", StateValue="OK", StateReason="back under 200 ms")
        PreCutoverCheck().apply(make_context(tmp_path, env, "pre-cutover-check", settings=settings, upstream=alarmed))
        # the stream stalls: the subscription is disabled; the gate fails on its state
        sync = _pgsync(make_context(tmp_path, env, "pg-sync"))
        dst.execute(f'ALTER SUBSCRIPTION "{sync.subscription}" DISABLE')
        try:
            stalled = make_context(
                tmp_path, env, "pre-cutover-check", settings=settings | {"drift_timeout_s": 1}, upstream=upstream
            )
            with pytest.raises(VerifyFailed) as info:
                PreCutoverCheck().apply(stalled)
            assert "pg-sync: verify re-run" in info.value.why
        finally:
            dst.execute(f'ALTER SUBSCRIPTION "{sync.subscription}" ENABLE')
    # writes stopped; a row goes missing on the target (real drift): the confirmed-range check names the table
    dst.execute("DELETE FROM users WHERE id = (SELECT min(id) FROM users)")
    drifted = make_context(tmp_path, env, "pre-cutover-check", settings=settings, upstream=upstream)
    with pytest.raises(VerifyFailed) as info:
        PreCutoverCheck().apply(drifted)
    assert "confirmed-range drift public.users" in info.value.why
