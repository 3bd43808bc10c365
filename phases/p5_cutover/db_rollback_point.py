"""Step ``db-rollback-point``: Database rollback point: records what the guide's DB rollback procedure needs, and implements it as rollback."""

from __future__ import annotations

from pathlib import Path

from migrate.errors import StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import PHASE, app_namespaces, kube_unreachable


class DbRollbackPoint(Step):
    """Database rollback point: records what the guide's DB rollback procedure needs, and implements it as rollback.

    Apply records the backup to restore (the ``pg-backup`` step's artifact: path + sha256) and the replica count of
    every Deployment in the app namespaces. Nothing is changed.

    Rollback = the guide's DB rollback procedure, ledgered: (1) scale every recorded Deployment to 0, (2) verify the
    backup's sha256, drop the target's user schemas (setting ``schemas``; default: every schema holding user tables)
    and restore the backup into it (``pg_restore``), (3) scale
    every Deployment back to its recorded replicas. Each stage is checkpointed (a killed rollback resumes). Writes made
    on the new stack since the backup are LOST, so it only runs when asked explicitly with ``--force-past-fence``:
    ``bpmigrate --env <env> rollback --to pre-cutover-check --force-past-fence`` unwinds the watch, DNS (traffic back to
    the old stack) and then the database, in that order. Any rollback without the flag (e.g. the DNS rollback
    ``--phase cutover``) leaves the database untouched and says so in the log; to restore it afterwards, re-apply
    from ``pre-cutover-check`` and run the forced rollback.
    """

    id = "db-rollback-point"
    title = "DB rollback point (the DB rollback procedure is its rollback)"
    procedures = (
        (
            "DB rollback",
            "bpmigrate --env <env> rollback --to pre-cutover-check --force-past-fence --yes",
            "DNS back first, then: scale deployments to 0, restore the recorded pg-backup into the target, scale back; "
            "writes since the backup are lost",
        ),
    )
    phase = PHASE
    depends_on = ("pg-backup", "pre-cutover-check")
    reversibility = Reversibility.COMPENSABLE

    def _backup(self, ctx: StepContext) -> tuple[str | None, str | None]:
        out = ctx.upstream.get("pg-backup", {})
        path = ctx.setting("backup_path") or out.get("path") or out.get("backup_path") or out.get("archive")
        sha = ctx.setting("backup_sha256") or out.get("sha256") or out.get("backup_sha256")
        return (str(path) if path else None, str(sha) if sha else None)

    def plan(self, ctx: StepContext) -> PlanResult:
        path, _sha = self._backup(ctx)
        result = PlanResult(changes=[Change("run", "record DB rollback point", f"backup {path}")])
        if not path:
            result.findings.append(
                Finding(
                    "warn",
                    "no backup recorded by pg-backup: the DB rollback would have nothing to restore",
                    "apply pg-backup, or set [steps.db-rollback-point] backup_path/backup_sha256",
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        path, sha = self._backup(ctx)
        replicas: dict[str, int] = {}
        if not kube_unreachable(ctx):
            kube = ctx.adapters.kube()
            for ns in app_namespaces(ctx):
                for dep in kube.list("apps/v1", "Deployment", ns):
                    replicas[f"{ns}/{dep['metadata']['name']}"] = int(dep.get("spec", {}).get("replicas", 1) or 0)
        ctx.checkpoints.put("point", {"backup_path": path, "backup_sha256": sha, "replicas": replicas})
        return {"backup_path": path, "backup_sha256": sha, "replicas": replicas}

    def verify(self, ctx: StepContext) -> list[Check]:
        point = ctx.checkpoints.get("point") or {}
        path = point.get("backup_path")
        checks = [Check("rollback point recorded", bool(point), bool(point), True)]
        if path:
            exists = Path(path).is_file()
            checks.append(Check("backup file present", exists, path, "a readable file"))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """The guide's DB rollback, only with --force-past-fence: scale to 0, restore the backup, scale back.

        Without --force-past-fence the database is left untouched (writes since the backup would be lost) and the log
        says how to run it.
        """
        point = ctx.checkpoints.get("point")
        force = bool(getattr(ctx, "force_past_fence", False) or ctx.setting("force_past_fence", False))
        if point is None:
            return
        if not force:
            ctx.log(
                "db-rollback-point: database NOT restored (writes since the backup would be lost); to run the DB "
                f"rollback: bpmigrate --env {ctx.env_name} rollback --to pre-cutover-check --force-past-fence"
            )
            return
        path, sha = point.get("backup_path"), point.get("backup_sha256")
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
        replicas: dict[str, int] = point.get("replicas", {})
        kube = None if kube_unreachable(ctx) else ctx.adapters.kube()
        done = ctx.checkpoints.get("db-rollback") or {}
        if kube is not None and not done.get("scaled_down"):
            for key in replicas:
                ns, name = key.split("/", 1)
                ctx.intent("scale", deployment=key, replicas=0)
                kube.scale("Deployment", name, ns, 0)
            ctx.checkpoints.put("db-rollback", {**done, "scaled_down": True})
            done = {**done, "scaled_down": True}
        if not done.get("restored"):
            from migrate.adapters.postgres import qident

            from ..p2_data._common import pg

            target = pg(ctx, "target")  # the RDS address from the rds step when migrate.toml says from-terraform
            configured = ctx.setting("schemas")
            schemas = (
                [str(x) for x in configured]
                if configured
                else sorted({t.schema for t in target.tables()} | {"public"})  # every user schema (not _bpmigrate)
            )
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
