"""The step contract: what a migration step is and what it may touch.

A step is a class in a ``phases/`` module::

    class RdsRestore(Step):
        \"\"\"Copy the source database into the target (first line = title; the rest = runbook text).\"\"\"
        id = "rds-restore"; phase = 2; depends_on = ("pg-backup", "rds")
        reversibility = Reversibility.COMPENSABLE
        def plan(self, ctx) -> PlanResult: ...      # read-only
        def apply(self, ctx) -> Outputs: ...        # idempotent; ctx.intent(...) before each side effect
        def verify(self, ctx) -> list[Check]: ...   # read-only, by another mechanism than apply
        def rollback(self, ctx) -> None: ...        # compensation

Steps never import boto3/psycopg/redis/kubernetes: they call adapters through ``ctx.adapters``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from migrate.errors import DependencyNotReady, StepError, TransientError
from migrate.states import CHECKSUM_PREFIX as CHECKSUM_PREFIX  # re-exported: the step contract
from migrate.states import Reversibility as Reversibility

if TYPE_CHECKING:
    from migrate.adapters import Adapters
    from migrate.config import EnvConfig, Targets

Outputs = dict[str, Any]


class StepSettings(BaseModel):
    """A step's settings: ``[steps.<id>]`` merged with ``[environments.<env>.steps.<id>]`` in migrate.toml.

    Each step declares its own subclass as a nested ``Settings`` class (field, type, default, description); the
    whole file is validated against every step's model when it loads, so a misspelled or mistyped key is an error
    (exit 2) naming the step, the key and the expected type, and ``bpmigrate show STEP`` lists them."""

    # defer_build: the validator is built on first use, not when the plan loads (`status` never validates: ~40 ms)
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


SettingsT = TypeVar("SettingsT", bound=StepSettings)


class StepContractError(StepError):
    """A step broke the contract (read an undeclared setting, another step's outputs outside its depends_on)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often apply/verify/rollback is retried on a TransientError (tenacity, exponential backoff)."""

    attempts: int = 1
    wait_initial: float = 1.0
    wait_max: float = 30.0
    retry_on: tuple[type[BaseException], ...] = (TransientError,)


@dataclass(frozen=True)
class Change:
    """One thing apply will do. ``action``: create | update | delete | replace | run | noop."""

    action: str
    target: str
    detail: str = ""


@dataclass(frozen=True)
class Finding:
    """Something the operator must know before applying. ``level``: info | warn | block."""

    level: str
    message: str
    fix: str = ""


@dataclass
class PlanResult:
    """What apply would do, computed without side effects."""

    changes: list[Change] = field(default_factory=list)
    in_place: list[str] = field(default_factory=list)  # already there: apply will leave it alone
    unknown: list[str] = field(default_factory=list)  # cannot be known until apply (e.g. upstream outputs)
    findings: list[Finding] = field(default_factory=list)
    skip_reason: str | None = None  # set when the step cannot run in this environment (with the reason)
    data: dict[str, Any] = field(default_factory=dict)  # extra material for the fingerprint and for display

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "block"]

    @property
    def is_noop(self) -> bool:
        return not self.changes or all(c.action == "noop" for c in self.changes)

    def fingerprint(self) -> str:
        """A hash of what apply would change: a saved plan whose fingerprint differs at apply time is stale."""
        material = {"changes": [asdict(c) for c in self.changes], "data": self.data, "skip": self.skip_reason}
        blob = json.dumps(material, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": [asdict(c) for c in self.changes],
            "in_place": list(self.in_place),
            "unknown": list(self.unknown),
            "findings": [asdict(f) for f in self.findings],
            "skip_reason": self.skip_reason,
            "data": self.data,
            "fingerprint": self.fingerprint(),
        }


@dataclass(frozen=True)
class Check:
    """One read-only verification: pass/fail with what was observed and what was expected."""

    name: str
    ok: bool
    observed: Any = None
    expected: Any = None
    detail: str = ""


class ProgressHandle(Protocol):
    def advance(self, amount: float = 1, **counters: float) -> None: ...

    def update(self, *, total: float | None = None, description: str | None = None) -> None: ...


