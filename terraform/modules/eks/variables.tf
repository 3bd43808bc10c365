variable "cluster_name" {
  description = "Name of the EKS cluster."
  type        = string
}

variable "cluster_version" {
  description = "Kubernetes version."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets: control-plane ENIs and every node group."
  type        = list(string)
}

variable "public_subnet_ids" {
  description = "Public subnets (internet-facing load balancers)."
  type        = list(string)
}

variable "endpoint_public_access" {
  description = "Expose the API endpoint publicly."
  type        = bool
  default     = true
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to reach the public API endpoint."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "cluster_log_types" {
  description = "Control-plane log types sent to CloudWatch."
  type        = list(string)
  default     = ["api", "audit", "authenticator"]
}

variable "node_groups" {
  description = "Managed node groups by name (system, application, gpu, ...)."
  type = map(object({
    instance_types = list(string)
    capacity_type  = string
    ami_type       = string
    disk_size      = number
    scaling        = object({ min = number, desired = number, max = number })
    labels         = map(string)
    taints         = list(object({ key = string, value = string, effect = string }))
  }))
}

variable "app_namespace" {
  description = "Kubernetes namespace of the application (the cost monitor's service account lives there)."
  type        = string
  default     = "betterprompts"
}

variable "managed_addons" {
  description = "Install vpc-cni (network policy on), kube-proxy, coredns, metrics-server and aws-ebs-csi-driver as EKS managed add-ons. false where the EKS API has no add-ons (an emulator)."
  type        = bool
  default     = true
}

variable "managed_addon_versions" {
  description = "Pinned add-on versions by add-on name (e.g. { vpc-cni = \"v1.19.2-eksbuild.1\" }); an add-on not named here gets EKS's default version for the cluster's Kubernetes version."
  type        = map(string)
  default     = {}
}
