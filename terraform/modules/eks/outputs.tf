output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "HTTPS endpoint of the API server."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority" {
  description = "Base64 CA data of the API server."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "cluster_security_group_id" {
  description = "Security group EKS created for the control plane and nodes."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "oidc_provider_arn" {
  description = "IAM OIDC provider ARN (IRSA)."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "node_role_arn" {
  description = "IAM role of the worker nodes."
  value       = aws_iam_role.node.arn
}

output "node_group_names" {
  description = "Node group names by key."
  value       = { for k, g in aws_eks_node_group.this : k => g.node_group_name }
}

output "irsa_role_arns" {
  description = "IRSA role ARN by add-on (aws-load-balancer-controller, cluster-autoscaler, cost-monitor, ebs-csi-driver)."
  value       = { for addon, role in aws_iam_role.irsa : addon => role.arn }
}

output "irsa_service_accounts" {
  description = "The service account (namespace/name) each IRSA role trusts, by add-on."
  value       = { for addon, spec in local.irsa : addon => "${spec.namespace}/${spec.service_account}" }
}

output "managed_addons" {
  description = "EKS managed add-ons installed, name -> version (empty when var.managed_addons is false)."
  value       = { for name, addon in aws_eks_addon.this : name => addon.addon_version }
}
