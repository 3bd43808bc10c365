# stand-in for terraform/modules/rds: outputs the sandbox's target PostgreSQL as the "RDS" endpoint
variable "name" { type = string }
variable "vpc_id" { type = string }
variable "subnet_ids" { type = list(string) }
variable "host" { type = string }
variable "port" { type = number }

resource "terraform_data" "instance" {
  input = {
    identifier     = "${var.name}-postgres"
    engine         = "postgres"
    engine_version = "16"
    vpc_id         = var.vpc_id
    host           = var.host
    port           = var.port
  }
}

output "endpoint" {
  value = terraform_data.instance.output.host
}

output "port" {
  value = terraform_data.instance.output.port
}

output "instance_id" {
  value = terraform_data.instance.output.identifier
}

output "master_user_secret_arn" {
  description = "stand-in: none (the sandbox's target PostgreSQL trusts loopback; no Secrets Manager secret)"
  value       = ""
}
