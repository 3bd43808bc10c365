"""db-rollback-point without a reverse stream: RDS point-in-time restore to the recorded instant (forced only);
the phase-2 dump only with its age printed and explicit consent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from migrate.config import AwsSettings, EnvConfig
from migrate.errors import FenceRefused
from migrate.testing import make_context
from phases.p5_cutover.db_rollback_point import DbRollbackPoint
from tests.servers_plugin import moto_client


def test_without_a_reverse_stream_the_way_back_is_a_point_in_time_restore(moto_reset: Any, tmp_path: Path) -> None:
    rds = moto_client(moto_reset.endpoint_url, "rds")
    rds.create_db_instance(
        DBInstanceIdentifier="bp-db",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="u",
        MasterUserPassword="password123",
        AllocatedStorage=20,
    )
    env = EnvConfig(name="sandbox", kind="sandbox", aws=AwsSettings(endpoint_url=moto_reset.endpoint_url))
    ctx = make_context(tmp_path, env, "db-rollback-point", upstream={"rds": {"instance_id": "bp-db"}})
    out = DbRollbackPoint().apply(ctx)
    assert out["rds_instance_id"] == "bp-db" and not out["reverse_stream_expected"]
    with pytest.raises(FenceRefused) as info:  # writes after the instant would be lost: only when forced
        DbRollbackPoint().rollback(ctx)
    assert "point-in-time restore of bp-db" in info.value.what and "--force-past-fence" in info.value.next_cmd
    ctx.force_past_fence = True
    DbRollbackPoint().rollback(ctx)
    target = ctx.checkpoints.get("pitr")["target"]
    assert target.startswith("bp-db-pitr-")
    ids = {d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]}
    assert {"bp-db", target} <= ids
