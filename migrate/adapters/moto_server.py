"""``python -m migrate.adapters.moto_server -H HOST -p PORT``: moto's server, with the fidelity fixes the Terraform
AWS provider needs to apply the project's own ``terraform/`` modules against it.

moto is the sandbox's (and the tests') AWS. Where moto answers differently from AWS in a way that breaks the
hashicorp/aws provider's read-after-create, this module patches moto's backend before the server starts, so the
fix lives here and nothing in ``terraform/`` is sandbox-specific. Each patch names the AWS behaviour it restores:

* ElastiCache ``CreateReplicationGroup`` creates the member cache clusters (``<id>-001`` …) on AWS; moto lists
  their ids in ``MemberClusters`` but ``DescribeCacheClusters`` answers ``CacheClusterNotFound``, and the provider
  reads the engine version, parameter group, subnet group, security groups and encryption back from the first
  member. The patch registers those members, carrying the replication group's settings.
* ElastiCache ``DeleteReplicationGroup`` (and ``DeleteCacheCluster``) on AWS end with the resource gone; moto leaves
  it in ``deleting`` forever, so the provider's deletion waiter (``NotFound``) would wait out its 40-minute timeout.
  The patch removes the group and its members (a rollback of the ``elasticache`` step is a real targeted destroy).
* ElastiCache ``CreateReplicationGroup`` with cluster mode disabled has ``NumCacheClusters`` members on AWS; moto
  sizes the group from ``ReplicasPerNodeGroup`` alone (one member when only ``NumCacheClusters`` is given), so a
  primary + replica group would plan a change forever. The patch honours ``NumCacheClusters``.
* ElastiCache ``DeleteCacheSubnetGroup`` is not implemented by moto (HTTP 500, which the provider retries for its
  whole timeout). The patch implements it: ``CacheSubnetGroupNotFoundFault`` for an unknown name, else deleted.

Run with no patch wanted? ``python -m moto.server`` is unchanged; ``start_moto`` in ``localservers`` uses this.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

#: the patches applied (name -> AWS behaviour restored), reported in the moto log at start
APPLIED: dict[str, str] = {}


def _member_cluster_kwargs(rg: Any, member: dict[str, Any]) -> dict[str, Any]:
    """create_cache_cluster arguments for one member of replication group ``rg`` (its settings, per member AZ)."""
    return {
        "cache_cluster_id": member["cache_cluster_id"],
        "replication_group_id": rg.replication_group_id,
        "az_mode": "single-az",
        "preferred_availability_zone": member.get("preferred_availability_zone") or "us-east-1a",
        "num_cache_nodes": 1,
        "cache_node_type": rg.cache_node_type,
        "engine": rg.engine,
        "engine_version": rg.engine_version,
        "cache_parameter_group_name": rg.cache_parameter_group_name,
        "cache_subnet_group_name": rg.cache_subnet_group_name,
        "transit_encryption_enabled": rg.transit_encryption_enabled,
        "network_type": rg.network_type,
        "ip_discovery": rg.ip_discovery,
        "snapshot_name": None,
        "preferred_maintenance_window": rg.preferred_maintenance_window,
        "port": rg.port,
        "notification_topic_arn": rg.notification_topic_arn,
        "auto_minor_version_upgrade": rg.auto_minor_version_upgrade,
        "snapshot_retention_limit": rg.snapshot_retention_limit,
        "snapshot_window": rg.snapshot_window,
        "auth_token": None,
        "outpost_mode": None,
        "preferred_outpost_arn": None,
        "preferred_availability_zones": [],
        "cache_security_group_names": list(rg.cache_security_group_names or []),
        "security_group_ids": list(rg.security_group_ids or []),
        "tags": None,
        "snapshot_arns": None,
        "preferred_outpost_arns": None,
        "log_delivery_configurations": [],
        "cache_node_ids_to_remove": None,
        "cache_node_ids_to_reboot": None,
    }


def _decorate_member(cluster: Any, rg: Any) -> None:
    """The DescribeCacheClusters fields AWS returns for a replication group member that moto's model lacks."""
    cluster.at_rest_encryption_enabled = bool(rg.at_rest_encryption_enabled)
    cluster.transit_encryption_enabled = bool(rg.transit_encryption_enabled)
    cluster.auth_token_enabled = bool(rg.auth_token_enabled)
    cluster.cache_parameter_group = {
        "CacheParameterGroupName": rg.cache_parameter_group_name or "",
        "ParameterApplyStatus": "in-sync",
        "CacheNodeIdsToReboot": [],
    }
    cluster.security_groups = [{"SecurityGroupId": sg, "Status": "active"} for sg in rg.security_group_ids or []]


