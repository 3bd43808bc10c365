"""TerraformModuleStep: the generic base of every step that provisions one Terraform module.

Subclass it and set the step's attributes and ``output_map``; ``module`` defaults to ``module.<id>`` (hyphens as
underscores). Write ``verify`` with boto3 (a different mechanism than Terraform)::

    class Rds(TerraformModuleStep):
        \"\"\"RDS PostgreSQL 16 (pgvector-capable) through Terraform module.rds.\"\"\"
        id = "rds"; phase = 2; depends_on = ("vpc",)
        output_map = {"endpoint": "rds_endpoint", "port": "rds_port", "instance_id": "rds_instance_id"}

        def verify(self, ctx):
            if self.stand_in(ctx):                       # sandbox stand-in root: nothing in AWS to read back
                return self.verify_terraform_state(ctx)
            ...boto3 through ctx.adapters.aws()...

What the base does:

* ``plan``: ``terraform plan -out`` with ``-target=<module>`` (runner in ``migrate/adapters/terraform.py``); every
  resource change becomes a ``Change``; ``PlanResult.data`` carries ``plan_file``, ``plan_sha256``, ``summary``,
  ``resource_changes``, ``plan_digest`` and ``engine`` so the ledger stores the plan file and its hash. The
  fingerprint (:class:`TerraformPlanResult`) covers the plan's content (``plan_digest``), not the file's name/hash,
  which change on every re-plan.
* ``apply``: applies exactly the saved plan shown just before (``ctx.plan.data``), or a fresh plan when there is
  none; writes an intent first; returns the mapped Terraform outputs (``output_map``: step key → output name) plus
  ``terraform_workspace``/``terraform_engine``. Idempotent: re-running plans "no changes" and only reads outputs.
* ``rollback``: targeted destroy of the module (refused for ``Reversibility.ONE_WAY`` steps).
* the ``s3`` backend settings come from the ``tf-state-backend`` step's outputs (bucket, key, region, lock table).
* Terraform's output is streamed to ``ctx.log`` (redacted); failures raise AdapterError/StalePlan/LockHeld.

Hooks: ``targets(ctx)`` (default ``[module]``), ``extra_outputs(ctx, tf_outputs)``, ``stand_in(ctx)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from migrate.errors import FenceRefused, StalePlan
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

if TYPE_CHECKING:
    from migrate.adapters.terraform import TerraformRunner, TfPlan
    from migrate.adapters.terraform_lock import StateLock

#: the step whose outputs configure the s3 backend (bucket, state_key, region, lock_table)
BACKEND_STEP = "tf-state-backend"


def configure_runner(ctx: StepContext) -> TerraformRunner:
    """The environment's Terraform runner, logging to ``ctx.log`` and with the s3 backend from tf-state-backend."""
    from migrate.adapters.terraform import root_backend

    runner = ctx.adapters.terraform()
    runner.log = ctx.log

    def on_stale_lock(lock: StateLock, why: str) -> None:
        ctx.intent("terraform-force-unlock", lock_id=lock.lock_id, holder=lock.holder, operation=lock.operation, why=why)

    runner.on_stale_lock = on_stale_lock
    if root_backend(runner.root) == "s3" and not runner.backend_config:
        runner.set_s3_backend(
            bucket=str(ctx.output(BACKEND_STEP, "bucket")),
            key=str(ctx.output(BACKEND_STEP, "state_key")),
            region=str(ctx.output(BACKEND_STEP, "region")),
            dynamodb_table=str(ctx.output(BACKEND_STEP, "lock_table")),
            endpoint_url=ctx.env.aws.endpoint_url,
        )
    return runner


class TerraformStepSettings(StepSettings):
    """What every Terraform step accepts: a team's own root (``[environments.<env>] terraform.root``) names its
    modules and outputs its own way — say which, per step."""

    targets: list[str] = Field(
        default_factory=list,
        description="module addresses this step plans and applies (default: the bundled root's, e.g. module.vpc)",
    )
    outputs: dict[str, str] = Field(
        default_factory=dict, description="step output -> the root's output name, where your root names them otherwise"
    )


