# stand-in for terraform/modules/ecr: one repository per service
variable "name" { type = string }
variable "services" { type = list(string) }
variable "region" { type = string }
variable "account_id" { type = string }

resource "terraform_data" "repository" {
  for_each = toset(var.services)
  input    = { name = "${var.name}/${each.key}", scan_on_push = true }
}

output "repository_urls" {
  value = { for k, r in terraform_data.repository : k => "${var.account_id}.dkr.ecr.${var.region}.amazonaws.com/${r.input.name}" }
}
