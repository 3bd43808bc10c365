# stand-in for terraform/modules/waf: the web ACL's shape (managed common rules + a per-IP rate limit)
variable "name" { type = string }
variable "region" { type = string }
variable "account_id" { type = string }
variable "rate_limit_per_5min" {
  type    = number
  default = 2000
}

resource "terraform_data" "web_acl" {
  input = { name = var.name, scope = "REGIONAL", rules = ["aws-common", "aws-known-bad-inputs", "rate-limit"], rate_limit = var.rate_limit_per_5min }
}

output "web_acl_arn" {
  value = "arn:aws:wafv2:${var.region}:${var.account_id}:regional/webacl/${terraform_data.web_acl.input.name}/stand-in"
}
