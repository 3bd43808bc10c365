"""post-cutover-watch keeps the revert armed after dns-cutover returned: a breach sends the traffic back to the old
stack by itself; the window survives a restart; decommission refuses until the window ended clean and the reverse
stream was stopped on purpose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.aws_route53 import RecordSet, WeightedPair, from_config
from migrate.config import AwsSettings, EnvConfig
from migrate.errors import StepFailed
from migrate.testing import make_context
from phases.p5_cutover.post_cutover_watch import PostCutoverWatch
from phases.p6_cleanup.decommission import Decommission
from tests.test_route53_cutover import FakeClock, HealthServer, health_server  # noqa: F401 - fixture

DOMAIN = "betterprompts.test"
RECORD = f"api.{DOMAIN}"
BASE = 1_700_000_000.0  # in the past: decommission compares the window with the real clock


def cut_over(env: EnvConfig, url: str) -> dict[str, Any]:
    """The world dns-cutover leaves behind: 100 % on the new record; its outputs as recorded."""
    r53 = from_config(env)
    zone = r53.create_zone(DOMAIN, caller_reference="watch")
    r53.change(zone, upserts=[RecordSet(RECORD, "CNAME", 300, ("compose.betterprompts.test",))])
    pair = WeightedPair(RECORD, "CNAME", "compose.betterprompts.test", "alb.betterprompts.test", ttl=1)
    [simple] = r53.record_sets(zone, RECORD, "CNAME")
    r53.shift(zone, pair, 100, deletes=[simple], poll_s=0.05)
    return {
        "zone_id": zone,
        "record": RECORD,
        "record_type": "CNAME",
        "old_target": pair.old_target,
        "new_target": pair.new_target,
        "low_ttl": 1,
        "direct_urls": [url],
        "record_urls": [],
        "completed_ts": BASE,
    }


SETTINGS = {"window_s": 600, "interval_s": 60, "sample_requests": 5, "max_p95_ms": 5000, "breach_rounds": 2}


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(start=BASE)
    monkeypatch.setattr(PostCutoverWatch, "clock", fake)
    return fake


def test_a_watch_breach_reverts_the_traffic_by_itself(
    moto_reset: Any,
    tmp_path: Path,
    health_server: HealthServer,  # noqa: F811 - the fixture
    clock: FakeClock,
) -> None:
    env = EnvConfig(
        name="sandbox", kind="sandbox", domain=DOMAIN, aws=AwsSettings(endpoint_url=moto_reset.endpoint_url)
    )
    cut = cut_over(env, health_server.url)
    weights = lambda: from_config(env).weights(cut["zone_id"], RECORD, "CNAME")  # noqa: E731
    assert weights() == {"old-stack": 0, "new-stack": 100}
    rounds = []

    def on_sleep() -> None:
        rounds.append(clock.t)
        if len(rounds) == 3:  # the new stack breaks three rounds into the window
            health_server.healthy = False

    clock.on_sleep = on_sleep
    ctx = make_context(tmp_path, env, "post-cutover-watch", settings=SETTINGS, upstream={"dns-cutover": cut})
    with pytest.raises(StepFailed) as info:
        PostCutoverWatch().apply(ctx)
    assert "REVERTED" in info.value.what and "data-switch" in info.value.next_cmd
    assert weights() == {"old-stack": 100, "new-stack": 0}  # nobody ran a command: the watch moved it
    assert "route53-revert" in [a for a, _ in ctx.recorded_intents]
    result = ctx.checkpoints.get("result")
    assert result is not None and result["clean"] is False and result["reverted"]["status"] == "INSYNC"
    [(kind, _path, _sha, _size)] = ctx.recorded_artifacts
    assert kind == "watch-evidence"


def test_the_window_survives_a_restart_and_decommission_waits_for_it(
    moto_reset: Any,
    tmp_path: Path,
    health_server: HealthServer,  # noqa: F811 - the fixture
    clock: FakeClock,
) -> None:
    env = EnvConfig(
        name="sandbox", kind="sandbox", domain=DOMAIN, aws=AwsSettings(endpoint_url=moto_reset.endpoint_url)
    )
    cut = cut_over(env, health_server.url)
    ctx = make_context(tmp_path, env, "post-cutover-watch", settings=SETTINGS, upstream={"dns-cutover": cut})

    class Killed(BaseException):
        pass

    def die() -> None:
        if clock.t >= BASE + 240:
            raise Killed  # bpmigrate is killed four rounds into the window

    clock.on_sleep = die
    with pytest.raises(Killed):
        PostCutoverWatch().apply(ctx)
    assert ctx.checkpoints.get("window")["ends_ts"] == BASE + 600
    assert ctx.checkpoints.get("totals")["rounds"] == 4
    # decommission refuses while the window runs
    dec_up = {"dns-cutover": cut, "final-backup": {}, "post-cutover-watch": {}}
    dec = make_context(tmp_path, env, "decommission", upstream=dec_up)
    failed = {c.name for c in Decommission().preconditions(dec) if not c.ok}
    assert "post-cutover watch window ended clean" in failed
    # restarted: the same window (not a new one), only the rest is watched
    clock.on_sleep = None
    resumed = make_context(tmp_path, env, "post-cutover-watch", settings=SETTINGS, upstream={"dns-cutover": cut})
    resumed.checkpoints = ctx.checkpoints
    assert "of the window left" in str(PostCutoverWatch().plan(resumed).changes[0].detail)
    out = PostCutoverWatch().apply(resumed)
    assert out["clean"] and out["ends_at"] and out["rounds"] == 11 and out["availability"] == 1.0
    assert clock.t == pytest.approx(BASE + 600)
    assert all(c.ok for c in PostCutoverWatch().verify(resumed))
    dec = make_context(tmp_path, env, "decommission", upstream={**dec_up, "post-cutover-watch": out})
    checks = {c.name: c for c in Decommission().preconditions(dec)}
    assert checks["post-cutover watch window ended clean"].ok
    assert checks["reverse stream stopped on purpose"].ok  # no stream in this environment
