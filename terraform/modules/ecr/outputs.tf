output "repository_urls" {
  description = "Repository URL by service name."
  value       = { for svc, repo in aws_ecr_repository.this : svc => repo.repository_url }
}

output "repository_arns" {
  description = "Repository ARN by service name."
  value       = { for svc, repo in aws_ecr_repository.this : svc => repo.arn }
}
