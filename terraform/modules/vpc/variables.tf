variable "name" {
  description = "Name prefix of every resource."
  type        = string
}

variable "cidr_block" {
  description = "CIDR block of the VPC (a /16: public subnets take x.x.1-3.0/24, private ones x.x.11-13.0/24)."
  type        = string
}

variable "az_count" {
  description = "Number of availability zones."
  type        = number
  default     = 3
}

variable "single_nat_gateway" {
  description = "One shared NAT gateway instead of one per AZ."
  type        = bool
  default     = false
}

variable "cluster_name" {
  description = "EKS cluster that discovers these subnets (kubernetes.io/cluster/<name> tags for load balancers)."
  type        = string
}

variable "flow_logs_retention_days" {
  description = "VPC flow logs (all traffic) to CloudWatch Logs kept this many days; 0 = no flow logs."
  type        = number
  default     = 30
}