class TerraformModuleStep(Step):
    """Provision one Terraform module through the saved-plan workflow (subclass me)."""

    Settings: ClassVar[type[StepSettings]] = TerraformStepSettings

    module: ClassVar[str] = ""  # e.g. "module.rds"; default: module.<id>
    output_map: ClassVar[dict[str, str]] = {}  # step output key -> terraform output name
    reversibility: ClassVar[Reversibility] = Reversibility.COMPENSABLE
    timeout: ClassVar[float | None] = 3600.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.id and not cls.module:  # the bundled root names each step's module after the step
            cls.module = "module." + cls.id.replace("-", "_")

    # -- hooks -------------------------------------------------------------------------------------------------
    def targets(self, ctx: StepContext) -> list[str]:
        configured = ctx.typed(TerraformStepSettings).targets if isinstance(ctx.settings_model, TerraformStepSettings) else []
        if configured:
            return list(configured)
        return [self.module] if self.module else []

    def _under_targets(self, ctx: StepContext, addresses: list[str]) -> list[str]:
        prefixes = tuple(f"{t}." for t in self.targets(ctx))
        return [a for a in addresses if not prefixes or a.startswith(prefixes)]

    def _where(self, ctx: StepContext) -> str:
        return ", ".join(self.targets(ctx)) or "the root"

    def outputs_of(self, ctx: StepContext) -> dict[str, str]:
        """Step output key -> the root's output name: ``output_map`` with the ``outputs`` setting over it."""
        over = ctx.settings_model.outputs if isinstance(ctx.settings_model, TerraformStepSettings) else {}
        return {**self.output_map, **over}

    def extra_outputs(self, ctx: StepContext, tf_outputs: dict[str, Any]) -> dict[str, Any]:
        """Subclasses add outputs derived from Terraform's (e.g. the sandbox's local endpoint)."""
        return {}

    def stand_in(self, ctx: StepContext) -> bool:
        """True when the root is the sandbox's terraform_data stand-in (nothing in AWS to verify against)."""
        runner = ctx.adapters.terraform()
        if runner.is_stand_in:
            return True
        try:
            return runner.providers().source == "builtin"
        except Exception:
            return False

    def runner(self, ctx: StepContext) -> TerraformRunner:
        return configure_runner(ctx)

    # -- contract ----------------------------------------------------------------------------------------------
    def plan(self, ctx: StepContext) -> PlanResult:
        from migrate.adapters.terraform import root_backend

        raw = ctx.adapters.terraform()
        if (
            root_backend(raw.root) == "s3"
            and not raw.backend_config
            and "bucket" not in ctx.upstream.get(BACKEND_STEP, {})
        ):
            return PlanResult(
                changes=[Change("create", self.module or "terraform root", "terraform plan once the backend exists")],
                unknown=[f"the Terraform plan: the S3 backend is created by {BACKEND_STEP}, which is not applied yet"],
            )
        runner = self.runner(ctx)
        tfplan = runner.plan(self.targets(ctx))
        result = plan_result_from(tfplan, runner.engine_description())
        result.data["config_digest"] = runner.config_digest()
        if runner.dead_lock is not None:
            lock, why = runner.dead_lock
            result.findings.append(
                Finding(
                    "warn",
                    f"the Terraform state {lock.describe()}: {why}",
                    "planned without the lock; apply takes the lock over first (terraform force-unlock, recorded "
                    "in the ledger as an intent)",
                )
            )
        if not tfplan.has_changes:
            result.in_place.append(f"{self.module or 'root'}: Terraform state matches the configuration")
        if self.stand_in(ctx):
            result.findings.append(
                Finding(
                    "info",
                    "stand-in: the sandbox root models this module with terraform_data resources, not AWS resources",
                    "put the hashicorp/aws provider in a filesystem mirror (terraform.plugin_mirror) to rehearse "
                    "the real terraform/ modules against moto",
                )
            )
        return result

    def plan_still_current(self, ctx: StepContext, shown: PlanResult) -> bool:
        """A plan shown by this command (or recorded by an earlier one, see ``plan_reuse_seconds``) may be applied
        without re-planning when its saved file is intact, the root, its variables and the backend are those it was
        made from (``config_digest``), and the workspace's state still has the lineage and serial it was made
        against (no other apply in between)."""
        from migrate.adapters.terraform import TfPlan

        if not (shown.data.get("plan_file") and shown.data.get("plan_sha256")):
            return False
        try:
            runner = self.runner(ctx)
            if shown.data.get("config_digest") != runner.config_digest():
                return False
            return runner.plan_is_current(TfPlan.from_data(shown.data))
        except Exception:  # any doubt: plan again
            return False

    def summary(self, outputs: Mapping[str, Any]) -> str:
        """``module.vpc · 3 outputs · stand-in (terraform_data)`` — where the state lives, in one line."""
        mapped = [k for k in self.output_map if outputs.get(k) not in (None, "", [], {})]
        providers = str(outputs.get("terraform_providers") or "")
        where = "stand-in (terraform_data)" if providers == "builtin" else f"workspace {outputs.get('terraform_workspace', '?')}"
        return f"{self.module or 'root'} · {len(mapped)}/{len(self.output_map)} outputs · {where}"

    def saved_plan(self, ctx: StepContext) -> TfPlan | None:
        from migrate.adapters.terraform import TfPlan

        data = ctx.plan.data if ctx.plan is not None else {}
        if data.get("plan_file") and data.get("plan_sha256"):
            return TfPlan.from_data(data)
        return None

    def apply(self, ctx: StepContext) -> Outputs:
        runner = self.runner(ctx)
        tfplan = self.saved_plan(ctx)
        if tfplan is None:
            tfplan = runner.plan(self.targets(ctx))
        ctx.intent(
            "terraform-apply",
            module=self.module,
            plan_file=str(tfplan.path),
            plan_sha256=tfplan.sha256,
            summary=tfplan.summary(),
            workspace=runner.workspace,
        )
        if tfplan.path.is_file():
            ctx.artifact("terraform-plan", tfplan.path, tfplan.sha256, tfplan.path.stat().st_size)
        try:
            if tfplan.has_changes:
                ctx.log(f"terraform apply {tfplan.path.name}: {tfplan.summary()}")
                runner.apply(tfplan)
            else:
                runner.verify_plan_file(tfplan)
                ctx.log(f"{self.module}: no changes ({tfplan.summary()})")
        except StalePlan as exc:
            raise StalePlan(
                exc.what, exc.why, f"bpmigrate plan --step {self.id} --env {ctx.env_name}, then apply again"
            ) from None
        tf_outputs = runner.outputs()
        return self.map_outputs(ctx, runner, tf_outputs)

    def map_outputs(self, ctx: StepContext, runner: TerraformRunner, tf_outputs: dict[str, Any]) -> Outputs:
        outputs: Outputs = {key: tf_outputs.get(name) for key, name in self.outputs_of(ctx).items()}
        outputs["terraform_workspace"] = runner.workspace
        outputs["terraform_root"] = str(runner.root)
        outputs["terraform_providers"] = runner.providers().source
        if runner.backend_config.get("bucket"):
            outputs["terraform_state"] = (
                f"s3://{runner.backend_config['bucket']}/env:/{runner.workspace}/{runner.backend_config['key']}"
            )
        else:
            outputs["terraform_state"] = str(runner.state_dir / "workspaces" / runner.workspace / "terraform.tfstate")
        outputs.update(self.extra_outputs(ctx, tf_outputs))
        return outputs

    def rollback(self, ctx: StepContext) -> None:
        if self.reversibility == Reversibility.ONE_WAY:
            raise FenceRefused(
                f"{self.id} is one-way: its Terraform resources are not destroyed by rollback",
                f"destroying {self.module} would lose data that no compensation restores",
                f"if you really mean it: terraform destroy -target={self.module} in the {ctx.env_name} workspace",
            )
        runner = self.runner(ctx)
        targets = self.targets(ctx)
        ctx.intent("terraform-destroy", targets=targets, workspace=runner.workspace)
        runner.destroy(targets)

    def reconcile(self, ctx: StepContext) -> bool:
        """A run died while applying: the effect is in place only if Terraform plans no change for the module
        (a half-applied module still has resources to create) and verify passes."""
        try:
            if self.runner(ctx).plan(self.targets(ctx)).has_changes:
                return False
            return all(check.ok for check in self.verify(ctx))
        except Exception:
            return False

    def verify(self, ctx: StepContext) -> list[Check]:
        """Two proofs, neither through Terraform: on the stand-in root the Terraform state and outputs; on a real
        root the S3 state object plus ``verify_resources`` (AWS read back with boto3). Then ``verify_service`` (the
        server behind the resource answers) on both."""
        if self.stand_in(ctx):
            checks = self.verify_terraform_state(ctx)
        else:
            checks = self.verify_state_object(ctx) + self.verify_resources(ctx)
        return checks + self.verify_service(ctx)

    def verify_resources(self, ctx: StepContext) -> list[Check]:
        """Subclasses read their resources back from AWS (real roots only)."""
        return []

    def verify_service(self, ctx: StepContext) -> list[Check]:
        """Subclasses check the service behind the resource (a database that answers), on every root."""
        return []

    @staticmethod
    def status_check(name: str, observed: Any, expected: str) -> Check:
        """One AWS read-back: ``observed`` (a status, an engine) equals ``expected``."""
        return Check(name, observed == expected, observed=observed, expected=expected)

    # -- helpers -----------------------------------------------------------------------------------------------
    def verify_state_object(self, ctx: StepContext) -> list[Check]:
        """The module's resources are recorded in the Terraform state object in S3 (read with S3 GetObject, not
        through Terraform). Nothing to check for a local backend."""
        location = str(ctx.output(self.id, "terraform_state", "") or "")
        if not location.startswith("s3://"):
            return []
        bucket, _, key = location[len("s3://") :].partition("/")
        state = ctx.adapters.get("aws_foundation").terraform_state(bucket, key)
        mine = self._under_targets(ctx, state.addresses)
        detail = f"{location} (serial {state.serial}, {state.size} bytes), read with S3 GetObject"
        return [
            Check(
                f"Terraform state in S3 records {self._where(ctx)}",
                state.exists and bool(mine),
                observed=len(mine) if state.exists else "no state object",
                expected="> 0 resources",
                detail=detail,
            )
        ]

    def verify_terraform_state(self, ctx: StepContext) -> list[Check]:
        """Read the workspace's state back (``terraform state list`` + ``output -json``): resources under the
        module exist and every mapped output is set. Used for the sandbox stand-in, where AWS has nothing."""
        runner = self.runner(ctx)
        resources = self._under_targets(ctx, runner.state_resources())
        stand_in = " (stand-in: verified against terraform state, not AWS)" if self.stand_in(ctx) else ""
        checks = [
            Check(
                f"{self._where(ctx)} resources in Terraform state{stand_in}",
                bool(resources),
                observed=len(resources),
                expected="> 0",
                detail=(", ".join(resources[:8]) + stand_in),
            )
        ]
        outputs = runner.outputs()
        for key, name in self.outputs_of(ctx).items():
            value = outputs.get(name)
            checks.append(
                Check(
                    f"output {name} ({key})",
                    value is not None,
                    observed=value,
                    expected="set",
                    detail=stand_in.strip(),
                )
            )
        return checks


