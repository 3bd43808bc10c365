"""ML on AWS: model archives in S3 (with checksums) and, optionally, SageMaker real-time endpoints.

Built on :class:`migrate.adapters.aws.AwsAdapter` (error translation, moto ``endpoint_url``). Uploads are
idempotent: an object whose recorded SHA-256 (object metadata ``sha256``) equals the local file's is not uploaded
again. S3 also computes its own SHA-256 checksum (``ChecksumAlgorithm=SHA256``) so a corrupted upload is refused by
S3 itself. SageMaker resources are created only when absent (describe first) and deleted only when present.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError, StepFailed

if TYPE_CHECKING:
    from migrate.adapters.aws import AwsAdapter
    from migrate.config import EnvConfig


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def b64_of_hex(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


class AwsMl:
    def __init__(self, aws: AwsAdapter) -> None:
        self.aws = aws

    def _is_missing(self, exc: AdapterError) -> bool:
        text = f"{exc.what} {exc.why}"
        return any(
            code in text
            for code in (
                "404",
                "NoSuchKey",
                "NoSuchBucket",
                "Not Found",
                "NotFound",
                "ValidationException",
                "Could not find",
            )
        )

    # -- S3 ------------------------------------------------------------------------------------------------------
    def bucket_exists(self, bucket: str) -> bool:
        try:
            self.aws.call("s3", "head_bucket", Bucket=bucket)
            return True
        except AdapterError as exc:
            if self._is_missing(exc):
                return False
            raise

    def ensure_bucket(self, bucket: str) -> bool:
        """Create the bucket (private, encrypted, versioned) if absent; True when it was created."""
        if self.bucket_exists(bucket):
            return False
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.aws.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.aws.region}
        self.aws.call("s3", "create_bucket", **kwargs)
        self.aws.call(
            "s3",
            "put_public_access_block",
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        self.aws.call(
            "s3",
            "put_bucket_encryption",
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
        self.aws.call("s3", "put_bucket_versioning", Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        return True

    def object_info(self, bucket: str, key: str) -> dict[str, Any] | None:
        """Size, recorded sha256 (metadata), S3's own checksum, version id and ETag; None when absent."""
        try:
            head = self.aws.call("s3", "head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except AdapterError as exc:
            if self._is_missing(exc):
                return None
            raise
        return {
            "size": int(head.get("ContentLength", 0)),
            "sha256": (head.get("Metadata") or {}).get("sha256"),
            "checksum_sha256": head.get("ChecksumSHA256"),
            "etag": str(head.get("ETag", "")).strip('"'),
            "version_id": head.get("VersionId"),
        }

    def upload_archive(self, path: Path, bucket: str, key: str, *, sha256: str | None = None) -> dict[str, Any]:
        """Upload ``path`` to s3://bucket/key unless an identical object (same sha256) is already there."""
        digest = sha256 or file_sha256(path)
        size = path.stat().st_size
        current = self.object_info(bucket, key)
        if current is not None and current.get("sha256") == digest and current.get("size") == size:
            return {**current, "uploaded": False, "uri": f"s3://{bucket}/{key}"}
        extra = {"Metadata": {"sha256": digest}, "ServerSideEncryption": "AES256"}
        if size <= 64 * 1024 * 1024:
            with path.open("rb") as fh:
                self.aws.call(
                    "s3",
                    "put_object",
                    Bucket=bucket,
                    Key=key,
                    Body=fh,
                    ChecksumSHA256=b64_of_hex(digest),
                    **extra,
                )
        else:  # multipart through s3transfer; S3 verifies each part's SHA-256
            from boto3.s3.transfer import TransferConfig

            client = self.aws.client("s3")
            self.aws.guard(
                "s3.upload_file",
                lambda: client.upload_file(
                    str(path),
                    bucket,
                    key,
                    ExtraArgs={**extra, "ChecksumAlgorithm": "SHA256"},
                    Config=TransferConfig(multipart_threshold=64 * 1024 * 1024),
                ),
            )
        info = self.object_info(bucket, key)
        if info is None or info.get("sha256") != digest or info.get("size") != size:
            raise StepFailed(
                f"upload of {path.name} to s3://{bucket}/{key} did not verify",
                f"after upload S3 reports {info!r}, expected sha256 {digest} and {size} bytes",
                "re-run the step (the upload is retried); if it persists check the bucket's policies",
            )
        return {**info, "uploaded": True, "uri": f"s3://{bucket}/{key}"}

    def download_sha256(self, bucket: str, key: str) -> str:
        """SHA-256 of the object's bytes as stored (streamed download): an independent check of an upload."""
        body = self.aws.call("s3", "get_object", Bucket=bucket, Key=key)["Body"]
        digest = hashlib.sha256()
        for chunk in iter(lambda: body.read(1 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()

    def presign_get(self, bucket: str, key: str, expires_s: int = 3600) -> str:
        client = self.aws.client("s3")
        url: str = self.aws.guard(
            "s3.generate_presigned_url",
            lambda: client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_s)
            ),
        )
        return url

    def delete_object(self, bucket: str, key: str) -> bool:
        if self.object_info(bucket, key) is None:
            return False
        self.aws.call("s3", "delete_object", Bucket=bucket, Key=key)
        return True

    # -- SageMaker -------------------------------------------------------------------------------------------------
    def describe(self, what: str, name: str) -> dict[str, Any] | None:
        """describe_model / describe_endpoint_config / describe_endpoint; None when absent."""
        op = {"model": "describe_model", "endpoint_config": "describe_endpoint_config", "endpoint": "describe_endpoint"}
        arg = {"model": "ModelName", "endpoint_config": "EndpointConfigName", "endpoint": "EndpointName"}
        try:
            out: dict[str, Any] = self.aws.call("sagemaker", op[what], **{arg[what]: name})
            return out
        except AdapterError as exc:
            if self._is_missing(exc):
                return None
            raise

    def ensure_model(
        self, name: str, *, image: str, model_data_url: str, role_arn: str, env: Mapping[str, str] | None = None
    ) -> bool:
        if self.describe("model", name) is not None:
            return False
        container: dict[str, Any] = {"Image": image, "ModelDataUrl": model_data_url, "Environment": dict(env or {})}
        self.aws.call(
            "sagemaker", "create_model", ModelName=name, PrimaryContainer=container, ExecutionRoleArn=role_arn
        )
        return True

    def ensure_endpoint_config(self, name: str, *, model_name: str, instance_type: str, instance_count: int) -> bool:
        if self.describe("endpoint_config", name) is not None:
            return False
        self.aws.call(
            "sagemaker",
            "create_endpoint_config",
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "primary",
                    "ModelName": model_name,
                    "InitialInstanceCount": int(instance_count),
                    "InstanceType": instance_type,
                    "InitialVariantWeight": 1.0,
                }
            ],
        )
        return True

    def ensure_endpoint(self, name: str, *, config_name: str) -> bool:
        if self.describe("endpoint", name) is not None:
            return False
        self.aws.call("sagemaker", "create_endpoint", EndpointName=name, EndpointConfigName=config_name)
        return True

    def wait_endpoint(self, name: str, timeout: float, poll: float = 15.0) -> str:
        """Wait for InService; StepFailed on Failed/OutOfService or timeout (with SageMaker's FailureReason)."""
        deadline = time.monotonic() + timeout
        status = "absent"
        while True:
            desc = self.describe("endpoint", name)
            status = str((desc or {}).get("EndpointStatus", "absent"))
            if status == "InService":
                return status
            if status in ("Failed", "OutOfService") or desc is None:
                raise StepFailed(
                    f"SageMaker endpoint {name} is {status}",
                    str((desc or {}).get("FailureReason", "no FailureReason reported")),
                    f"aws sagemaker describe-endpoint --endpoint-name {name}; fix the cause, roll back the step and "
                    "apply again",
                )
            if time.monotonic() >= deadline:
                raise StepFailed(
                    f"SageMaker endpoint {name} not InService after {timeout:g}s (status {status})",
                    "endpoint creation can take 10+ minutes for GPU instances",
                    "re-run the step later (it resumes waiting) or raise [steps.models] endpoint_timeout",
                )
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def probe_endpoint(
        self, name: str, payload: bytes, *, requests: int, concurrency: int, content_type: str = "application/json"
    ) -> dict[str, Any]:
        """Closed-loop latency probe of a SageMaker endpoint through ``sagemaker-runtime:InvokeEndpoint`` (signed by
        boto3): ``requests`` calls over ``concurrency`` threads; failed calls count as errors, not latencies."""
        from concurrent.futures import ThreadPoolExecutor

        client = self.aws.client("sagemaker-runtime")

        def one(_: int) -> float | None:
            start = time.perf_counter()
            try:
                client.invoke_endpoint(EndpointName=name, Body=payload, ContentType=content_type)
            except Exception:  # noqa: BLE001 - botocore errors are counted, the probe goes on
                return None
            return (time.perf_counter() - start) * 1000

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            results = list(pool.map(one, range(max(1, requests))))
        samples = [r for r in results if r is not None]
        return probe_stats(samples, len(results) - len(samples))

    def delete_sagemaker(self, *, endpoint: str | None, config: str | None, model: str | None) -> list[str]:
        """Delete endpoint, then config, then model — each only if present. Returns what was deleted."""
        deleted: list[str] = []
        if endpoint and self.describe("endpoint", endpoint) is not None:
            self.aws.call("sagemaker", "delete_endpoint", EndpointName=endpoint)
            deleted.append(f"endpoint/{endpoint}")
        if config and self.describe("endpoint_config", config) is not None:
            self.aws.call("sagemaker", "delete_endpoint_config", EndpointConfigName=config)
            deleted.append(f"endpoint-config/{config}")
        if model and self.describe("model", model) is not None:
            self.aws.call("sagemaker", "delete_model", ModelName=model)
            deleted.append(f"model/{model}")
        return deleted


def percentile(sorted_ms: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted samples (the smallest sample with at least pct % of samples <= it)."""
    if not sorted_ms:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_ms)))
    return sorted_ms[min(rank, len(sorted_ms)) - 1]


def probe_stats(samples_ms: list[float], errors: int) -> dict[str, Any]:
    ordered = sorted(samples_ms)
    count = len(samples_ms) + errors
    return {
        "count": count,
        "errors": errors,
        "error_rate": (errors / count) if count else 0.0,
        "p50_ms": round(percentile(ordered, 50), 3),
        "p95_ms": round(percentile(ordered, 95), 3),
        "p99_ms": round(percentile(ordered, 99), 3),
        "max_ms": round(ordered[-1], 3) if ordered else 0.0,
    }


def from_config(env: EnvConfig, *, project_root: Path, state_dir: Path, **_: Any) -> AwsMl:
    from migrate.adapters.aws import from_config as aws_from_config

    return AwsMl(aws_from_config(env))
