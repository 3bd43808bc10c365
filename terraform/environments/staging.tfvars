# Staging: production shape (cluster-mode Redis, NAT per AZ) at smaller sizes; spot for application nodes.
environment = "staging"
vpc_cidr    = "10.20.0.0/16"

single_nat_gateway = false

system_node_instance_types      = ["t3a.medium"]
system_node_scaling             = { min = 2, desired = 2, max = 4 }
application_node_instance_types = ["c6i.xlarge", "c5.xlarge", "c6a.xlarge"]
application_capacity_type       = "SPOT"
application_node_scaling        = { min = 2, desired = 3, max = 6 }
gpu_node_instance_types         = ["g4dn.xlarge", "g5.xlarge"]
gpu_capacity_type               = "ON_DEMAND"
gpu_node_scaling                = { min = 1, desired = 1, max = 3 }

rds_instance_class        = "db.r6g.large"
rds_allocated_storage     = 200
rds_max_allocated_storage = 1000
rds_multi_az              = false
rds_deletion_protection   = true
rds_backup_retention_days = 7

redis_node_type               = "cache.r6g.large"
redis_cluster_mode_enabled    = true
redis_num_shards              = 2
redis_replicas_per_shard      = 1
redis_snapshot_retention_days = 3

tags = { CostCenter = "betterprompts-staging" }