#: data keys that differ on every re-plan of an unchanged world (file name has a timestamp, the file embeds one)
VOLATILE_KEYS = frozenset({"plan_file", "plan_sha256", "engine", "config_digest"})


class TerraformPlanResult(PlanResult):
    """A PlanResult whose fingerprint covers what the Terraform plan DOES (resource changes, before/after values:
    ``plan_digest``) but not the saved file's name and hash, which change on every re-plan. So the engine's
    "plan shown == plan applied" comparison holds for an unchanged world and fails when the world changed."""

    def fingerprint(self) -> str:
        stable = {k: v for k, v in self.data.items() if k not in VOLATILE_KEYS}
        material = {"changes": [asdict(c) for c in self.changes], "data": stable, "skip": self.skip_reason}
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_result_from(tfplan: TfPlan, engine: str) -> PlanResult:
    """A PlanResult (one Change per resource change; the saved plan in ``data``) from a runner TfPlan."""
    changes = [
        Change(rc.kind, rc.address, "+".join(rc.actions))
        for rc in tfplan.changes
        if rc.kind in ("create", "update", "delete", "replace")
    ]
    changes += [Change("update", f"output.{name}", "output value changes") for name in tfplan.output_changes]
    data = tfplan.to_data()
    data["engine"] = engine
    findings = [Finding("info", f"terraform plan: {tfplan.summary()}", ""), Finding("info", engine, "")]
    return TerraformPlanResult(changes=changes, findings=findings, data=data)
