# ---------------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------------
variable "project" {
  description = "Project name, the prefix of every resource name."
  type        = string
  default     = "betterprompts"
}

variable "environment" {
  description = "Environment name: development, staging or production (sandbox for the local rehearsal)."
  type        = string

  validation {
    condition     = contains(["development", "staging", "production", "sandbox"], var.environment)
    error_message = "environment must be one of development, staging, production, sandbox."
  }
}

variable "aws_region" {
  description = "AWS region of this environment. Not set in environments/*.tfvars: bpmigrate passes the environment's aws.region from migrate.toml (-var aws_region=...), so Terraform and the steps' API calls use the same region; by hand, pass it the same way."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$", var.aws_region))
    error_message = "aws_region must be an AWS region name such as us-west-2."
  }
}

variable "aws_endpoint_url" {
  description = "Send every AWS API call to this endpoint (an AWS-compatible emulator, e.g. the local rehearsal's). null = real AWS."
  type        = string
  default     = null
}

variable "tags" {
  description = "Extra tags on every resource (cost allocation)."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------------------------------------------
# VPC
# ---------------------------------------------------------------------------------------------------------------
variable "vpc_cidr" {
  description = "CIDR block of the VPC."
  type        = string
  default     = "10.0.0.0/16"
}

variable "az_count" {
  description = "Number of availability zones (one public and one private subnet in each)."
  type        = number
  default     = 3
}

variable "vpc_flow_logs_retention_days" {
  description = "VPC flow logs to CloudWatch Logs kept this many days; 0 = no flow logs."
  type        = number
  default     = 30
}

variable "single_nat_gateway" {
  description = "One shared NAT gateway instead of one per AZ (cheaper, not zone-redundant)."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------------------------------------------
# EKS
# ---------------------------------------------------------------------------------------------------------------
variable "eks_cluster_version" {
  description = "Kubernetes version of the EKS control plane."
  type        = string
  default     = "1.33"
}

variable "eks_endpoint_public_access" {
  description = "Expose the EKS API endpoint publicly (restricted to eks_public_access_cidrs)."
  type        = bool
  default     = true
}

variable "eks_public_access_cidrs" {
  description = "CIDRs allowed to reach the public EKS API endpoint (the operators' VPN/office egress)."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = !(var.environment == "production" && var.eks_endpoint_public_access && contains(var.eks_public_access_cidrs, "0.0.0.0/0"))
    error_message = "The production EKS API endpoint must not be open to 0.0.0.0/0: set eks_public_access_cidrs in environments/production.tfvars to your VPN/office egress CIDRs (or eks_endpoint_public_access = false)."
  }
}

variable "kubernetes_namespace" {
  description = "Namespace of the application on the cluster (the cost monitor's IRSA role trusts its service account there)."
  type        = string
  default     = "betterprompts"
}

variable "eks_managed_addons" {
  description = "vpc-cni (with network-policy enforcement), kube-proxy, coredns, metrics-server and aws-ebs-csi-driver as EKS managed add-ons. false only where the EKS API has no add-ons (the sandbox's emulator)."
  type        = bool
  default     = true
}

variable "eks_managed_addon_versions" {
  description = "Pinned EKS add-on versions by add-on name; unset = EKS's default version for eks_cluster_version."
  type        = map(string)
  default     = {}
}

variable "system_node_instance_types" {
  description = "Instance types of the `system` node group (cluster add-ons)."
  type        = list(string)
  default     = ["t3a.medium"]
}

variable "system_node_scaling" {
  description = "min/desired/max nodes of the `system` node group."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 2, desired = 2, max = 4 }
}

variable "application_node_instance_types" {
  description = "Instance types of the `application` node group (several types widen the spot pools)."
  type        = list(string)
  default     = ["c6i.xlarge", "c5.xlarge", "c6a.xlarge"]
}

variable "application_capacity_type" {
  description = "ON_DEMAND or SPOT for the `application` node group."
  type        = string
  default     = "SPOT"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.application_capacity_type)
    error_message = "application_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "application_node_scaling" {
  description = "min/desired/max nodes of the `application` node group."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 3, desired = 3, max = 9 }
}

