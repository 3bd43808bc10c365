# Production: the architecture document's sizing. On-demand application baseline plus a spot group for
# non-critical workloads; Multi-AZ RDS with deletion protection (both also enforced in main.tf for production).
environment = "production"
vpc_cidr    = "10.0.0.0/16"

single_nat_gateway = false

# the operators' VPN/office egress (documentation range here: replace it); 0.0.0.0/0 is refused in production
eks_public_access_cidrs = ["203.0.113.0/24"]

system_node_instance_types      = ["t3a.medium"]
system_node_scaling             = { min = 2, desired = 2, max = 4 }
application_node_instance_types = ["c6i.xlarge"]
application_capacity_type       = "ON_DEMAND"
application_node_scaling        = { min = 3, desired = 3, max = 9 }
spot_node_instance_types        = ["t3a.large", "t3.large"]
spot_node_scaling               = { min = 0, desired = 0, max = 10 }
gpu_node_instance_types         = ["g4dn.xlarge", "g5.xlarge"]
gpu_capacity_type               = "ON_DEMAND"
gpu_node_scaling                = { min = 1, desired = 1, max = 5 }

rds_instance_class        = "db.r6g.xlarge"
rds_allocated_storage     = 500
rds_max_allocated_storage = 2000
rds_multi_az              = true
rds_deletion_protection   = true
rds_backup_retention_days = 14

redis_node_type               = "cache.r6g.large"
redis_cluster_mode_enabled    = true
redis_num_shards              = 3
redis_replicas_per_shard      = 1
redis_snapshot_retention_days = 7

tags = { CostCenter = "betterprompts-prod" }