def patch_elasticache() -> None:
    from moto.elasticache.models import ElastiCacheBackend, ReplicationGroup
    from moto.elasticache.responses import ElastiCacheResponse

    original_create: Callable[..., Any] = ElastiCacheBackend.create_replication_group

    def create_replication_group(self: Any, *args: Any, **kwargs: Any) -> Any:
        rg = original_create(self, *args, **kwargs)
        for group in rg.node_groups:
            for member in group["node_group_members"]:
                if member["cache_cluster_id"] in self.cache_clusters:
                    continue
                cluster = self.create_cache_cluster(**_member_cluster_kwargs(rg, member))
                _decorate_member(cluster, rg)
        return rg

    def delete_replication_group(self: Any, replication_group_id: str, retain_primary_cluster: bool | None) -> Any:
        from moto.elasticache.exceptions import ReplicationGroupNotFound

        rg = self.replication_groups.get(replication_group_id)
        if rg is None:
            raise ReplicationGroupNotFound(replication_group_id)
        rg.status = "deleting"
        keep = rg.primary_cluster_id if retain_primary_cluster else None
        for cluster_id in list(rg.member_clusters):
            if cluster_id != keep:
                self.cache_clusters.pop(cluster_id, None)
        del self.replication_groups[replication_group_id]
        return rg

    original_delete_cluster: Callable[..., Any] = ElastiCacheBackend.delete_cache_cluster

    def delete_cache_cluster(self: Any, cache_cluster_id: str) -> Any:
        cluster = original_delete_cluster(self, cache_cluster_id)
        self.cache_clusters.pop(cache_cluster_id, None)
        return cluster

    def delete_cache_subnet_group(self: Any, cache_subnet_group_name: str) -> None:
        from moto.elasticache.exceptions import CacheSubnetGroupNotFound

        if cache_subnet_group_name not in self.cache_subnet_groups:
            raise CacheSubnetGroupNotFound(cache_subnet_group_name)
        del self.cache_subnet_groups[cache_subnet_group_name]

    def delete_cache_subnet_group_response(self: Any) -> Any:
        from moto.core.responses import EmptyResult

        self.elasticache_backend.delete_cache_subnet_group(self._get_param("CacheSubnetGroupName"))
        return EmptyResult()

    original_members: Callable[..., Any] = ReplicationGroup._set_node_members_clusters_disabled

    def set_node_members_clusters_disabled(self: Any, **kwargs: Any) -> Any:
        wanted = int(kwargs.get("num_cache_clusters") or 1)
        kwargs["replicas_per_node_group"] = max(int(kwargs.get("replicas_per_node_group") or 0), wanted - 1)
        return original_members(self, **kwargs)

    ReplicationGroup._set_node_members_clusters_disabled = set_node_members_clusters_disabled  # type: ignore[method-assign,assignment]
    ElastiCacheBackend.create_replication_group = create_replication_group  # type: ignore[method-assign]
    ElastiCacheBackend.delete_replication_group = delete_replication_group  # type: ignore[method-assign]
    ElastiCacheBackend.delete_cache_cluster = delete_cache_cluster  # type: ignore[method-assign]
    ElastiCacheBackend.delete_cache_subnet_group = delete_cache_subnet_group  # type: ignore[attr-defined]
    ElastiCacheResponse.delete_cache_subnet_group = delete_cache_subnet_group_response  # type: ignore[attr-defined]
    APPLIED["elasticache-member-clusters"] = "CreateReplicationGroup creates its member cache clusters"
    APPLIED["elasticache-delete"] = "DeleteReplicationGroup/DeleteCacheCluster end with the resource gone"
    APPLIED["elasticache-num-cache-clusters"] = "cluster-mode-disabled groups get NumCacheClusters members"
    APPLIED["elasticache-delete-subnet-group"] = "DeleteCacheSubnetGroup is implemented"


def main(argv: list[str]) -> None:
    patch_elasticache()
    for name, what in APPLIED.items():
        print(f"bpmigrate moto patch {name}: {what}", flush=True)
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":  # pragma: no cover - the server process
    main(sys.argv[1:])
