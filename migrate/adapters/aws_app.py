"""AWS operations of the app phase: ECR repositories and images, Secrets Manager, ACM certificates.

Built on :class:`migrate.adapters.aws.AwsAdapter` (``call`` translates botocore errors into AdapterError /
TransientError, redacted). Secret values read or written here are registered with :func:`migrate.redact.register`
and never returned inside error messages.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError, StepFailed
from migrate.redact import register

if TYPE_CHECKING:
    from migrate.adapters.aws import AwsAdapter
    from migrate.config import EnvConfig


#: ECR lifecycle policy: expire untagged images after 7 days, keep the newest ``keep`` images of any tag.
def lifecycle_policy(keep: int = 30, untagged_days: int = 7) -> dict[str, Any]:
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"expire untagged images after {untagged_days} days",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": untagged_days,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "description": f"keep the newest {keep} images",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep},
                "action": {"type": "expire"},
            },
        ]
    }


_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_STANDIN_MARK = "bpmigrate sandbox stand-in (no image built)"


def _code(exc: AdapterError) -> str:
    """The AWS error code carried in an AdapterError's ``what`` ("AWS ecr.x failed: Code")."""
    return exc.what.rsplit(":", 1)[-1].strip()


class AwsAppAdapter:
    def __init__(self, aws: AwsAdapter) -> None:
        self.aws = aws

    @property
    def is_emulated(self) -> bool:
        return self.aws.is_emulated

    # -- ECR ---------------------------------------------------------------------------------------------------
    def describe_repository(self, name: str) -> dict[str, Any] | None:
        try:
            repos = self.aws.call("ecr", "describe_repositories", repositoryNames=[name])["repositories"]
        except AdapterError as exc:
            if _code(exc) == "RepositoryNotFoundException":
                return None
            raise
        return dict(repos[0]) if repos else None

    def create_repository(
        self, name: str, *, scan_on_push: bool = True, tag_mutability: str = "IMMUTABLE", tags: Mapping[str, str] = {}
    ) -> dict[str, Any]:
        """Create the repository, or return the existing one (idempotent); the scan setting is enforced either way."""
        existing = self.describe_repository(name)
        if existing is None:
            try:
                existing = self.aws.call(
                    "ecr",
                    "create_repository",
                    repositoryName=name,
                    imageTagMutability=tag_mutability,
                    imageScanningConfiguration={"scanOnPush": scan_on_push},
                    encryptionConfiguration={"encryptionType": "AES256"},
                    tags=[{"Key": k, "Value": v} for k, v in tags.items()],
                )["repository"]
            except AdapterError as exc:
                if _code(exc) != "RepositoryAlreadyExistsException":
                    raise
                existing = self.describe_repository(name)
        assert existing is not None
        if bool(existing.get("imageScanningConfiguration", {}).get("scanOnPush")) != scan_on_push:
            self.aws.call(
                "ecr",
                "put_image_scanning_configuration",
                repositoryName=name,
                imageScanningConfiguration={"scanOnPush": scan_on_push},
            )
            existing = self.describe_repository(name) or existing
        return dict(existing)

    def put_lifecycle_policy(self, name: str, policy: Mapping[str, Any]) -> None:
        self.aws.call("ecr", "put_lifecycle_policy", repositoryName=name, lifecyclePolicyText=json.dumps(policy))

    def get_lifecycle_policy(self, name: str) -> dict[str, Any] | None:
        try:
            text = self.aws.call("ecr", "get_lifecycle_policy", repositoryName=name)["lifecyclePolicyText"]
        except AdapterError as exc:
            if _code(exc) in ("LifecyclePolicyNotFoundException", "RepositoryNotFoundException"):
                return None
            raise
        parsed = json.loads(text)
        return parsed if isinstance(parsed, dict) else None

    def delete_repository(self, name: str, *, force: bool = False) -> bool:
        try:
            self.aws.call("ecr", "delete_repository", repositoryName=name, force=force)
        except AdapterError as exc:
            if _code(exc) == "RepositoryNotFoundException":
                return False
            raise
        return True

    def image_manifest(self, repository: str, tag: str) -> dict[str, Any] | None:
        """The manifest ECR holds for ``repository:tag`` ({digest, media_type, manifest}), or None if absent."""
        try:
            resp = self.aws.call(
                "ecr",
                "batch_get_image",
                repositoryName=repository,
                imageIds=[{"imageTag": tag}],
                acceptedMediaTypes=[_OCI_MANIFEST, _DOCKER_MANIFEST],
            )
        except AdapterError as exc:
            if _code(exc) == "RepositoryNotFoundException":
                return None
            raise
        images = resp.get("images") or []
        if not images:
            return None
        image = images[0]
        return {
            "digest": image.get("imageId", {}).get("imageDigest"),
            "media_type": image.get("imageManifestMediaType"),
            "manifest": image.get("imageManifest", ""),
        }

    def repository_tags(self, arn: str) -> dict[str, str]:
        tags = self.aws.call("ecr", "list_tags_for_resource", resourceArn=arn).get("tags", [])
        return {str(t["Key"]): str(t["Value"]) for t in tags}

    def describe_image(self, repository: str, tag: str) -> dict[str, Any] | None:
        """DescribeImages for one tag (digest, pushedAt, scan status), or None when the tag is absent."""
        try:
            details = self.aws.call(
                "ecr", "describe_images", repositoryName=repository, imageIds=[{"imageTag": tag}]
            ).get("imageDetails", [])
        except AdapterError as exc:
            if _code(exc) in ("ImageNotFoundException", "RepositoryNotFoundException"):
                return None
            raise
        return dict(details[0]) if details else None

    def image_tags(self, repository: str) -> list[str]:
        try:
            pages = self.aws.call("ecr", "list_images", repositoryName=repository, filter={"tagStatus": "TAGGED"})
        except AdapterError as exc:
            if _code(exc) == "RepositoryNotFoundException":
                return []
            raise
        return sorted({i["imageTag"] for i in pages.get("imageIds", []) if i.get("imageTag")})

    def put_standin_manifest(self, repository: str, tag: str) -> str:
        """Sandbox only: register a small OCI manifest for ``repository:tag`` standing for a pushed image.

        Used when no container builder is available in the local rehearsal; refused against real AWS.
        """
        if not self.is_emulated:
            raise AdapterError(
                "refusing to write a stand-in image manifest into a real ECR registry",
                "stand-in manifests only exist to rehearse against the moto server",
                "build and push the images with docker/buildah, or set [steps.images] tags in migrate.toml",
                service="aws",
            )
        existing = self.image_manifest(repository, tag)
        if existing is not None:
            return str(existing["digest"])
        config_blob = json.dumps({"bpmigrate": "stand-in", "repository": repository, "tag": tag}).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": _OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config_blob).hexdigest(),
                "size": len(config_blob),
            },
            "layers": [],
            "annotations": {"org.opencontainers.image.description": _STANDIN_MARK},
        }
        image = self.aws.call(
            "ecr",
            "put_image",
            repositoryName=repository,
            imageManifest=json.dumps(manifest),
            imageManifestMediaType=_OCI_MANIFEST,
            imageTag=tag,
        )["image"]
        return str(image.get("imageId", {}).get("imageDigest", ""))

    @staticmethod
    def is_standin(manifest: Mapping[str, Any]) -> bool:
        """True for a manifest written by :meth:`put_standin_manifest` (no real image behind it)."""
        return _STANDIN_MARK in str(manifest.get("manifest", ""))

    def delete_image(self, repository: str, tag: str) -> bool:
        try:
            resp = self.aws.call("ecr", "batch_delete_image", repositoryName=repository, imageIds=[{"imageTag": tag}])
        except AdapterError as exc:
            if _code(exc) == "RepositoryNotFoundException":
                return False
            raise
        return bool(resp.get("imageIds"))

    def registry_login(self) -> tuple[str, str, str]:
        """(registry host, username, password) for ``docker login``; the password is registered for redaction."""
        import base64

        data = self.aws.call("ecr", "get_authorization_token")["authorizationData"][0]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        register(password)
        register(data["authorizationToken"])
        host = str(data["proxyEndpoint"]).split("://", 1)[-1]
        return host, user, password

    # -- Secrets Manager ---------------------------------------------------------------------------------------
    def describe_secret(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.aws.call("secretsmanager", "describe_secret", SecretId=name))
        except AdapterError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise

    def get_secret(self, name: str) -> dict[str, str] | None:
        """The secret's JSON key/value pairs (every value registered for redaction), or None when absent."""
        try:
            raw = self.aws.call("secretsmanager", "get_secret_value", SecretId=name)["SecretString"]
        except AdapterError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise
        register(raw)
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {"value": raw}
        if not isinstance(parsed, dict):
            return {"value": raw}
        values = {str(k): str(v) for k, v in parsed.items()}
        for value in values.values():
            register(value)
        return values

    def put_secret(
        self, name: str, values: Mapping[str, str], *, description: str = "", tags: Mapping[str, str] = {}
    ) -> dict[str, Any]:
        """Create or update a JSON secret; no new version when the stored value is already equal (idempotent).

        Returns {"arn", "version_id", "changed"} — never the value.
        """
        for value in values.values():
            register(value)
        body = json.dumps(dict(values), sort_keys=True)
        meta = self.describe_secret(name)
        if meta is None:
            try:
                resp = self.aws.call(
                    "secretsmanager",
                    "create_secret",
                    Name=name,
                    Description=description,
                    SecretString=body,
                    Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
                )
                return {"arn": resp["ARN"], "version_id": resp.get("VersionId"), "changed": True}
            except AdapterError as exc:
                if _code(exc) != "ResourceExistsException":
                    raise
                meta = self.describe_secret(name) or {}
        if meta.get("DeletedDate"):
            self.aws.call("secretsmanager", "restore_secret", SecretId=name)
        current = self.get_secret(name)
        if current is not None and json.dumps(current, sort_keys=True) == body:
            return {"arn": meta.get("ARN"), "version_id": None, "changed": False}
        resp = self.aws.call("secretsmanager", "put_secret_value", SecretId=name, SecretString=body)
        return {"arn": resp["ARN"], "version_id": resp.get("VersionId"), "changed": True}

    def delete_secret(self, name: str, *, recovery_days: int = 7) -> bool:
        try:
            self.aws.call("secretsmanager", "delete_secret", SecretId=name, RecoveryWindowInDays=recovery_days)
        except AdapterError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return False
            raise
        return True

    # -- ACM ---------------------------------------------------------------------------------------------------
    def find_certificate(self, domain: str) -> str | None:
        """ARN of a pending or issued certificate for ``domain`` (newest first), or None."""
        resp = self.aws.call(
            "acm", "list_certificates", CertificateStatuses=["PENDING_VALIDATION", "ISSUED"], MaxItems=1000
        )
        for cert in resp.get("CertificateSummaryList", []):
            if cert.get("DomainName") == domain:
                return str(cert["CertificateArn"])
        return None

    def request_certificate(
        self,
        domain: str,
        *,
        sans: list[str] | None = None,
        token: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Request a DNS-validated certificate; an existing pending/issued one for the domain is reused."""
        found = self.find_certificate(domain)
        if found:
            return found
        kwargs: dict[str, Any] = {"DomainName": domain, "ValidationMethod": "DNS"}
        if sans:
            kwargs["SubjectAlternativeNames"] = sans
        if token:
            kwargs["IdempotencyToken"] = token[:32]
        if tags:
            kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        return str(self.aws.call("acm", "request_certificate", **kwargs)["CertificateArn"])

    def describe_certificate(self, arn: str) -> dict[str, Any] | None:
        try:
            return dict(self.aws.call("acm", "describe_certificate", CertificateArn=arn)["Certificate"])
        except AdapterError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise

    def validation_records(self, arn: str) -> list[dict[str, str]]:
        """The DNS records ACM wants for validation: [{"Name","Type","Value"}]."""
        cert = self.describe_certificate(arn) or {}
        records: dict[str, dict[str, str]] = {}
        for option in cert.get("DomainValidationOptions", []):
            rr = option.get("ResourceRecord")
            if rr:
                records[rr["Name"]] = {"Name": rr["Name"], "Type": rr["Type"], "Value": rr["Value"]}
        return list(records.values())

    def upsert_validation_records(self, zone_id: str, records: list[dict[str, str]]) -> str | None:
        """Write the validation CNAMEs into a Route53 hosted zone (UPSERT: idempotent). Returns the change id."""
        if not records:
            return None
        changes = [
            {
                "Action": "UPSERT",
                "ResourceRecordSet": {
                    "Name": r["Name"],
                    "Type": r["Type"],
                    "TTL": 300,
                    "ResourceRecords": [{"Value": r["Value"]}],
                },
            }
            for r in records
        ]
        resp = self.aws.call(
            "route53",
            "change_resource_record_sets",
            HostedZoneId=zone_id,
            ChangeBatch={"Comment": "bpmigrate ACM DNS validation", "Changes": changes},
        )
        return str(resp["ChangeInfo"]["Id"])

    def wait_certificate_issued(self, arn: str, *, timeout: float, poll: float = 5.0) -> str:
        """Wait for ISSUED; raise StepFailed naming the status and the validation records on failure/timeout."""
        deadline = time.monotonic() + timeout
        status = "UNKNOWN"
        while True:
            cert = self.describe_certificate(arn)
            status = str((cert or {}).get("Status", "MISSING"))
            if status == "ISSUED":
                return status
            if status in ("FAILED", "VALIDATION_TIMED_OUT", "REVOKED", "EXPIRED", "INACTIVE", "MISSING"):
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        records = ", ".join(f"{r['Name']} CNAME {r['Value']}" for r in self.validation_records(arn)) or "none"
        raise StepFailed(
            f"ACM certificate {arn} is {status}, not ISSUED (waited up to {timeout:.0f} s)",
            f"ACM validates by DNS: these records must resolve publicly: {records}",
            "create the records (or set [steps.ingress] hosted_zone_id so bpmigrate writes them), then re-run "
            "`bpmigrate apply --step ingress`",
        )

    def certificate_tags(self, arn: str) -> dict[str, str]:
        tags = self.aws.call("acm", "list_tags_for_certificate", CertificateArn=arn).get("Tags", [])
        return {str(t["Key"]): str(t.get("Value", "")) for t in tags}

    def delete_certificate(self, arn: str) -> bool:
        try:
            self.aws.call("acm", "delete_certificate", CertificateArn=arn)
        except AdapterError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return False
            raise
        return True


def from_config(env: EnvConfig, **_: Any) -> AwsAppAdapter:
    from migrate.adapters.aws import from_config as aws_from_config

    return AwsAppAdapter(aws_from_config(env))
