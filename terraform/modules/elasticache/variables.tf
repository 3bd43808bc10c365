variable "replication_group_id" {
  description = "ID of the replication group (also the prefix of its subnet and security groups)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the replication group."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the cache subnet group."
  type        = list(string)
}

variable "allowed_cidr_blocks" {
  description = "CIDRs allowed to connect on the Redis port."
  type        = list(string)
  default     = []
}

variable "engine_version" {
  description = "Redis engine version (7.x)."
  type        = string
  default     = "7.1"

  validation {
    condition     = can(regex("^7(\\.|$)", var.engine_version))
    error_message = "engine_version must be Redis 7.x (the source runs Redis 7)."
  }
}

variable "node_type" {
  description = "Node type."
  type        = string
}

variable "cluster_mode_enabled" {
  description = "Cluster mode: num_shards shards of 1 primary + replicas_per_shard replicas; only DB 0 exists."
  type        = bool
  default     = false
}

variable "num_shards" {
  description = "Shards (node groups) when cluster mode is enabled."
  type        = number
  default     = 3
}

variable "replicas_per_shard" {
  description = "Replicas per shard, or replicas of the single primary when cluster mode is disabled."
  type        = number
  default     = 1
}

variable "snapshot_retention_limit" {
  description = "Daily snapshot retention in days (0 = none)."
  type        = number
  default     = 7
}

variable "port" {
  description = "Redis port."
  type        = number
  default     = 6379
}

variable "secret_recovery_window_days" {
  description = "Days Secrets Manager keeps a deleted AUTH token secret (0 = delete at once, for rehearsals)."
  type        = number
  default     = 7
}
