# The local rehearsal (`bpmigrate --env sandbox`): the development shape, applied to the sandbox's moto server.
# bpmigrate passes aws_endpoint_url (the moto endpoint) and aws_region (the environment's aws.region) on the command
# line; the modules are the production ones. Three settings differ from development, all because of moto:
#   - moto's DescribeDBParameters omits each parameter's Source, so the provider drops the "user" parameters on
#     refresh (a change on every plan, so "apply again = no change" could not hold): the parameter group is still
#     created, without parameters;
#   - moto does not record Performance Insights on DB instances (the same);
#   - moto's EKS has no add-on API (CreateAddon): no EKS managed add-ons; the IRSA roles are created all the same.
environment = "sandbox"
vpc_cidr    = "10.99.0.0/16"

single_nat_gateway = true

system_node_instance_types      = ["t3a.medium"]
system_node_scaling             = { min = 1, desired = 1, max = 2 }
application_node_instance_types = ["c6i.large"]
application_capacity_type       = "SPOT"
application_node_scaling        = { min = 1, desired = 1, max = 2 }
gpu_node_instance_types         = ["g4dn.xlarge"]
gpu_capacity_type               = "ON_DEMAND"
gpu_node_scaling                = { min = 1, desired = 1, max = 1 }

rds_instance_class               = "db.t4g.medium"
rds_allocated_storage            = 20
rds_max_allocated_storage        = 50
rds_multi_az                     = false
rds_deletion_protection          = false
rds_backup_retention_days        = 1
rds_performance_insights_enabled = false
rds_parameters                   = {}

eks_managed_addons = false

redis_node_type               = "cache.t4g.small"
redis_cluster_mode_enabled    = false
redis_replicas_per_shard      = 0
redis_snapshot_retention_days = 0

tags = { CostCenter = "betterprompts-sandbox" }
