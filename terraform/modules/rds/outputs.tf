output "endpoint" {
  description = "Host name of the instance."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "Port of the instance."
  value       = aws_db_instance.this.port
}

output "instance_id" {
  description = "Identifier of the instance."
  value       = aws_db_instance.this.identifier
}

output "arn" {
  description = "ARN of the instance."
  value       = aws_db_instance.this.arn
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret holding the master password (managed by RDS)."
  value       = try(aws_db_instance.this.master_user_secret[0].secret_arn, null)
}

output "security_group_id" {
  description = "Security group of the instance."
  value       = aws_security_group.this.id
}
