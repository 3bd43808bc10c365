output "web_acl_arn" {
  description = "ARN of the web ACL (the ingress annotation alb.ingress.kubernetes.io/wafv2-acl-arn)."
  value       = aws_wafv2_web_acl.this.arn
}
