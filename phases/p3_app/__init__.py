"""Phase 3 — the application on EKS: ECR repositories and images, configuration and secrets, Deployments and
Services, HPAs, the ALB ingress with its ACM certificate, smoke checks and the load-test gate.

Kubernetes steps skip (with the reason and how to provide a cluster) when no cluster is reachable; HTTP steps skip
when no service endpoint is configured. Secrets read from the Compose file are registered for redaction the moment
they are read and only ever leave this module towards AWS Secrets Manager and Kubernetes Secrets.
"""

NUMBER = 3
TITLE = "app"
# step modules in definition order (the graph orders by phase, then depends_on, then this order)
ORDER = (
    "ecr_repos",
    "images",
    "k8s_config",
    "k8s_deploy",
    "hpa",
    "ingress",
    "app_smoke",
    "load_test",
    "waf",
    "observability",
)
