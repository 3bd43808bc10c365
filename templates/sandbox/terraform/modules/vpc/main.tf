# stand-in for terraform/modules/vpc: one terraform_data per network object
variable "name" { type = string }
variable "vpc_cidr" { type = string }
variable "az_count" { type = number }

resource "terraform_data" "vpc" {
  input = { name = var.name, cidr = var.vpc_cidr }
}

resource "terraform_data" "public_subnet" {
  count = var.az_count
  input = { vpc = terraform_data.vpc.id, cidr = cidrsubnet(var.vpc_cidr, 8, count.index), tier = "public" }
}

resource "terraform_data" "private_subnet" {
  count = var.az_count
  input = { vpc = terraform_data.vpc.id, cidr = cidrsubnet(var.vpc_cidr, 8, 100 + count.index), tier = "private" }
}

output "vpc_id" {
  value = "vpc-${substr(replace(terraform_data.vpc.id, "-", ""), 0, 17)}"
}

output "public_subnet_ids" {
  value = [for s in terraform_data.public_subnet : "subnet-${substr(replace(s.id, "-", ""), 0, 17)}"]
}

output "private_subnet_ids" {
  value = [for s in terraform_data.private_subnet : "subnet-${substr(replace(s.id, "-", ""), 0, 17)}"]
}