variable "spot_node_scaling" {
  description = "min/desired/max nodes of the optional `spot` node group for non-critical workloads; null = no such group."
  type        = object({ min = number, desired = number, max = number })
  default     = null
}

variable "spot_node_instance_types" {
  description = "Instance types of the optional `spot` node group."
  type        = list(string)
  default     = ["t3a.large", "t3.large"]
}

variable "gpu_node_instance_types" {
  description = "Instance types of the `gpu` node group (g4dn/g5 family)."
  type        = list(string)
  default     = ["g4dn.xlarge"]

  validation {
    condition     = alltrue([for t in var.gpu_node_instance_types : can(regex("^(g4dn|g5)\\.", t))])
    error_message = "gpu_node_instance_types must be g4dn.* or g5.* instance types."
  }
}

variable "gpu_capacity_type" {
  description = "ON_DEMAND or SPOT for the `gpu` node group."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.gpu_capacity_type)
    error_message = "gpu_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "gpu_node_scaling" {
  description = "min/desired/max nodes of the `gpu` node group."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 1, desired = 1, max = 5 }
}

# ---------------------------------------------------------------------------------------------------------------
# RDS PostgreSQL
# ---------------------------------------------------------------------------------------------------------------
variable "rds_engine_version" {
  description = "PostgreSQL engine version (major, or major.minor). pgvector ships with RDS PostgreSQL 16."
  type        = string
  default     = "16"
}

variable "rds_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.r6g.xlarge"
}

variable "rds_allocated_storage" {
  description = "Initial storage in GiB (gp3)."
  type        = number
  default     = 500
}

variable "rds_max_allocated_storage" {
  description = "Storage autoscaling ceiling in GiB."
  type        = number
  default     = 2000
}

variable "rds_multi_az" {
  description = "Multi-AZ standby (always true in production)."
  type        = bool
  default     = false
}

variable "rds_deletion_protection" {
  description = "Deletion protection (always true in production)."
  type        = bool
  default     = false
}

variable "rds_backup_retention_days" {
  description = "Automated backup retention in days."
  type        = number
  default     = 7
}

variable "rds_performance_insights_enabled" {
  description = "Performance Insights on the instance."
  type        = bool
  default     = true
}

variable "rds_parameters" {
  description = "Parameters of the instance's parameter group (pgvector needs no preloading: CREATE EXTENSION vector is enough)."
  type        = map(object({ value = string, apply_method = optional(string, "immediate") }))
  default = {
    # TLS only
    "rds.force_ssl" = { value = "1" }
    # slow statements in the PostgreSQL log
    "log_min_duration_statement" = { value = "500" }
    # 1/16 of the instance memory (in kB) for building HNSW/IVFFlat indexes after the data copy
    "maintenance_work_mem" = { value = "{DBInstanceClassMemory/16384}" }
    # query statistics for the latency gates
    "shared_preload_libraries" = { value = "pg_stat_statements", apply_method = "pending-reboot" }
  }
}

variable "rds_db_name" {
  description = "Initial database name."
  type        = string
  default     = "betterprompts"
}

variable "rds_master_username" {
  description = "Master user name. The password is generated and kept in Secrets Manager by RDS (never in tfvars)."
  type        = string
  default     = "betterprompts_admin"
}

# ---------------------------------------------------------------------------------------------------------------
# ElastiCache Redis
# ---------------------------------------------------------------------------------------------------------------
variable "redis_engine_version" {
  description = "Redis engine version."
  type        = string
  default     = "7.1"
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.r6g.large"
}

variable "redis_cluster_mode_enabled" {
  description = "Cluster mode (sharded; only logical DB 0 exists, the data phase maps DBs 1-2 to key prefixes)."
  type        = bool
  default     = false
}

variable "redis_num_shards" {
  description = "Shards when cluster mode is enabled."
  type        = number
  default     = 3
}

variable "redis_replicas_per_shard" {
  description = "Replicas per shard (cluster mode) or replicas of the primary (cluster mode disabled)."
  type        = number
  default     = 1
}

variable "redis_snapshot_retention_days" {
  description = "Daily snapshot retention in days (0 = none)."
  type        = number
  default     = 7
}

variable "waf_rate_limit_per_5min" {
  description = "Requests per client IP per 5 minutes before the ALB's WAF blocks it."
  type        = number
  default     = 2000
}
