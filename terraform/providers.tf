# One provider configuration for every environment. `aws_endpoint_url` is null for real AWS accounts; when set
# (the local sandbox points it at its moto server) every service this root uses is sent to that endpoint and the
# account/credential look-ups that only real AWS can answer are skipped. Nothing else differs between environments.
locals {
  custom_endpoint = var.aws_endpoint_url != null
}

provider "aws" {
  region = var.aws_region

  skip_credentials_validation = local.custom_endpoint
  skip_requesting_account_id  = local.custom_endpoint
  s3_use_path_style           = local.custom_endpoint

  endpoints {
    dynamodb       = var.aws_endpoint_url
    ec2            = var.aws_endpoint_url
    ecr            = var.aws_endpoint_url
    eks            = var.aws_endpoint_url
    elasticache    = var.aws_endpoint_url
    iam            = var.aws_endpoint_url
    kms            = var.aws_endpoint_url
    logs           = var.aws_endpoint_url
    rds            = var.aws_endpoint_url
    s3             = var.aws_endpoint_url
    secretsmanager = var.aws_endpoint_url
    sts            = var.aws_endpoint_url
    wafv2          = var.aws_endpoint_url
  }

  default_tags {
    tags = local.tags
  }
}
