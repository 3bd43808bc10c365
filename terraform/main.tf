# BetterPrompts on AWS: network, Kubernetes (EKS with system/application/GPU node groups, the add-ons' IRSA roles
# and EKS managed add-ons), PostgreSQL 16 + pgvector (RDS), Redis 7 (ElastiCache) and the ALB's WAF. One root for
# every environment; the differences live in environments/<env>.tfvars, and the region comes from the environment's
# aws.region in migrate.toml (bpmigrate passes -var aws_region=...). Apply module by module with -target, as the
# migration phases do. The ECR repositories are not here: bpmigrate's ecr-repos step owns them (IMMUTABLE tags).
locals {
  name          = "${var.project}-${var.environment}"
  is_production = var.environment == "production"

  tags = merge(var.tags, {
    Project     = var.project
    Environment = var.environment
    ManagedBy   = "terraform"
  })

  # Every node carries node_group=<name>; the GPU group is tainted so only pods tolerating it land there.
  base_node_groups = {
    system = {
      instance_types = var.system_node_instance_types
      capacity_type  = "ON_DEMAND"
      ami_type       = "AL2023_x86_64_STANDARD"
      disk_size      = 50
      scaling        = var.system_node_scaling
      labels         = { node_group = "system" }
      taints         = []
    }
    application = {
      instance_types = var.application_node_instance_types
      capacity_type  = var.application_capacity_type
      ami_type       = "AL2023_x86_64_STANDARD"
      disk_size      = 50
      scaling        = var.application_node_scaling
      labels         = { node_group = "application" }
      taints         = []
    }
    gpu = {
      instance_types = var.gpu_node_instance_types
      capacity_type  = var.gpu_capacity_type
      ami_type       = "AL2023_x86_64_NVIDIA"
      disk_size      = 100
      scaling        = var.gpu_node_scaling
      labels         = { node_group = "gpu", "nvidia.com/gpu.present" = "true" }
      taints         = [{ key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }]
    }
  }

  spot_node_group = var.spot_node_scaling == null ? {} : {
    spot = {
      instance_types = var.spot_node_instance_types
      capacity_type  = "SPOT"
      ami_type       = "AL2023_x86_64_STANDARD"
      disk_size      = 50
      scaling        = var.spot_node_scaling
      labels         = { node_group = "spot" }
      taints         = []
    }
  }
}

module "vpc" {
  source = "./modules/vpc"

  name               = local.name
  cidr_block         = var.vpc_cidr
  az_count           = var.az_count
  single_nat_gateway = var.single_nat_gateway
  cluster_name       = local.name

  flow_logs_retention_days = var.vpc_flow_logs_retention_days
}

module "eks" {
  source = "./modules/eks"

  cluster_name           = local.name
  cluster_version        = var.eks_cluster_version
  vpc_id                 = module.vpc.vpc_id
  private_subnet_ids     = module.vpc.private_subnet_ids
  public_subnet_ids      = module.vpc.public_subnet_ids
  endpoint_public_access = var.eks_endpoint_public_access
  public_access_cidrs    = var.eks_public_access_cidrs
  node_groups            = merge(local.base_node_groups, local.spot_node_group)
  app_namespace          = var.kubernetes_namespace
  managed_addons         = var.eks_managed_addons
  managed_addon_versions = var.eks_managed_addon_versions
}

module "rds" {
  source = "./modules/rds"

  identifier              = "${local.name}-postgres"
  vpc_id                  = module.vpc.vpc_id
  subnet_ids              = module.vpc.private_subnet_ids
  allowed_cidr_blocks     = [var.vpc_cidr]
  engine_version          = var.rds_engine_version
  instance_class          = var.rds_instance_class
  allocated_storage       = var.rds_allocated_storage
  max_allocated_storage   = var.rds_max_allocated_storage
  multi_az                = var.rds_multi_az || local.is_production
  deletion_protection     = var.rds_deletion_protection || local.is_production
  skip_final_snapshot     = !local.is_production
  backup_retention_period = var.rds_backup_retention_days
  db_name                 = var.rds_db_name
  master_username         = var.rds_master_username
  parameters              = var.rds_parameters

  performance_insights_enabled = var.rds_performance_insights_enabled
}

module "elasticache" {
  source = "./modules/elasticache"

  replication_group_id     = "${local.name}-redis"
  vpc_id                   = module.vpc.vpc_id
  subnet_ids               = module.vpc.private_subnet_ids
  allowed_cidr_blocks      = [var.vpc_cidr]
  engine_version           = var.redis_engine_version
  node_type                = var.redis_node_type
  cluster_mode_enabled     = var.redis_cluster_mode_enabled
  num_shards               = var.redis_num_shards
  replicas_per_shard       = var.redis_replicas_per_shard
  snapshot_retention_limit = var.redis_snapshot_retention_days

  secret_recovery_window_days = local.is_production ? 30 : 0
}

module "waf" {
  source = "./modules/waf"

  name                = "${local.name}-alb"
  rate_limit_per_5min = var.waf_rate_limit_per_5min
}