class Checkpoints(Protocol):
    """Durable per-step progress markers (e.g. copied chunks), kept in the ledger across crashes."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, data: dict[str, Any] | None = None) -> None: ...

    def all(self) -> dict[str, dict[str, Any]]: ...

    def clear(self) -> None: ...


def _default_targets() -> Targets:
    from migrate.config import Targets

    return Targets()


class StepContext:
    """Everything a step may use. Built by the engine for one step and one action."""

    def __init__(
        self,
        *,
        step_id: str,
        env_name: str,
        env: EnvConfig,
        settings: Mapping[str, Any],
        adapters: Adapters,
        upstream: Mapping[str, Mapping[str, Any]],
        state_dir: Path,
        templates_dir: Path,
        project_root: Path,
        intent_writer: Callable[[str, dict[str, Any]], None],
        intents: list[dict[str, Any]],
        checkpoints: Checkpoints,
        progress_factory: Callable[..., Any],
        logger: Callable[[str], None],
        artifact_writer: Callable[[str, Path, str, int], None],
        metrics_writer: Callable[[dict[str, float]], None],
        deadline: float | None = None,
        plan: PlanResult | None = None,
        settings_model: StepSettings | None = None,
        allowed_upstream: frozenset[str] | None = None,
        reverifier: Callable[[str], list[Check]] | None = None,
        child_registrar: Callable[[int, str], None] | None = None,
        targets: Targets | None = None,
    ) -> None:
        self.step_id = step_id
        self.env_name = env_name
        self.env = env
        self.settings = dict(settings)
        #: the step's validated Settings (None when the step declares none)
        self.settings_model = settings_model
        #: the step ids whose outputs this step may read (its transitive depends_on); None = unrestricted (tests)
        self.allowed_upstream = allowed_upstream
        self._reverifier = reverifier
        self._child_registrar = child_registrar
        #: the plan's success criteria ([targets] in migrate.toml, with this environment's overrides)
        self.targets: Targets = targets if targets is not None else _default_targets()
        self.adapters = adapters
        self.upstream = upstream
        self.state_dir = state_dir
        self.templates_dir = templates_dir
        self.project_root = project_root
        self.intents = intents
        self.checkpoints = checkpoints
        self.deadline = deadline
        #: the plan computed (and shown/confirmed) just before this apply, in the same run; None outside apply
        self.plan = plan
        #: set by the engine during rollback when the operator passed --force-past-fence
        self.force_past_fence = False
        #: set by the engine during apply when the operator passed --refresh (re-take artifacts deliberately)
        self.refresh = False
        #: the ledger run this context belongs to (None outside the engine)
        self.run_id: int | None = None
        self._intent_writer = intent_writer
        self._progress_factory = progress_factory
        self._logger = logger
        self._artifact_writer = artifact_writer
        self._metrics_writer = metrics_writer

    @property
    def is_sandbox(self) -> bool:
        return self.env.kind == "sandbox"

    def setting(self, key: str, default: Any = None) -> Any:
        """One setting. With a declared ``Settings`` model the key must be one of its fields (its default applies)."""
        if self.settings_model is not None:
            fields = type(self.settings_model).model_fields
            if key not in fields:
                raise StepContractError(
                    f"step {self.step_id} read setting {key!r}, which its Settings model does not declare",
                    f"declared: {', '.join(sorted(fields)) or 'none'}",
                    f"declare {key} in the Settings class of step {self.step_id}",
                )
            return getattr(self.settings_model, key)
        return self.settings.get(key, default)

    def typed(self, model: type[SettingsT]) -> SettingsT:
        """This step's settings as its own validated model: ``s = ctx.typed(self.Settings)``."""
        if isinstance(self.settings_model, model):
            return self.settings_model
        return model.model_validate(self.settings)

    def reverify(self, step_id: str) -> list[Check]:
        """Re-run another step's read-only proof now, with that step's own settings (for gates)."""
        if self._reverifier is None:
            raise StepContractError(
                f"step {self.step_id} asked to re-verify {step_id}, but this context cannot run other steps",
                "only contexts built by the engine carry a re-verifier",
                "run the step through bpmigrate",
            )
        return self._reverifier(step_id)

    def output(self, step_id: str, key: str, default: Any = ...) -> Any:
        """An upstream step's recorded output; raises DependencyNotReady when absent and no default is given.

        Only the outputs of the steps this step declares in ``depends_on`` (directly or not) can be read."""
        if self.allowed_upstream is not None and step_id != self.step_id and step_id not in self.allowed_upstream:
            raise StepContractError(
                f"step {self.step_id} read outputs of {step_id}, which is not among its dependencies",
                "a step reads only the outputs of the steps it declares in depends_on (directly or not)",
                f"add {step_id!r} to depends_on of step {self.step_id}",
            )
        value = self.upstream.get(step_id, {}).get(key, default)
        if value is ...:
            raise DependencyNotReady(
                f"step {self.step_id} needs output {key!r} of step {step_id}, which is not recorded",
                f"{step_id} has not been applied in this environment ({self.env_name})",
                f"bpmigrate apply --step {step_id} --env {self.env_name}",
            )
        return value

    def intent(self, action: str, **details: Any) -> None:
        """Write ahead, to the ledger, what the step is about to do (read back when a killed run is reconciled)."""
        self._intent_writer(action, details)

    def register_child(self, pid: int, purpose: str) -> None:
        """Record (in the ledger, with its start time) a child process started with ``pdeathsig=None`` that must
        outlive this run: the next run adopts it instead of stopping it as an orphan (migrate/adapters/orphans.py)."""
        if self._child_registrar is not None:
            self._child_registrar(pid, purpose)

    @contextmanager
    def progress(self, description: str, total: float | None = None, unit: str = "rows") -> Iterator[ProgressHandle]:
        with self._progress_factory(description, total, unit) as handle:
            yield handle

    def log(self, message: str) -> None:
        self._logger(message)

    def artifact(self, kind: str, path: Path, sha256: str, size: int) -> None:
        """Record a produced file (backup, plan file, report) with its checksum."""
        self._artifact_writer(kind, path, sha256, size)

    def metrics(self, **values: float) -> None:
        """Record what was moved (bytes, rows, keys): used for estimates from rehearsal history."""
        self._metrics_writer(dict(values))

    def artifacts_dir(self) -> Path:
        path = self.state_dir / self.env_name / "artifacts" / self.step_id
        path.mkdir(parents=True, exist_ok=True)
        return path


