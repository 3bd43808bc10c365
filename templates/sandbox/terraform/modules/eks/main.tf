# stand-in for terraform/modules/eks: the cluster and its system/application/gpu node groups
variable "name" { type = string }
variable "vpc_id" { type = string }
variable "private_subnet_ids" { type = list(string) }
variable "cluster_version" { type = string }

locals {
  node_groups = {
    system      = { instance_types = ["t3a.medium"], labels = { node_group = "system" }, taints = [] }
    application = { instance_types = ["c6i.xlarge"], labels = { node_group = "application" }, taints = [] }
    gpu = {
      instance_types = ["g4dn.xlarge"]
      labels         = { node_group = "gpu", "nvidia.com/gpu.present" = "true" }
      taints         = [{ key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }]
    }
  }
}

resource "terraform_data" "cluster" {
  input = { name = var.name, version = var.cluster_version, vpc_id = var.vpc_id, subnets = var.private_subnet_ids }
}

resource "terraform_data" "node_group" {
  for_each = local.node_groups
  input    = merge(each.value, { cluster = terraform_data.cluster.id, name = "${var.name}-${each.key}" })
}

output "cluster_name" {
  value = terraform_data.cluster.output.name
}

output "cluster_endpoint" {
  value = "https://stand-in.${terraform_data.cluster.output.name}.eks.invalid"
}

output "cluster_certificate_authority" {
  value = base64encode("stand-in CA for ${terraform_data.cluster.output.name}")
}

output "oidc_provider_arn" {
  value = "arn:aws:iam::123456789012:oidc-provider/stand-in/${terraform_data.cluster.output.name}"
}

output "node_group_names" {
  value = { for k, ng in terraform_data.node_group : k => ng.input.name }
}
