# stand-in for terraform/modules/rds: outputs the sandbox's target PostgreSQL as the "RDS" endpoint
variable "name" { type = string }
variable "vpc_id" { type = string }
variable "subnet_ids" { type = list(string) }
variable "host" { type = string }
variable "port" { type = number }

resource "terraform_data" "instance" {
  input = { identifier = "${var.name}-postgres", engine = "postgres", engine_version = "16", vpc_id = var.vpc_id }
}

output "endpoint" {
  value = var.host
}

output "port" {
  value = var.port
}

output "instance_id" {
  value = terraform_data.instance.input.identifier
}

output "master_user_secret_arn" {
  value = ""
}
