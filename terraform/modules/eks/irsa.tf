# IAM roles for service accounts (IRSA): one role per cluster add-on that calls AWS, assumable only by that add-on's
# Kubernetes service account (the exact system:serviceaccount:<namespace>:<name> subject, audience sts.amazonaws.com)
# through the cluster's OIDC provider. Their ARNs go on the service accounts' eks.amazonaws.com/role-arn annotation.
locals {
  oidc_issuer = replace(aws_iam_openid_connect_provider.this.url, "https://", "")

  # add-on -> the service account its pods run as (templates/k8s/addons, templates/k8s/cutover/cost-monitoring.yaml,
  # the EKS aws-ebs-csi-driver add-on)
  irsa = {
    "aws-load-balancer-controller" = { namespace = "kube-system", service_account = "aws-load-balancer-controller" }
    "cluster-autoscaler"           = { namespace = "kube-system", service_account = "cluster-autoscaler" }
    "cost-monitor"                 = { namespace = var.app_namespace, service_account = "cost-monitor" }
    "ebs-csi-driver"               = { namespace = "kube-system", service_account = "ebs-csi-controller-sa" }
  }

  # their permissions: a policy document (created as a customer-managed policy) or an AWS managed policy. The keys
  # are static (never derived from resources or data sources) so that `terraform import` can evaluate for_each.
  irsa_policies = {
    # the controller's published IAM policy (docs/install/iam_policy.json of the release in templates/k8s/versions.toml)
    "aws-load-balancer-controller" = replace(jsonencode(jsondecode(file("${path.module}/policies/aws-load-balancer-controller.json"))), "arn:aws:", "arn:${data.aws_partition.current.partition}:")
    "cluster-autoscaler"           = data.aws_iam_policy_document.cluster_autoscaler.json
    "cost-monitor"                 = data.aws_iam_policy_document.cost_monitor.json
  }
  irsa_managed_policies = {
    "ebs-csi-driver" = "service-role/AmazonEBSCSIDriverPolicy"
  }
}

data "aws_iam_policy_document" "irsa_assume" {
  for_each = local.irsa

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.this.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${each.value.namespace}:${each.value.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each = local.irsa

  name               = "${var.cluster_name}-${each.key}"
  description        = "IRSA role of ${each.value.namespace}/${each.value.service_account} in ${var.cluster_name}"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume[each.key].json
}

resource "aws_iam_policy" "irsa" {
  for_each = local.irsa_policies

  name        = "${var.cluster_name}-${each.key}"
  description = "Permissions of ${each.key} in ${var.cluster_name} (IRSA)"
  policy      = each.value
}

resource "aws_iam_role_policy_attachment" "irsa" {
  for_each = local.irsa_policies

  role       = aws_iam_role.irsa[each.key].name
  policy_arn = aws_iam_policy.irsa[each.key].arn
}

resource "aws_iam_role_policy_attachment" "irsa_managed" {
  for_each = local.irsa_managed_policies

  role       = aws_iam_role.irsa[each.key].name
  policy_arn = "${local.policy_prefix}/${each.value}"
}

# Cluster Autoscaler on AWS (cluster-autoscaler/cloudprovider/aws/README.md, "Full Cluster Autoscaler Features
# Policy"): read the groups, instance types and node groups anywhere; change the size of, and terminate instances in,
# only the Auto Scaling groups tagged as owned by this cluster (EKS managed node groups carry that tag).
data "aws_iam_policy_document" "cluster_autoscaler" {
  statement {
    sid = "Describe"
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags",
      "ec2:DescribeImages",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:GetInstanceTypesFromInstanceRequirements",
      "eks:DescribeNodegroup",
    ]
    resources = ["*"]
  }

  statement {
    sid = "ScaleOwnedGroups"
    actions = [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${var.cluster_name}"
      values   = ["owned"]
    }
  }
}

# The cost-monitor CronJob (templates/k8s/cutover/cost-monitoring.yaml): reads cost and usage from Cost Explorer and
# the budgets; it changes nothing.
data "aws_iam_policy_document" "cost_monitor" {
  statement {
    sid = "ReadCost"
    actions = [
      "ce:GetCostAndUsage",
      "ce:GetCostForecast",
      "ce:GetDimensionValues",
      "budgets:ViewBudget",
    ]
    resources = ["*"]
  }
}
