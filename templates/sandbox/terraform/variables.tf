# Written by `bpmigrate sandbox up` into state/<env>/terraform.tfvars.json:
variable "pg_target_host" {
  description = "Host of the sandbox's target PostgreSQL (stands in for RDS)."
  type        = string
  default     = "127.0.0.1"
}

variable "pg_target_port" {
  description = "Port of the sandbox's target PostgreSQL."
  type        = number
  default     = 5432
}

variable "redis_target_host" {
  description = "Host of the sandbox's target Redis (stands in for ElastiCache)."
  type        = string
  default     = "127.0.0.1"
}

variable "redis_target_port" {
  description = "Port of the sandbox's target Redis."
  type        = number
  default     = 6379
}

variable "aws_endpoint_url" {
  description = "The sandbox's moto server (unused by terraform_data; kept so the tfvars file matches)."
  type        = string
  default     = null
}

variable "env_name" {
  description = "Environment name (sandbox)."
  type        = string
  default     = "sandbox"
}

# Defaults mirror the real root's variables.
variable "project" {
  type    = string
  default = "betterprompts"
}

variable "aws_region" {
  type    = string
  default = "us-east-1"
}

variable "aws_account_id" {
  description = "moto's default account."
  type        = string
  default     = "123456789012"
}

variable "vpc_cidr" {
  type    = string
  default = "10.0.0.0/16"
}

variable "az_count" {
  type    = number
  default = 3
}

variable "eks_cluster_version" {
  type    = string
  default = "1.30"
}

variable "kubernetes_namespace" {
  type    = string
  default = "betterprompts"
}
