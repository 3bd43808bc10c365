variable "name" {
  description = "Name of the web ACL."
  type        = string
}

variable "rate_limit_per_5min" {
  description = "Requests per client IP per 5 minutes before WAF blocks it."
  type        = number
  default     = 2000
}
