"""pg-sync's aws-dms driver against a moto server (real HTTP): replication instance, endpoints and a
full-load-and-cdc task with validation, read back; idempotent re-apply; teardown of everything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from migrate.adapters.aws import AwsAdapter
from migrate.adapters.aws_dms import DmsDriver, DmsNames
from migrate.adapters.postgres import PostgresAdapter
from migrate.config import AwsSettings, EnvConfig, PgEndpoint
from migrate.errors import StepFailed
from migrate.testing import make_context
from phases.p2_data.pg_sync import PgSyncStep
from phases.p5_cutover.data_switch import DataSwitch
from tests.test_pg_sync import pair, restore


def env_for(moto: Any) -> EnvConfig:
    return EnvConfig(
        name="staging",
        kind="aws",
        aws=AwsSettings(region="us-east-1", endpoint_url=moto.endpoint_url),
        postgres={
            "source": PgEndpoint(host="compose-host.internal", port=5432, dbname="betterprompts", user="bp"),
            "target": PgEndpoint(
                host="bp.abc.us-east-1.rds.amazonaws.com", port=5432, dbname="betterprompts", user="bp"
            ),
        },
    )


def dms_client(moto: Any) -> Any:
    return boto3.client(
        "dms",
        region_name="us-east-1",
        endpoint_url=moto.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


SETTINGS = {"driver": "aws-dms", "dms_timeout_s": 20}


def test_pg_sync_with_aws_dms_driver_creates_and_reads_back_the_task(tmp_path: Path, moto_reset: Any) -> None:
    env = env_for(moto_reset)
    step = PgSyncStep()
    ctx = make_context(tmp_path, env, "pg-sync", settings=SETTINGS)
    plan = step.plan(ctx)
    assert [c.target for c in plan.changes] == [
        "DMS replication instance bpmigrate-staging-ri",
        "DMS source endpoint bpmigrate-staging-source",
        "DMS target endpoint bpmigrate-staging-target",
        "DMS full-load-and-cdc task bpmigrate-staging-task",
    ]
    out = step.apply(ctx)
    assert out["driver"] == "aws-dms" and out["status"] == "running"
    assert out["migration_type"] == "full-load-and-cdc" and out["validation_enabled"] is True
    assert ctx.recorded_intents[0][0] == "dms-ensure"
    # read back through boto3 directly (not the driver)
    client = dms_client(moto_reset)
    task = client.describe_replication_tasks()["ReplicationTasks"][0]
    assert task["MigrationType"] == "full-load-and-cdc" and task["Status"] == "running"
    assert json.loads(task["ReplicationTaskSettings"])["ValidationSettings"]["EnableValidation"] is True
    eps = {e["EndpointIdentifier"]: e for e in client.describe_endpoints()["Endpoints"]}
    assert eps["bpmigrate-staging-source"]["ServerName"] == "compose-host.internal"
    assert eps["bpmigrate-staging-target"]["EndpointType"].lower() == "target"
    # idempotent: a second apply creates nothing new
    again = step.apply(make_context(tmp_path, env, "pg-sync", settings=SETTINGS))
    assert again["task_arn"] == out["task_arn"]
    assert len(client.describe_replication_tasks()["ReplicationTasks"]) == 1
    assert step.plan(make_context(tmp_path, env, "pg-sync", settings=SETTINGS)).is_noop
    checks = {
        c.name: c
        for c in step.verify(make_context(tmp_path, env, "pg-sync", settings=SETTINGS, upstream={"pg-sync": out}))
    }
    assert checks["DMS task running"].ok and checks["DMS full load finished"].ok
    assert checks["DMS validation enabled"].ok
    assert checks["DMS validation state"].observed  # read back (moto: 'unknown' where the API is not emulated)
    step.rollback(make_context(tmp_path, env, "pg-sync", settings=SETTINGS, upstream={"pg-sync": out}))
    assert client.describe_replication_tasks()["ReplicationTasks"] == []
    assert client.describe_endpoints()["Endpoints"] == []
    assert client.describe_replication_instances()["ReplicationInstances"] == []
    step.rollback(make_context(tmp_path, env, "pg-sync", settings=SETTINGS))  # absent: no-op


def test_dms_names_are_valid_identifiers() -> None:
    names = DmsNames.for_env("Prod_EU", "")
    assert names.task == "bpmigrate-prod-eu-task"
    assert all(len(v) <= 63 for v in names.as_dict().values())


def test_driver_status_of_absent_task(moto_reset: Any) -> None:
    aws = AwsAdapter("us-east-1", moto_reset.endpoint_url)
    driver = DmsDriver(aws, DmsNames.for_env("x"), source={}, target={})
    assert driver.status()["status"] == "absent"
    assert driver.teardown() == []


def test_data_switch_over_the_dms_driver_fences_on_counts_and_stops_the_task(
    tmp_path: Path,
    moto_reset: Any,
    pair: tuple[PostgresAdapter, PostgresAdapter],
) -> None:
    src, dst = pair

    def ep(a: PostgresAdapter) -> PgEndpoint:
        return PgEndpoint(host=a.host, port=a.port, dbname=a.dbname, user=a.user, bin_dir=a.bin_dir)

    env = EnvConfig(
        name="sandbox",
        kind="sandbox",
        aws=AwsSettings(region="us-east-1", endpoint_url=moto_reset.endpoint_url),
        postgres={"source": ep(src), "target": ep(dst)},
    )
    restore(tmp_path, env)  # the state DMS's full load would produce (moto does not move data)
    out = PgSyncStep().apply(make_context(tmp_path, env, "pg-sync", settings=SETTINGS))
    assert out["status"] == "running"
    ctx = make_context(tmp_path, env, "data-switch", settings={"catchup_timeout_s": 5}, upstream={"pg-sync": out})
    sout = DataSwitch().apply(ctx)
    assert sout["dms"]["status"] == "running" and sout["dms_stopped"] is True
    assert sout["sequences_set"] == 2
    assert dms_client(moto_reset).describe_replication_tasks()["ReplicationTasks"][0]["Status"] == "stopped"
    # a row the 'CDC' never delivered: the count gate fails and writes resume
    src.execute("INSERT INTO users (email) VALUES ('not-replicated@example.com')")
    PgSyncStep().apply(make_context(tmp_path, env, "pg-sync", settings=SETTINGS))  # resumes the stopped task
    with pytest.raises(StepFailed, match="did not catch up"):
        DataSwitch().apply(
            make_context(tmp_path, env, "data-switch", settings={"catchup_timeout_s": 1}, upstream={"pg-sync": out})
        )
