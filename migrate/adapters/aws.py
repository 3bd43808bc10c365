"""AWS through boto3: one session per environment, clients honouring ``endpoint_url`` (moto server in the sandbox
and tests), and botocore errors translated into AdapterError/TransientError with secrets redacted.

Service-specific operations live in their own modules (``aws_<area>.py``) built on :class:`AwsAdapter`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from migrate.errors import AdapterError, TransientError
from migrate.redact import redact

if TYPE_CHECKING:
    from migrate.config import EnvConfig

T = TypeVar("T")

_TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "PriorRequestNotComplete",
}


class AwsAdapter:
    def __init__(self, region: str, endpoint_url: str | None = None, profile: str | None = None) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self.profile = profile
        self._session: Any = None
        self._clients: dict[str, Any] = {}

    @property
    def is_emulated(self) -> bool:
        return self.endpoint_url is not None

    def session(self) -> Any:
        if self._session is None:
            import boto3

            kwargs: dict[str, Any] = {"region_name": self.region}
            if self.profile:
                kwargs["profile_name"] = self.profile
            if self.endpoint_url:
                # moto accepts any credentials; never fall through to the operator's real ones
                kwargs.update(aws_access_key_id="testing", aws_secret_access_key="testing")
            self._session = boto3.session.Session(**kwargs)
        return self._session

    def client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config as BotoConfig

            cfg = BotoConfig(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60)
            self._clients[service] = self.session().client(service, endpoint_url=self.endpoint_url, config=cfg)
        return self._clients[service]

    def call(self, service: str, operation: str, **kwargs: Any) -> Any:
        """Call ``client(service).operation(**kwargs)`` translating errors."""
        fn: Callable[..., Any] = getattr(self.client(service), operation)
        return self.guard(f"{service}.{operation}", lambda: fn(**kwargs))

    def guard(self, what: str, fn: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        try:
            return fn()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            message = redact(exc.response.get("Error", {}).get("Message", str(exc)))
            cls = TransientError if code in _TRANSIENT_CODES else AdapterError
            raise cls(
                f"AWS {what} failed: {code}",
                message,
                "check the AWS console/CloudTrail for the call, fix the cause, and re-run the command",
                service="aws",
            ) from None
        except NoCredentialsError:
            raise AdapterError(
                f"AWS {what}: no credentials",
                "boto3 found no credentials for this environment",
                "set AWS_PROFILE (or the environment's aws.profile in migrate.toml) and run `aws sts get-caller-identity`",
                service="aws",
            ) from None
        except EndpointConnectionError as exc:
            raise TransientError(
                f"AWS {what}: cannot reach the endpoint",
                redact(str(exc)),
                "check network/VPN; in the sandbox run `bpmigrate sandbox status`",
                service="aws",
            ) from None
        except BotoCoreError as exc:
            raise AdapterError(f"AWS {what} failed", redact(str(exc)), "re-run with --traceback for details", service="aws") from None

    def error_code(self, exc: BaseException) -> str:
        return str(getattr(exc, "what", ""))

    def account_id(self) -> str:
        return str(self.call("sts", "get_caller_identity")["Account"])

    def caller_identity(self) -> dict[str, str]:
        """Who these credentials are (``sts get-caller-identity``): arn, account, user_id — for the audit trail."""
        from botocore.config import Config as BotoConfig

        # asked on every mutating run: fail fast (an unreachable endpoint must not hold the command for minutes)
        quick = BotoConfig(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=10)
        sts = self.session().client("sts", endpoint_url=self.endpoint_url, config=quick)
        out = self.guard("sts.get_caller_identity", lambda: sts.get_caller_identity())
        return {"arn": str(out["Arn"]), "account": str(out["Account"]), "user_id": str(out.get("UserId", ""))}

    def close(self) -> None:
        self._clients.clear()


def from_config(env: EnvConfig, **_: Any) -> AwsAdapter:
    return AwsAdapter(env.aws.region, env.aws.endpoint_url, env.aws.profile)
