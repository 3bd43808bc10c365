variable "namespace" {
  description = "Repository name prefix: repositories are <namespace>/<service>."
  type        = string
}

variable "repositories" {
  description = "Service names, one repository each."
  type        = list(string)
}

variable "image_tag_mutability" {
  description = "MUTABLE or IMMUTABLE."
  type        = string
  default     = "MUTABLE"
}

variable "keep_tagged_images" {
  description = "Tagged images kept per repository by the lifecycle policy."
  type        = number
  default     = 30
}

variable "untagged_expiry_days" {
  description = "Untagged images expire after this many days."
  type        = number
  default     = 7
}

variable "force_delete" {
  description = "Allow destroying a repository that still holds images."
  type        = bool
  default     = false
}
