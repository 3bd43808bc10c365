"""Step ``ingress``: ALB Ingress for api.<domain> with an ACM certificate requested and validated through the API."""

from __future__ import annotations

import hashlib
from typing import Any

from migrate.errors import AdapterError
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import (
    AWS_RETRY,
    INGRESS_FILE,
    MANAGED_TAG,
    PHASE,
    aws_app,
    base_values,
    kube_unreachable,
    namespace,
    plan_docs,
    ref,
    render,
)


class Ingress(Step):
    """ALB Ingress for api.<domain> with an ACM certificate requested and validated through the API.

    Requests (or reuses) a DNS-validated ACM certificate for the host, writes the validation CNAMEs into Route53
    when `hosted_zone_id` is set (otherwise logs them), waits for ISSUED up to `cert_timeout` seconds, then applies
    the ALB Ingress (ingressClassName alb, certificate-arn annotation). Verify reads the certificate status from ACM
    and the Ingress back from the cluster. Rollback deletes the Ingress and the certificate bpmigrate requested.
    """

    id = "ingress"
    retry = AWS_RETRY
    phase = PHASE
    depends_on = ("k8s-deploy",)
    reversibility = Reversibility.COMPENSABLE

    def skip_reason(self, ctx: StepContext) -> str | None:
        return kube_unreachable(ctx)

    def host(self, ctx: StepContext) -> str:
        return str(ctx.setting("host") or f"api.{ctx.env.domain}")

    def docs(self, ctx: StepContext, arn: str) -> list[dict[str, Any]]:
        values = base_values(ctx)
        values["certificate_arn"] = arn
        return render(ctx, (INGRESS_FILE,), values)

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        host = self.host(ctx)
        arn = aws_app(ctx).find_certificate(host)
        result = PlanResult(data={"host": host, "hosted_zone_id": ctx.setting("hosted_zone_id")})
        if arn is None:
            result.changes.append(Change("create", f"acm:{host}", "DNS-validated certificate"))
            result.changes.append(
                Change("create", f"Ingress/{namespace(ctx)}/betterprompts", "ALB, TLS with the new cert")
            )
            result.unknown.append("the certificate ARN (known after the request)")
        else:
            result.in_place.append(f"acm:{host} ({arn})")
            plan_docs(ctx.adapters.kube(), self.docs(ctx, arn), result)
        if not ctx.setting("hosted_zone_id") and not ctx.is_sandbox:
            result.findings.append(
                Finding(
                    "warn",
                    "no hosted_zone_id: the ACM validation records will be logged for you to create",
                    'set [steps.ingress] hosted_zone_id = "Z..." to let bpmigrate write them to Route53',
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        app = aws_app(ctx)
        host = self.host(ctx)
        token = hashlib.sha256(f"{ctx.env_name}:{host}".encode()).hexdigest()[:32]
        ctx.intent("acm-request-certificate", domain=host, idempotency_id=token)
        arn = app.request_certificate(host, token=token, tags=MANAGED_TAG)
        records = app.validation_records(arn)
        zone = ctx.setting("hosted_zone_id")
        if zone and records:
            ctx.intent("route53-upsert-validation-records", zone=zone, records=[r["Name"] for r in records])
            app.upsert_validation_records(str(zone), records)
        else:
            for rec in records:
                ctx.log(f"ACM validation record to create: {rec['Name']} {rec['Type']} {rec['Value']}")
        default_timeout = 60 if app.is_emulated else 1800
        status = app.wait_certificate_issued(
            arn, timeout=float(ctx.setting("cert_timeout", default_timeout)), poll=0.5 if app.is_emulated else 10.0
        )
        docs = self.docs(ctx, arn)
        ctx.intent("kube-apply", refs=[ref(d) for d in docs], certificate_arn=arn)
        applied = ctx.adapters.kube().apply(docs)
        live = ctx.adapters.kube().get("networking.k8s.io/v1", "Ingress", "betterprompts", namespace(ctx)) or {}
        lb = ((live.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return {
            "certificate_arn": arn,
            "certificate_status": status,
            "host": host,
            "ingress": applied,
            "alb_hostname": (lb[0].get("hostname") if lb else None),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        app = aws_app(ctx)
        host = self.host(ctx)
        arn = app.find_certificate(host)
        cert = app.describe_certificate(arn) if arn else None
        status = (cert or {}).get("Status")
        checks = [Check(f"acm:{host} issued", status == "ISSUED", status, "ISSUED")]
        live = ctx.adapters.kube().get("networking.k8s.io/v1", "Ingress", "betterprompts", namespace(ctx))
        if live is None:
            return [*checks, Check(f"Ingress/{namespace(ctx)}/betterprompts", False, "missing", "exists")]
        spec = live.get("spec") or {}
        annotations = (live.get("metadata") or {}).get("annotations") or {}
        hosts = [r.get("host") for r in spec.get("rules") or []]
        checks.append(
            Check("ingress class", spec.get("ingressClassName") == "alb", spec.get("ingressClassName"), "alb")
        )
        cert_ann = annotations.get("alb.ingress.kubernetes.io/certificate-arn")
        checks.append(Check("ingress certificate", bool(arn) and cert_ann == arn, cert_ann, arn))
        checks.append(Check("ingress host", host in hosts, hosts, host))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        app = aws_app(ctx)
        ctx.intent("kube-delete", ref=f"Ingress/{namespace(ctx)}/betterprompts")
        ctx.adapters.kube().delete("networking.k8s.io/v1", "Ingress", "betterprompts", namespace(ctx))
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
