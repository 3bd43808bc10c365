"""Off-site copies of the ledger in S3 (the environment's Terraform state bucket: versioned, encrypted).

Functions over :class:`migrate.adapters.aws.AwsAdapter`; errors are the adapter's (AdapterError/TransientError).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.adapters.aws_ml import file_sha256 as _sha256
from migrate.errors import UsageError

if TYPE_CHECKING:
    from migrate.adapters.aws import AwsAdapter
    from migrate.config import EnvConfig


@dataclass(frozen=True)
class Uploaded:
    bucket: str
    key: str
    version_id: str | None
    sha256: str
    size: int

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key)."""
    rest = url[len("s3://") :] if url.startswith("s3://") else ""
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise UsageError(f"not an S3 object URL: {url!r}", "expected s3://BUCKET/KEY", "bpmigrate ledger restore --from s3://BUCKET/KEY")
    return bucket, key


class LedgerStore:
    def __init__(self, aws: AwsAdapter) -> None:
        self.aws = aws
        self._s3: Any = None

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """One S3 call with few retries: the off-site copy runs after every mutating run and must not stall it."""
        if self._s3 is None:
            from botocore.config import Config as BotoConfig

            cfg = BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)
            self._s3 = self.aws.session().client("s3", endpoint_url=self.aws.endpoint_url, config=cfg)
        return self.aws.guard(f"s3.{operation}", lambda: getattr(self._s3, operation)(**kwargs))

    def put(self, bucket: str, key: str, path: Path, *, kms_key_id: str | None = None) -> Uploaded:
        """Upload ``path`` encrypted at rest (SSE-S3, or SSE-KMS with ``kms_key_id``), its sha256 as metadata."""
        sha = _sha256(path)
        extra: dict[str, Any] = {"ServerSideEncryption": "AES256"}
        if kms_key_id:
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
        with path.open("rb") as body:
            out = self._call("put_object", Bucket=bucket, Key=key, Body=body, Metadata={"sha256": sha}, **extra)
        return Uploaded(bucket, key, out.get("VersionId"), sha, path.stat().st_size)

    def get(self, bucket: str, key: str, dest: Path) -> str:
        """Download to ``dest``; returns its sha256 (checked against the uploaded one when recorded)."""
        out = self._call("get_object", Bucket=bucket, Key=key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as fh:
            for chunk in iter(lambda: out["Body"].read(1 << 20), b""):
                fh.write(chunk)
        sha = _sha256(dest)
        recorded = (out.get("Metadata") or {}).get("sha256")
        if recorded and recorded != sha:
            dest.unlink(missing_ok=True)
            raise UsageError(
                f"s3://{bucket}/{key} does not match its recorded checksum",
                f"sha256 {sha} != {recorded}: the download was damaged or the object replaced",
                f"retry: bpmigrate ledger restore --from s3://{bucket}/{key}",
            )
        return sha


def from_config(env: EnvConfig, **_: Any) -> LedgerStore:
    from migrate.adapters.aws import from_config as aws_from_config

    return LedgerStore(aws_from_config(env))
