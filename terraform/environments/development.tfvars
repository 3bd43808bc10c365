# Development: half-size, cheapest safe choices (single NAT, spot application nodes, no standby database).
# The region is the environment's aws.region in migrate.toml (bpmigrate passes -var aws_region=...).
environment = "development"
vpc_cidr    = "10.10.0.0/16"

single_nat_gateway = true

system_node_instance_types      = ["t3a.medium"]
system_node_scaling             = { min = 1, desired = 2, max = 3 }
application_node_instance_types = ["c6i.large", "c5.large", "c6a.large"]
application_capacity_type       = "SPOT"
application_node_scaling        = { min = 1, desired = 2, max = 5 }
gpu_node_instance_types         = ["g4dn.xlarge"]
gpu_capacity_type               = "SPOT"
gpu_node_scaling                = { min = 0, desired = 1, max = 2 }

rds_instance_class        = "db.t4g.medium"
rds_allocated_storage     = 50
rds_max_allocated_storage = 200
rds_multi_az              = false
rds_deletion_protection   = false
rds_backup_retention_days = 1

redis_node_type               = "cache.t4g.small"
redis_cluster_mode_enabled    = false
redis_replicas_per_shard      = 0
redis_snapshot_retention_days = 0

tags = { CostCenter = "betterprompts-dev" }
