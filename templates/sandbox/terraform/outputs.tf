# Same names as terraform/outputs.tf (an API read by bpmigrate's steps).
output "vpc_id" {
  value = module.vpc.vpc_id
}

output "private_subnet_ids" {
  value = module.vpc.private_subnet_ids
}

output "public_subnet_ids" {
  value = module.vpc.public_subnet_ids
}

output "eks_cluster_name" {
  value = module.eks.cluster_name
}

output "eks_cluster_endpoint" {
  value = module.eks.cluster_endpoint
}

output "eks_cluster_certificate_authority" {
  value = module.eks.cluster_certificate_authority
}

output "eks_oidc_provider_arn" {
  value = module.eks.oidc_provider_arn
}

output "eks_node_groups" {
  value = module.eks.node_group_names
}

output "eks_irsa_role_arns" {
  value = module.eks.irsa_role_arns
}

output "eks_managed_addons" {
  value = module.eks.managed_addons
}

output "rds_endpoint" {
  value = module.rds.endpoint
}

output "rds_port" {
  value = module.rds.port
}

output "rds_instance_id" {
  value = module.rds.instance_id
}

output "rds_master_user_secret_arn" {
  value = module.rds.master_user_secret_arn
}

output "elasticache_endpoint" {
  value = module.elasticache.endpoint
}

output "elasticache_port" {
  value = module.elasticache.port
}

output "elasticache_replication_group_id" {
  value = module.elasticache.replication_group_id
}

output "waf_web_acl_arn" {
  value = module.waf.web_acl_arn
}
