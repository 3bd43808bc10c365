locals {
  major_version = split(".", var.engine_version)[0]
  # AWS-provided parameter groups: volatile-lru eviction keeps sessions and rate-limit keys (no TTL) safe.
  parameter_group_name = var.cluster_mode_enabled ? "default.redis${local.major_version}.cluster.on" : "default.redis${local.major_version}"
  has_replicas         = var.replicas_per_shard > 0
}

resource "aws_elasticache_subnet_group" "this" {
  name        = "${var.replication_group_id}-subnets"
  description = "Private subnets of ${var.replication_group_id}"
  subnet_ids  = var.subnet_ids
}

resource "aws_security_group" "this" {
  name        = "${var.replication_group_id}-sg"
  description = "Redis access to ${var.replication_group_id}"
  vpc_id      = var.vpc_id

  tags = { Name = "${var.replication_group_id}-sg" }
}

resource "aws_vpc_security_group_ingress_rule" "cidr" {
  for_each = toset(var.allowed_cidr_blocks)

  security_group_id = aws_security_group.this.id
  description       = "Redis from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = var.port
  to_port           = var.port
  cidr_ipv4         = each.value
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = var.replication_group_id
  description          = "BetterPrompts Redis (${var.replication_group_id})"
  engine               = "redis"
  engine_version       = var.engine_version
  node_type            = var.node_type
  port                 = var.port
  parameter_group_name = local.parameter_group_name
  subnet_group_name    = aws_elasticache_subnet_group.this.name
  security_group_ids   = [aws_security_group.this.id]

  # cluster mode enabled: shards x (1 + replicas); disabled: one primary + replicas
  num_node_groups         = var.cluster_mode_enabled ? var.num_shards : null
  replicas_per_node_group = var.cluster_mode_enabled ? var.replicas_per_shard : null
  num_cache_clusters      = var.cluster_mode_enabled ? null : 1 + var.replicas_per_shard

  automatic_failover_enabled = var.cluster_mode_enabled || local.has_replicas
  multi_az_enabled           = local.has_replicas

  at_rest_encryption_enabled = true
  transit_encryption_enabled = true

  snapshot_retention_limit   = var.snapshot_retention_limit
  snapshot_window            = "02:00-03:00"
  maintenance_window         = "sun:05:30-sun:06:30"
  auto_minor_version_upgrade = true
  apply_immediately          = false
}
