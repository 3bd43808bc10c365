"""Step ``waf``: the WAF web ACL in front of the ALB (Terraform module.waf; verified with WAFv2 reads)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from migrate.step import Check, StepContext

from .._terraform_step import TerraformModuleStep


class Waf(TerraformModuleStep):
    """The WAF web ACL in front of the ALB: AWS managed common rules, known bad inputs, a per-IP rate limit.

    Terraform module.waf; the ALB joins it through the ingress annotation ``alb.ingress.kubernetes.io/wafv2-acl-arn``
    (the `web_acl_arn` output). Verify reads the web ACL back through the WAFv2 API and checks its rules.
    """

    id = "waf"
    title = "WAF web ACL for the ALB (Terraform)"
    phase = 3
    depends_on = ("tf-state-backend",)
    output_map: ClassVar[dict[str, str]] = {"web_acl_arn": "waf_web_acl_arn"}

    def summary(self, outputs: Mapping[str, Any]) -> str:
        arn = str(outputs.get("web_acl_arn", "?"))
        return f"web ACL {arn.rsplit('/', 2)[-2] if arn.count('/') >= 2 else arn}"

    def verify_resources(self, ctx: StepContext) -> list[Check]:
        arn = str(ctx.output(self.id, "web_acl_arn"))
        name, acl_id = arn.rsplit("/", 2)[-2:]
        acl = ctx.adapters.aws().call("wafv2", "get_web_acl", Name=name, Scope="REGIONAL", Id=acl_id)["WebACL"]
        rules = {r["Name"]: r for r in acl.get("Rules", [])}
        managed = [
            r["Statement"]["ManagedRuleGroupStatement"]["Name"]
            for r in rules.values()
            if "ManagedRuleGroupStatement" in r.get("Statement", {})
        ]
        rate = rules.get("rate-limit", {}).get("Statement", {}).get("RateBasedStatement", {})
        return [
            Check("web ACL exists (REGIONAL)", bool(acl), acl.get("Name"), name),
            Check(
                "AWS managed common rule set",
                "AWSManagedRulesCommonRuleSet" in managed,
                managed,
                "AWSManagedRulesCommonRuleSet",
            ),
            Check(
                "per-IP rate limit blocks",
                bool(rate) and rate.get("AggregateKeyType") == "IP",
                rate or "absent",
                "rate-based, by IP",
            ),
        ]
