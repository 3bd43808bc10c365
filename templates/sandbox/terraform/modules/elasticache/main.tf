# stand-in for terraform/modules/elasticache: outputs the sandbox's target Redis as the "ElastiCache" endpoint
variable "name" { type = string }
variable "vpc_id" { type = string }
variable "subnet_ids" { type = list(string) }
variable "host" { type = string }
variable "port" { type = number }

resource "terraform_data" "replication_group" {
  input = { id = "${var.name}-redis", engine = "redis", engine_version = "7.1", vpc_id = var.vpc_id }
}

output "endpoint" {
  value = var.host
}

output "port" {
  value = var.port
}

output "replication_group_id" {
  value = terraform_data.replication_group.input.id
}
