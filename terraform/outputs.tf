# Output names are an API: bpmigrate's steps read them (see phases/), and the sandbox's stand-in root
# (templates/sandbox/terraform) declares the same names.
output "vpc_id" {
  description = "ID of the VPC."
  value       = module.vpc.vpc_id
}

output "private_subnet_ids" {
  description = "Private subnets (EKS nodes, RDS, ElastiCache), one per AZ."
  value       = module.vpc.private_subnet_ids
}

output "public_subnet_ids" {
  description = "Public subnets (ALB, NAT gateways), one per AZ."
  value       = module.vpc.public_subnet_ids
}

output "eks_cluster_name" {
  description = "Name of the EKS cluster."
  value       = module.eks.cluster_name
}

output "eks_cluster_endpoint" {
  description = "HTTPS endpoint of the EKS API server."
  value       = module.eks.cluster_endpoint
}

output "eks_cluster_certificate_authority" {
  description = "Base64 CA data of the EKS API server (for the kubeconfig)."
  value       = module.eks.cluster_certificate_authority
}

output "eks_oidc_provider_arn" {
  description = "IAM OIDC provider of the cluster (IAM roles for service accounts)."
  value       = module.eks.oidc_provider_arn
}

output "eks_node_groups" {
  description = "Node group names by role (system, application, gpu[, spot])."
  value       = module.eks.node_group_names
}

output "eks_irsa_role_arns" {
  description = "IRSA role ARN by add-on (aws-load-balancer-controller, cluster-autoscaler, cost-monitor, ebs-csi-driver): the eks.amazonaws.com/role-arn annotation of each add-on's service account."
  value       = module.eks.irsa_role_arns
}

output "eks_managed_addons" {
  description = "EKS managed add-ons, name -> version (empty when eks_managed_addons is false)."
  value       = module.eks.managed_addons
}

output "rds_endpoint" {
  description = "Host name of the RDS PostgreSQL instance."
  value       = module.rds.endpoint
}

output "rds_port" {
  description = "Port of the RDS PostgreSQL instance."
  value       = module.rds.port
}

output "rds_instance_id" {
  description = "Identifier of the RDS PostgreSQL instance."
  value       = module.rds.instance_id
}

output "rds_master_user_secret_arn" {
  description = "Secrets Manager secret (managed by RDS) holding the master password; the value never passes through Terraform."
  value       = module.rds.master_user_secret_arn
}

output "elasticache_endpoint" {
  description = "Primary endpoint (cluster mode disabled) or configuration endpoint (cluster mode enabled)."
  value       = module.elasticache.endpoint
}

output "elasticache_port" {
  description = "Port of the Redis replication group."
  value       = module.elasticache.port
}

output "elasticache_replication_group_id" {
  description = "ID of the Redis replication group."
  value       = module.elasticache.replication_group_id
}

output "elasticache_auth_secret_arn" {
  description = "Secrets Manager secret holding the Redis AUTH token (the value never passes through outputs)."
  value       = module.elasticache.auth_secret_arn
}

output "waf_web_acl_arn" {
  description = "WAF web ACL for the ALB (ingress annotation alb.ingress.kubernetes.io/wafv2-acl-arn)."
  value       = module.waf.web_acl_arn
}
