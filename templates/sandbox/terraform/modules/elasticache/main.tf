# stand-in for terraform/modules/elasticache: outputs the sandbox's target Redis as the "ElastiCache" endpoint
variable "name" { type = string }
variable "vpc_id" { type = string }
variable "subnet_ids" { type = list(string) }
variable "host" { type = string }
variable "port" { type = number }

resource "terraform_data" "replication_group" {
  input = {
    id             = "${var.name}-redis"
    engine         = "redis"
    engine_version = "7.1"
    vpc_id         = var.vpc_id
    host           = var.host
    port           = var.port
  }
}

output "endpoint" {
  value = terraform_data.replication_group.output.host
}

output "port" {
  value = terraform_data.replication_group.output.port
}

output "replication_group_id" {
  value = terraform_data.replication_group.output.id
}
