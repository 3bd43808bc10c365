"""Phase 1 — foundation: AWS accounts, Identity Center check, Terraform state backend, VPC, EKS, kubeconfig,
cluster add-ons and the cluster smoke test (the migration guide's weeks 1–2).

Steps talk to adapters only: ``aws_foundation`` (Organizations, SSO admin, S3, DynamoDB, EC2/EKS read-backs),
``terraform`` (through :class:`phases._terraform_step.TerraformModuleStep`) and ``kube``.
"""

NUMBER = 1
TITLE = "foundation"
# step modules in definition order (the graph orders by phase, then depends_on, then this order)
ORDER = (
    "aws_accounts",
    "sso_check",
    "tf_state_backend",
    "vpc",
    "eks",
    "kubeconfig",
    "cluster_addons",
    "cluster_smoke",
    "audit_baseline",
)