class Step:
    """Base class of every migration step. Subclasses set the class attributes and override the four methods."""

    id: ClassVar[str] = ""
    phase: ClassVar[int] = 0
    title: ClassVar[str] = ""
    depends_on: ClassVar[tuple[str, ...]] = ()
    reversibility: ClassVar[Reversibility] = Reversibility.COMPENSABLE
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    timeout: ClassVar[float | None] = None  # seconds for one apply/rollback attempt
    gate: ClassVar[str | None] = None  # manual gate: operator must `bpmigrate approve STEP` before apply
    destructive: ClassVar[bool] = False  # apply destroys/overwrites data: always needs a shown plan and --yes
    causes_downtime: ClassVar[bool] = False  # its apply time counts toward the cutover's expected downtime window
    Settings: ClassVar[type[StepSettings]] = StepSettings  # a step declares its own nested ``class Settings``

    # -- the contract ------------------------------------------------------------------------------------------
    def plan(self, ctx: StepContext) -> PlanResult:
        raise NotImplementedError

    def apply(self, ctx: StepContext) -> Outputs:
        raise NotImplementedError

    def verify(self, ctx: StepContext) -> list[Check]:
        raise NotImplementedError

    def rollback(self, ctx: StepContext) -> None:
        raise NotImplementedError

    # -- optional hooks ----------------------------------------------------------------------------------------
    def skip_reason(self, ctx: StepContext) -> str | None:
        """Return why this step cannot run in this environment (e.g. no Kubernetes cluster), or None."""
        return None

    def plan_still_current(self, ctx: StepContext, shown: PlanResult) -> bool:
        """``shown`` was planned moments ago by this same command: may apply use it as is, without planning again?

        Only when a cheap check proves nothing it was based on changed since (a Terraform step: the state's lineage
        and serial are those its saved plan was made against). Default False: apply re-plans and refuses a plan whose
        fingerprint differs from the one shown."""
        return False

    def reconcile(self, ctx: StepContext) -> bool:
        """A run died while applying: is the effect in place? Default: every verify check passes."""
        try:
            return all(check.ok for check in self.verify(ctx))
        except Exception:  # noqa: BLE001 - a verify that cannot even run means "not in place"
            return False

    def reconcile_rollback(self, ctx: StepContext) -> bool:
        """A run died while rolling back: did the rollback complete? Default: re-run the (idempotent) rollback."""
        self.rollback(ctx)
        return True

    def summary(self, outputs: Mapping[str, Any]) -> str:
        """One short line for the status dashboard from the step's recorded outputs (e.g. "400,115 rows · 86.7 MB/s").

        Default: the scalar outputs as compact ``key=value`` pairs, never a dict or list dump, at most 60 characters
        (whole pairs only). Override it to say what matters about the step."""
        return summary_of(outputs)

    # -- introspection ---------------------------------------------------------------------------------------
    @classmethod
    def describe(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def display_title(cls) -> str:
        if cls.title:
            return cls.title
        doc = cls.describe()
        return doc.splitlines()[0] if doc else cls.id

    @classmethod
    def declares_settings(cls) -> bool:
        return cls.Settings is not StepSettings

    @classmethod
    def definition_checksum(cls) -> str:
        """Hash of the step's module file (one module per step): `status` warns when it changed after apply.

        Prefixed ``f1:`` so a checksum recorded by an older bpmigrate (a hash of the class source) is recognised as
        another format and never compared (see ledger schema migration 3)."""
        return CHECKSUM_PREFIX + _file_hash(inspect.getfile(cls) if cls.__module__ in sys.modules else "")


SUMMARY_MAX = 60


def summary_of(outputs: Mapping[str, Any], limit: int = SUMMARY_MAX) -> str:
    """Compact ``k=v · k=v`` of the scalar outputs (bool, number, short string), whole pairs only, ≤ ``limit`` chars."""
    parts: list[str] = []
    size = 0
    for key, value in outputs.items():
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, int | float):
            text = f"{value:,}" if isinstance(value, int) else f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        elif isinstance(value, str) and value and len(value) <= 32 and "/" not in value and "\n" not in value:
            text = value
        else:
            continue  # dicts, lists, paths, long strings: in `bpmigrate show STEP`
        part = f"{key}={text}"
        if size + len(part) + (3 if parts else 0) > limit:
            continue  # a shorter pair further on may still fit
        size += len(part) + (3 if parts else 0)
        parts.append(part)
    return " · ".join(parts)


_FILE_HASHES: dict[tuple[str, float], str] = {}


def _file_hash(path: str) -> str:
    try:
        stat = Path(path).stat()
    except OSError:
        return "unknown"
    key = (path, stat.st_mtime)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return _FILE_HASHES[key]
