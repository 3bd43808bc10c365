"""Step ``ingress``: ALB Ingress for api.<domain> with an ACM certificate requested and validated through the API."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.errors import AdapterError, BpmError, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, StepContext

from .._kube_step import ManifestStep, plan_manifests, verify_manifests
from ._common import INGRESS_FILE, MANAGED_TAG, AppSettings, AppStep, aws_app, base_values, namespace, render

INGRESS_NAME = "betterprompts"


class Ingress(AppStep, ManifestStep):
    """ALB Ingress for api.<domain> with an ACM certificate requested and validated through the API.

    Requests (or reuses) a DNS-validated ACM certificate for the host, writes the validation CNAMEs into Route53
    when `hosted_zone_id` is set (otherwise logs them), waits for ISSUED up to `cert_timeout` seconds, then applies
    the ALB Ingress (ingressClassName alb, certificate-arn annotation) and waits up to `alb_timeout` seconds for the
    AWS Load Balancer Controller to write the ALB's address into its status: recorded as `alb_dns_name` (what
    dns-cutover points the record at). Verify reads the certificate status from ACM and the Ingress back from the
    cluster. Rollback deletes the Ingress and the certificate bpmigrate requested.
    """

    id = "ingress"
    depends_on = ("k8s-deploy",)
    reversibility = Reversibility.COMPENSABLE
    rollback_mode = "delete"

    class Settings(AppSettings):
        host: str | None = Field(None, description="the public host (default api.<domain>)")
        hosted_zone_id: str | None = Field(None, description="Route53 zone for the ACM validation records")
        cert_timeout: float | None = Field(None, gt=0, description="seconds to wait for ISSUED (default 1800)")
        alb_timeout: float = Field(600, gt=0, description="seconds to wait for the ALB address on the Ingress")

    def host(self, ctx: StepContext) -> str:
        return str(ctx.typed(self.Settings).host or f"api.{ctx.env.domain}")

    def docs(self, ctx: StepContext, arn: str) -> list[dict[str, Any]]:
        return render(ctx, (INGRESS_FILE,), {**base_values(ctx), "certificate_arn": arn})

    def manifests(self, ctx: StepContext) -> list[dict[str, Any]]:
        arn = aws_app(ctx).find_certificate(self.host(ctx))
        return self.docs(ctx, arn or "")

    def plan(self, ctx: StepContext) -> PlanResult:
        host = self.host(ctx)
        zone = ctx.typed(self.Settings).hosted_zone_id
        arn = aws_app(ctx).find_certificate(host)
        result = PlanResult(data={"host": host, "hosted_zone_id": zone})
        if arn is None:
            result.changes.append(Change("create", f"acm:{host}", "DNS-validated certificate"))
            result.changes.append(
                Change("create", f"Ingress/{namespace(ctx)}/{INGRESS_NAME}", "ALB, TLS with the new cert")
            )
            result.unknown.append("the certificate ARN (known after the request)")
        else:
            result.in_place.append(f"acm:{host} ({arn})")
            plan_manifests(ctx, self.docs(ctx, arn), result)
        result.unknown.append("the ALB address (written by the AWS Load Balancer Controller after apply)")
        if not zone and not ctx.is_sandbox:
            result.findings.append(
                Finding(
                    "warn",
                    "no hosted_zone_id: the ACM validation records will be logged for you to create",
                    'set [steps.ingress] hosted_zone_id = "Z..." to let bpmigrate write them to Route53',
                )
            )
        return result

    def certificate(self, ctx: StepContext) -> tuple[str, str]:
        """Request (or reuse) the certificate, write/log its validation records, wait for ISSUED: (arn, status)."""
        app = aws_app(ctx)
        s = ctx.typed(self.Settings)
        host = self.host(ctx)
        token = hashlib.sha256(f"{ctx.env_name}:{host}".encode()).hexdigest()[:32]
        ctx.intent("acm-request-certificate", domain=host, idempotency_id=token)
        arn = app.request_certificate(host, token=token, tags=MANAGED_TAG)
        records = app.validation_records(arn)
        if s.hosted_zone_id and records:
            ctx.intent("route53-upsert-validation-records", zone=s.hosted_zone_id, records=[r["Name"] for r in records])
            app.upsert_validation_records(s.hosted_zone_id, records)
        else:
            for rec in records:
                ctx.log(f"ACM validation record to create: {rec['Name']} {rec['Type']} {rec['Value']}")
        timeout = s.cert_timeout or (60.0 if app.is_emulated else 1800.0)
        status = app.wait_certificate_issued(arn, timeout=timeout, poll=0.5 if app.is_emulated else 10.0)
        return arn, str(status)

    def alb_address(self, ctx: StepContext) -> str | None:
        live = ctx.adapters.kube().get("networking.k8s.io/v1", "Ingress", INGRESS_NAME, namespace(ctx)) or {}
        lb = ((live.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return next((str(x.get("hostname") or x.get("ip")) for x in lb if x.get("hostname") or x.get("ip")), None)

    def wait_alb(self, ctx: StepContext) -> str:
        timeout = ctx.typed(self.Settings).alb_timeout
        deadline = time.monotonic() + timeout
        while (address := self.alb_address(ctx)) is None:
            if time.monotonic() >= deadline:
                raise StepFailed(
                    f"Ingress {namespace(ctx)}/{INGRESS_NAME} has no ALB address after {timeout:g}s",
                    "the AWS Load Balancer Controller has not provisioned the ALB: is it running (cluster-addons), "
                    "and can it reach AWS (its IRSA role)? Its events on the Ingress say why",
                    f"kubectl -n {namespace(ctx)} describe ingress {INGRESS_NAME}; then `bpmigrate apply --step "
                    f"ingress --env {ctx.env_name}` (or raise [steps.ingress] alb_timeout)",
                )
            time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
        return address

    def alb_facts(self, ctx: StepContext, address: str) -> dict[str, str | None]:
        """The ALB's ARN and canonical hosted zone (a Route53 alias names it), from ELBv2; None when unknown."""
        try:
            found = ctx.adapters.aws().call("elbv2", "describe_load_balancers").get("LoadBalancers") or []
        except BpmError as exc:
            ctx.log(f"ALB not described ({exc.what}): dns-cutover needs new_alias_zone_id for an alias record")
            found = []
        lb: dict[str, Any] = next((x for x in found if str(x.get("DNSName", "")).lower() == address.lower()), {})
        return {"alb_arn": lb.get("LoadBalancerArn"), "alb_zone_id": lb.get("CanonicalHostedZoneId")}

    def apply(self, ctx: StepContext) -> Outputs:
        arn, status = self.certificate(ctx)
        out = self.apply_manifests(ctx, self.docs(ctx, arn))
        address = self.wait_alb(ctx)
        ctx.log(f"ALB address: {address}")
        return {
            "certificate_arn": arn,
            "certificate_status": status,
            "host": self.host(ctx),
            "ingress": out["applied"],
            "applied": out["applied"],
            "alb_hostname": address,
            "alb_dns_name": address,
            **self.alb_facts(ctx, address),  # alb_arn (observability's alarms), alb_zone_id (Route53 alias)
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        app = aws_app(ctx)
        host = self.host(ctx)
        arn = app.find_certificate(host)
        status = (app.describe_certificate(arn) if arn else None) or {}
        checks = [Check(f"acm:{host} issued", status.get("Status") == "ISSUED", status.get("Status"), "ISSUED")]
        checks.extend(verify_manifests(ctx, self.docs(ctx, arn or "")))
        address = self.alb_address(ctx)
        checks.append(Check("ALB address on the Ingress", bool(address), address, "an ALB DNS name"))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        app = aws_app(ctx)
        self.rollback_manifests(ctx)
        arn = app.find_certificate(self.host(ctx))
        if arn and app.certificate_tags(arn).get("managed-by") == "bpmigrate":
            ctx.intent("acm-delete-certificate", certificate_arn=arn)
            try:
                app.delete_certificate(arn)
            except AdapterError as exc:
                ctx.log(
                    f"certificate {arn} not deleted ({exc.what}); it is probably still attached to the ALB being "
                    f"removed: delete it later with `aws acm delete-certificate --certificate-arn {arn}`"
                )

    def summary(self, outputs: Mapping[str, Any]) -> str:
        return f"{outputs.get('host')} · ALB {outputs.get('alb_dns_name') or '(no address)'} · cert {outputs.get('certificate_status')}"
