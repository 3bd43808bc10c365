terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # Configured at init time, one state per environment workspace:
  #   terraform init -backend-config="bucket=..." -backend-config="key=betterprompts/terraform.tfstate" \
  #     -backend-config="region=us-east-1" -backend-config="dynamodb_table=..." -backend-config="encrypt=true"
  # bpmigrate takes these values from the `tf-state-backend` step's outputs.
  backend "s3" {}
}
