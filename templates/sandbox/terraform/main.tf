# Sandbox STAND-IN root: the same module names and root outputs as the real terraform/ root, built only from
# Terraform's built-in `terraform_data` resource, so the runner's whole workflow (init, plan -out, show -json,
# apply PLANFILE, output -json, targeted destroy) runs for real on a machine without the AWS provider.
# Nothing here creates AWS resources; the endpoints it outputs are the sandbox's local PostgreSQL/Redis.
# bpmigrate prefers the real terraform/ modules against moto when the hashicorp/aws provider is at hand.
terraform {
  required_version = ">= 1.5.0"

  # state lives under state/<env>/terraform/ (bpmigrate passes path/workspace_dir with -backend-config)
  backend "local" {}
}

locals {
  name = "betterprompts-${var.env_name}"
}

module "vpc" {
  source   = "./modules/vpc"
  name     = local.name
  vpc_cidr = var.vpc_cidr
  az_count = var.az_count
}

module "eks" {
  source             = "./modules/eks"
  name               = local.name
  vpc_id             = module.vpc.vpc_id
  private_subnet_ids = module.vpc.private_subnet_ids
  cluster_version    = var.eks_cluster_version
  account_id         = var.aws_account_id
  app_namespace      = var.kubernetes_namespace
}

module "rds" {
  source     = "./modules/rds"
  name       = local.name
  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnet_ids
  host       = var.pg_target_host
  port       = var.pg_target_port
}

module "elasticache" {
  source     = "./modules/elasticache"
  name       = local.name
  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnet_ids
  host       = var.redis_target_host
  port       = var.redis_target_port
}

module "waf" {
  source     = "./modules/waf"
  name       = "${local.name}-alb"
  region     = var.aws_region
  account_id = var.aws_account_id
}
