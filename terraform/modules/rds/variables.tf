variable "identifier" {
  description = "DB instance identifier (also the prefix of its subnet, parameter and security groups)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the instance."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the DB subnet group (one per AZ)."
  type        = list(string)
}

variable "allowed_cidr_blocks" {
  description = "CIDRs allowed to connect on the PostgreSQL port."
  type        = list(string)
  default     = []
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed to connect on the PostgreSQL port."
  type        = list(string)
  default     = []
}

variable "engine_version" {
  description = "PostgreSQL version (16 or 16.x)."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^16(\\.|$)", var.engine_version))
    error_message = "engine_version must be PostgreSQL 16 (the source runs pgvector/pgvector:pg16)."
  }
}

variable "instance_class" {
  description = "Instance class."
  type        = string
}

variable "allocated_storage" {
  description = "Initial gp3 storage in GiB."
  type        = number
}

variable "max_allocated_storage" {
  description = "Storage autoscaling ceiling in GiB."
  type        = number
}

variable "multi_az" {
  description = "Multi-AZ standby."
  type        = bool
}

variable "deletion_protection" {
  description = "Deletion protection."
  type        = bool
}

variable "skip_final_snapshot" {
  description = "Skip the final snapshot on destroy (never in production)."
  type        = bool
  default     = false
}

variable "backup_retention_period" {
  description = "Automated backup retention in days."
  type        = number
  default     = 7
}

variable "db_name" {
  description = "Initial database."
  type        = string
}

variable "master_username" {
  description = "Master user; its password is generated and rotated by RDS in Secrets Manager."
  type        = string
}

variable "port" {
  description = "PostgreSQL port."
  type        = number
  default     = 5432
}

variable "parameters" {
  description = "Parameters of the DB parameter group by name."
  type        = map(object({ value = string, apply_method = optional(string, "immediate") }))
  default     = {}
}

variable "performance_insights_enabled" {
  description = "Performance Insights on the instance."
  type        = bool
  default     = true
}
