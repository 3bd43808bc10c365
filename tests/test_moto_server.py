"""The sandbox's moto server (migrate/adapters/moto_server.py): the fidelity fixes the Terraform AWS provider needs,
checked with boto3 against the real server process the tests and the sandbox share (no provider needed)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.servers_plugin import moto_client


def _client(moto: Any, service: str) -> Any:
    return moto_client(moto.endpoint_url, service)


def test_replication_group_members_exist_and_carry_the_groups_settings(moto_reset: Any) -> None:
    ec = _client(moto_reset, "elasticache")
    ec.create_cache_subnet_group(
        CacheSubnetGroupName="bp-subnets", CacheSubnetGroupDescription="x", SubnetIds=["subnet-1"]
    )
    ec.create_replication_group(
        ReplicationGroupId="bp-redis",
        ReplicationGroupDescription="BetterPrompts Redis",
        Engine="redis",
        EngineVersion="7.1",
        CacheNodeType="cache.t4g.small",
        NumCacheClusters=2,
        CacheParameterGroupName="default.redis7",
        CacheSubnetGroupName="bp-subnets",
        SecurityGroupIds=["sg-123"],
        AtRestEncryptionEnabled=True,
        TransitEncryptionEnabled=True,
        PreferredMaintenanceWindow="sun:05:30-sun:06:30",
    )
    (group,) = ec.describe_replication_groups(ReplicationGroupId="bp-redis")["ReplicationGroups"]
    assert group["MemberClusters"] == ["bp-redis-001", "bp-redis-002"]
    for member in group["MemberClusters"]:  # unpatched moto: CacheClusterNotFound
        (cluster,) = ec.describe_cache_clusters(CacheClusterId=member, ShowCacheNodeInfo=True)["CacheClusters"]
        assert cluster["ReplicationGroupId"] == "bp-redis"
        assert cluster["EngineVersion"] == "7.1" and cluster["CacheNodeType"] == "cache.t4g.small"
        assert cluster["CacheParameterGroup"]["CacheParameterGroupName"] == "default.redis7"
        assert cluster["CacheSubnetGroupName"] == "bp-subnets"
        assert [sg["SecurityGroupId"] for sg in cluster["SecurityGroups"]] == ["sg-123"]
        assert cluster["AtRestEncryptionEnabled"] is True and cluster["TransitEncryptionEnabled"] is True
        assert cluster["PreferredMaintenanceWindow"] == "sun:05:30-sun:06:30"

    # deleting ends with the group and its members gone (unpatched moto: "deleting" forever)
    ec.delete_replication_group(ReplicationGroupId="bp-redis")
    with pytest.raises(ec.exceptions.ReplicationGroupNotFoundFault):
        ec.describe_replication_groups(ReplicationGroupId="bp-redis")
    with pytest.raises(ec.exceptions.CacheClusterNotFoundFault):
        ec.describe_cache_clusters(CacheClusterId="bp-redis-001")

    # DeleteCacheSubnetGroup exists (unpatched moto: HTTP 500), and an unknown name is NotFound
    ec.delete_cache_subnet_group(CacheSubnetGroupName="bp-subnets")
    assert ec.describe_cache_subnet_groups()["CacheSubnetGroups"] == []
    with pytest.raises(ec.exceptions.CacheSubnetGroupNotFoundFault):
        ec.delete_cache_subnet_group(CacheSubnetGroupName="bp-subnets")
