# EKS managed add-ons: AWS installs, upgrades and reports on them through the EKS API. Without a pinned version,
# EKS picks its default version for the cluster's Kubernetes version. The VPC CNI runs with network-policy
# enforcement on (its node agent), so the NetworkPolicy objects of the security-hardening step are enforced.
# Off (var.managed_addons = false) where the EKS API has no add-ons (an emulator): the cluster then keeps the
# self-managed vpc-cni/coredns/kube-proxy EKS installs by default.
locals {
  managed_addons = {
    "vpc-cni" = {
      configuration_values     = jsonencode({ enableNetworkPolicy = "true" })
      service_account_role_arn = null
    }
    "kube-proxy" = {
      configuration_values     = null
      service_account_role_arn = null
    }
    "coredns" = {
      configuration_values     = null
      service_account_role_arn = null
    }
    "metrics-server" = {
      configuration_values     = null
      service_account_role_arn = null
    }
    "aws-ebs-csi-driver" = {
      configuration_values     = null
      service_account_role_arn = aws_iam_role.irsa["ebs-csi-driver"].arn
    }
  }
}

resource "aws_eks_addon" "this" {
  for_each = { for name, addon in local.managed_addons : name => addon if var.managed_addons }

  cluster_name             = aws_eks_cluster.this.name
  addon_name               = each.key
  addon_version            = lookup(var.managed_addon_versions, each.key, null)
  configuration_values     = each.value.configuration_values
  service_account_role_arn = each.value.service_account_role_arn

  # take over the self-managed vpc-cni/coredns/kube-proxy EKS installed with the cluster; Terraform stays the owner
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  # coredns, metrics-server and the EBS CSI controller need nodes to become ACTIVE
  depends_on = [aws_eks_node_group.this]
}
