# stand-in for terraform/modules/eks: the cluster and its system/application/gpu node groups
variable "name" { type = string }
variable "vpc_id" { type = string }
variable "private_subnet_ids" { type = list(string) }
variable "cluster_version" { type = string }
variable "account_id" { type = string }
variable "app_namespace" { type = string }

locals {
  irsa_service_accounts = {
    "aws-load-balancer-controller" = "system:serviceaccount:kube-system:aws-load-balancer-controller"
    "cluster-autoscaler"           = "system:serviceaccount:kube-system:cluster-autoscaler"
    "cost-monitor"                 = "system:serviceaccount:${var.app_namespace}:cost-monitor"
    "ebs-csi-driver"               = "system:serviceaccount:kube-system:ebs-csi-controller-sa"
  }
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

# the IRSA roles of the add-ons (name and trusted service account as in terraform/modules/eks/irsa.tf)
resource "terraform_data" "irsa_role" {
  for_each = local.irsa_service_accounts
  input = {
    name            = "${var.name}-${each.key}"
    service_account = each.value
    oidc_provider   = "stand-in/${terraform_data.cluster.output.name}"
  }
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
  value = "arn:aws:iam::${var.account_id}:oidc-provider/stand-in/${terraform_data.cluster.output.name}"
}

output "node_group_names" {
  value = { for k, ng in terraform_data.node_group : k => ng.input.name }
}

output "irsa_role_arns" {
  value = { for k, r in terraform_data.irsa_role : k => "arn:aws:iam::${var.account_id}:role/${r.output.name}" }
}

# the sandbox's EKS (moto) has no add-on API: no EKS managed add-ons, as terraform/environments/sandbox.tfvars says
# (a resource, not a literal: a targeted apply only records outputs that depend on something it applies)
resource "terraform_data" "managed_addons" {
  input = { cluster = terraform_data.cluster.id, addons = {} }
}

output "managed_addons" {
  value = terraform_data.managed_addons.output.addons
}
