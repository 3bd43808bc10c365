"""Step ``db-rollback-point``: the database's way back, recorded before the switch and carried out as its rollback."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from migrate.errors import FenceRefused, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from .._sync import reverse_status
from ._common import PHASE, app_namespaces, iso, kube_unreachable


class DbRollbackPoint(Step):
    """The database's way back, best first — recorded by apply, carried out by rollback:

    1. **The reverse stream** (``data-switch`` starts it: target → source). While it runs, nothing is restored:
       ``bpmigrate rollback --step data-switch`` fences the writers, waits for reverse lag 0 and points every
       stack at the source — 0 acknowledged writes lost. This rollback checks that and says so.
    2. **RDS point-in-time restore** to the instant apply recorded (``restore_db_instance_to_point_in_time`` into a
       new instance ``<id>-pitr-<time>``): writes after that instant are not in it, so it runs only with
       ``--force-past-fence``.
    3. **The phase-2 ``pg-backup`` dump**, weeks old perhaps: only with ``--force-past-fence`` AND
       ``dump_consent = true``, and the dump's age is printed first. Stages (scale to 0, drop + restore into the
       target, scale back) are checkpointed.
    """

    id = "db-rollback-point"
    title = "DB rollback point (reverse stream, else point-in-time restore, else the dump)"
    procedures = (
        (
            "DB rollback",
            "bpmigrate --env <env> rollback --step data-switch --yes",
            "lossless while the reverse stream runs; without it: rollback --to pre-cutover-check --force-past-fence "
            "(point-in-time restore, or the dump with dump_consent = true)",
        ),
    )
    phase = PHASE
    depends_on = ("pg-backup", "pre-cutover-check")
    reversibility = Reversibility.COMPENSABLE

    class Settings(StepSettings):
        backup_path: str | None = Field(None, description="default: the pg-backup step's artifact")
        backup_sha256: str | None = Field(None, description="default: the pg-backup step's checksum")
        schemas: list[str] = Field(default_factory=list, description="dropped before the dump restore")
        namespaces: list[str] = Field(default_factory=list, description="app namespaces scaled to 0 (dump restore)")
        rds_instance_id: str | None = Field(None, description="default: the rds step's instance_id")
        pitr: bool = Field(True, description="offer RDS point-in-time restore when no reverse stream runs")
        dump_consent: bool = Field(False, description="allow restoring the phase-2 dump (its age is printed)")
        force_past_fence: bool = Field(False, description="(tests) as --force-past-fence")

    def _backup(self, ctx: StepContext, s: Any) -> tuple[str | None, str | None]:
        out = ctx.upstream.get("pg-backup", {})
        path = s.backup_path or out.get("path") or out.get("backup_path") or out.get("archive")
        sha = s.backup_sha256 or out.get("sha256") or out.get("backup_sha256")
        return (str(path) if path else None, str(sha) if sha else None)

    def plan(self, ctx: StepContext) -> PlanResult:
        s = ctx.typed(self.Settings)
        path, _sha = self._backup(ctx, s)
        stream = bool(ctx.upstream.get("pg-sync", {}).get("subscription"))
        way = "reverse stream (started by data-switch)" if stream else "point-in-time restore / dump"
        result = PlanResult(changes=[Change("run", "record the DB rollback point", way)])
        if not stream and not path:
            result.findings.append(
                Finding(
                    "warn",
                    "no continuous sync and no backup recorded by pg-backup: the only way back is RDS point-in-time",
                    "apply pg-sync (the lossless way back) or pg-backup",
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        s = ctx.typed(self.Settings)
        path, sha = self._backup(ctx, s)
        replicas: dict[str, int] = {}
        if not kube_unreachable(ctx):
            kube = ctx.adapters.kube()
            for ns in app_namespaces(ctx):
                for dep in kube.list("apps/v1", "Deployment", ns):
                    replicas[f"{ns}/{dep['metadata']['name']}"] = int(dep.get("spec", {}).get("replicas", 1) or 0)
        created = Path(path).stat().st_mtime if path and Path(path).is_file() else None
        point: dict[str, Any] = {
            "instant": time.time(),
            "rds_instance_id": s.rds_instance_id or ctx.upstream.get("rds", {}).get("instance_id"),
            "backup_path": path,
            "backup_sha256": sha,
            "backup_created": created,
            "replicas": replicas,
            "reverse_stream_expected": bool(ctx.upstream.get("pg-sync", {}).get("subscription")),
        }
        ctx.checkpoints.put("point", point)
        return {**point, "instant_at": iso(point["instant"])}

    def verify(self, ctx: StepContext) -> list[Check]:
        point = ctx.checkpoints.get("point") or ctx.upstream.get(self.id) or {}
        checks = [Check("rollback point recorded", bool(point), bool(point), True)]
        if point.get("backup_path"):
            exists = Path(point["backup_path"]).is_file()
            checks.append(Check("backup file present", exists, point["backup_path"], "a readable file"))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        s = ctx.typed(self.Settings)
        point = ctx.checkpoints.get("point")
        if point is None:
            return
        rev = reverse_status(ctx, dict(ctx.upstream.get("pg-sync") or {}))
        if rev["pg"]:
            ctx.log(
                f"db-rollback-point: the reverse stream {rev.get('name')} runs (lag {rev['lag_bytes']} bytes): the "
                f"lossless way back is `bpmigrate --env {ctx.env_name} rollback --step data-switch`; nothing restored"
            )
            return
        force = bool(ctx.force_past_fence or s.force_past_fence)
        instance = point.get("rds_instance_id")
        if s.pitr and instance:
            if not force:
                raise FenceRefused(
                    f"no reverse stream runs: the way back is a point-in-time restore of {instance} to "
                    f"{iso(point['instant'])}",
                    "writes made after that instant are not in the restored instance",
                    f"bpmigrate --env {ctx.env_name} rollback --step db-rollback-point --force-past-fence",
                )
            self._pitr(ctx, str(instance), float(point["instant"]))
            return
        self._dump(ctx, s, point, force)

    def _pitr(self, ctx: StepContext, instance: str, instant: float) -> None:
        from datetime import UTC, datetime

        done = ctx.checkpoints.get("pitr")
        if done:
            ctx.log(f"db-rollback-point: point-in-time restore already started ({done['target']})")
            return
        target = f"{instance}-pitr-{int(instant)}"[:63]
        ctx.intent("rds-point-in-time-restore", source=instance, target=target, instant=iso(instant))
        ctx.adapters.aws().call(
            "rds",
            "restore_db_instance_to_point_in_time",
            SourceDBInstanceIdentifier=instance,
            TargetDBInstanceIdentifier=target,
            RestoreTime=datetime.fromtimestamp(instant, UTC),
        )
        ctx.checkpoints.put("pitr", {"target": target, "instant": instant})
        ctx.log(
            f"db-rollback-point: {instance} restored to {iso(instant)} as {target}; point the app at it "
            "(writes after that instant are not in it)"
        )

    def _dump(self, ctx: StepContext, s: Any, point: Mapping[str, Any], force: bool) -> None:
        path, sha = point.get("backup_path"), point.get("backup_sha256")
        created = point.get("backup_created")
        age = f"{(time.time() - float(created)) / 86400:.1f} days old" if created else "of unknown age"
        if not (force and s.dump_consent):
            ctx.log(
                f"db-rollback-point: database NOT restored. The only way back left is the pg-backup dump {path}, "
                f"{age}: every write since it was taken would be lost. To restore it anyway: set "
                f"[steps.db-rollback-point] dump_consent = true and run: bpmigrate --env {ctx.env_name} rollback "
                "--step db-rollback-point --force-past-fence"
            )
            return
        ctx.log(f"db-rollback-point: restoring the pg-backup dump {path}, {age}, into the target")
        if not path or not Path(path).is_file():
            raise StepFailed(
                "DB rollback: the recorded backup file is missing",
                f"expected {path}",
                "restore the backup file to that path (or set backup_path) and re-run the rollback",
            )
        if sha:
            actual, _size = ctx.adapters.get("archive").sha256(Path(path))
            if actual != sha:
                raise StepFailed(
                    "DB rollback: the backup's checksum does not match the recorded one",
                    f"recorded {sha}, file {actual}",
                    "find the intact backup; do NOT restore this file",
                )
        replicas: dict[str, int] = dict(point.get("replicas") or {})
        kube = None if kube_unreachable(ctx) else ctx.adapters.kube()
        done = ctx.checkpoints.get("db-rollback") or {}
        if kube is not None and not done.get("scaled_down"):
            for key in replicas:
                ns, name = key.split("/", 1)
                ctx.intent("scale", deployment=key, replicas=0)
                kube.scale("Deployment", name, ns, 0)
            done = {**done, "scaled_down": True}
            ctx.checkpoints.put("db-rollback", done)
        if not done.get("restored"):
            from migrate.adapters.postgres import qident

            from ..p2_data._common import pg

            target = pg(ctx, "target")  # the RDS address from the rds step when migrate.toml says from-terraform
            schemas = list(s.schemas) or sorted({t.schema for t in target.tables()} | {"public"})
            ctx.intent("pg-restore", backup=path, target=target.endpoint, reset_schemas=schemas)
            for schema in schemas:  # pg_restore cannot overwrite: the schemas are dropped; the dump recreates them
                target.execute(f"DROP SCHEMA IF EXISTS {qident(schema)} CASCADE")
                if schema == "public":  # pg_dump does not emit CREATE SCHEMA public
                    target.execute("CREATE SCHEMA public")
            target.restore(Path(path), single_transaction=True, client=ctx.adapters.postgres("source"))
            done = {**done, "restored": True}
            ctx.checkpoints.put("db-rollback", done)
        if kube is not None:
            for key, count in replicas.items():
                ns, name = key.split("/", 1)
                ctx.intent("scale", deployment=key, replicas=count)
                kube.scale("Deployment", name, ns, count)
        ctx.log(f"db-rollback-point: restored {path} into the target; {len(replicas)} deployment(s) scaled back")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        if not outputs.get("instant_at"):
            return ""
        way = "reverse stream" if outputs.get("reverse_stream_expected") else "point-in-time / dump"
        return f"point at {outputs['instant_at']} · way back: {way}"
