"""Step ``decommission``: Decommission: stop the old Docker Compose stack (``docker compose down``, volumes KEPT) — one-way."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from migrate.errors import AdapterError, GateWaiting, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from .._sync import reverse_status
from ..p5_cutover._common import Clock, iso
from ._common import DEFAULT_COMPOSE_FILE, PHASE, files


class Decommission(Step):
    """Decommission: stop the old Docker Compose stack (``docker compose down``, volumes KEPT) — one-way.

    Preconditions, checked again at apply time: the final backup's sha256 still matches the recorded one, and
    Route53 sends 0 % of api.<domain> to the old stack (dns-cutover reached 100 %). Explicit confirmation: the
    step waits at a manual gate (``bpmigrate approve decommission --reason ...``) and is destructive (needs the
    shown plan and ``--yes``).

    When a Docker engine answers (``docker info``; ``docker_host`` setting → ``DOCKER_HOST``, e.g.
    ``ssh://compose-host``), bpmigrate runs ``docker compose -f <compose_file> -p <project> down --remove-orphans``.
    Otherwise it stops with the exact command to run on the Compose host, and the operator records it with
    ``bpmigrate mark decommission --as verified --reason "compose down run by hand"``.

    Refused until ``post-cutover-watch``'s window ended clean, and while the reverse stream (target → source) of
    ``data-switch`` still runs: stopping it ends the lossless way back, so it is only done on purpose — set
    ``reverse_stream = "stop"`` and decommission detaches it (recorded) before stopping anything.

    ``old_stack = {kind = "process", config_file = "..."}`` (the sandbox's old app process) stops that process
    instead of a Compose project.

    Rollback (only with ``--force-past-fence``): ``docker compose up -d`` — the volumes were kept, but the data in
    them is as old as the cutover. Without a Docker engine it stops with the command to run by hand; after running
    it, set ``manual_restart_done = true`` and re-run the rollback (recorded like any other).
    """

    id = "decommission"
    title = "Stop the old Docker Compose stack (one-way)"
    phase = PHASE
    depends_on = ("final-backup", "archive", "post-cutover-watch", "dns-cutover", "data-switch", "pg-sync")
    reversibility = Reversibility.ONE_WAY
    destructive = True
    gate = "stops the old Docker Compose stack; after this, DNS rollback to the old stack is no longer possible"

    class Settings(StepSettings):
        compose_file: str = Field(DEFAULT_COMPOSE_FILE, description="the old stack's Compose file")
        compose_project: str = Field("betterprompts", description="its Compose project name")
        docker_host: str | None = Field(None, description="DOCKER_HOST, e.g. ssh://deploy@compose-host")
        old_health_url: str | None = Field(None, description="verify: must no longer answer")
        old_stack: dict[str, Any] = Field(default_factory=dict, description='{kind = "process", config_file}')
        reverse_stream: str = Field("keep", pattern="^(keep|stop)$", description='"stop" = detach it on purpose')
        compose_in_sandbox: bool = Field(False, description="run the Compose path in a sandbox too")
        allow_without_dns_cutover: bool = Field(False, description="no dns-cutover recorded is acceptable")
        allow_without_watch: bool = Field(False, description="no post-cutover-watch recorded is acceptable")
        manual_restart_done: bool = Field(False, description="rollback: the operator restarted the stack by hand")

    def skip_reason(self, ctx: StepContext) -> str | None:
        """Sandbox only: the rehearsal has no Compose stack of its own to stop."""
        s = ctx.typed(self.Settings)
        if ctx.is_sandbox and "dns-cutover" not in ctx.upstream and not (s.compose_in_sandbox or s.old_stack):
            return "the sandbox rehearsal has no old stack to stop (dns-cutover did not run here)"
        return None

    def _process(self, ctx: StepContext) -> Path | None:
        old = ctx.typed(self.Settings).old_stack
        return Path(str(old["config_file"])) if old.get("kind") == "process" and old.get("config_file") else None

    def compose_args(self, ctx: StepContext, *action: str) -> list[str]:
        compose_file = str(ctx.setting("compose_file", DEFAULT_COMPOSE_FILE))
        project = str(ctx.setting("compose_project", "betterprompts"))
        return ["docker", "compose", "-f", compose_file, "-p", project, *action]

    def docker_env(self, ctx: StepContext) -> dict[str, str]:
        host = ctx.setting("docker_host")
        return {"DOCKER_HOST": str(host)} if host else {}

    def docker_unavailable(self, ctx: StepContext) -> str | None:
        """Why no Docker engine can be driven from here (None = one answers)."""
        proc = ctx.adapters.proc()
        if proc.which("docker") is None:
            return "the docker CLI is not installed on this machine"
        try:
            res = proc.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                env=self.docker_env(ctx),
                check=False,
                timeout=20,
                service="docker",
            )
        except AdapterError as exc:
            return exc.what
        if res.returncode != 0:
            last = ((res.stderr or res.stdout).strip().splitlines() or ["?"])[-1]
            return f"no Docker engine answers here (docker info: {last})"
        plugin = proc.run(["docker", "compose", "version"], env=self.docker_env(ctx), check=False, timeout=20)
        if plugin.returncode != 0:
            return "the docker compose plugin is not installed on this machine"
        return None

    def manual_command(self, ctx: StepContext) -> str:
        prefix = f"DOCKER_HOST={ctx.setting('docker_host')} " if ctx.setting("docker_host") else ""
        return prefix + " ".join(self.compose_args(ctx, "down", "--remove-orphans"))

    def preconditions(self, ctx: StepContext) -> list[Check]:
        checks = []
        backup = ctx.upstream.get("final-backup", {})
        path = backup.get("path")
        if not path or not Path(path).is_file():
            checks.append(Check("final backup present", False, path, "a file recorded by final-backup"))
        else:
            sha, _size = files(ctx).sha256(Path(path))
            checks.append(
                Check("final backup sha256 unchanged", sha == backup.get("sha256"), sha, backup.get("sha256"))
            )
        s = ctx.typed(self.Settings)
        watch = ctx.upstream.get("post-cutover-watch") or {}
        ended = watch.get("ends_ts") is not None and float(watch["ends_ts"]) <= Clock().now()
        checks.append(
            Check(
                "post-cutover watch window ended clean",
                (ended and bool(watch.get("clean"))) or s.allow_without_watch,
                f"ends {watch.get('ends_at')}, clean={watch.get('clean')}" if watch else None,
                "window over, no breach",
            )
        )
        rev = reverse_status(ctx, dict(ctx.upstream.get("pg-sync") or {}))
        running = bool(rev["pg"]) or bool(rev["redis"])
        checks.append(
            Check(
                "reverse stream stopped on purpose",
                not running or s.reverse_stream == "stop",
                f"running (lag {rev['lag_bytes']} bytes)" if running else "stopped",
                'stopped, or [steps.decommission] reverse_stream = "stop"',
            )
        )
        cut = ctx.upstream.get("dns-cutover")
        if cut and cut.get("zone_id"):
            r53 = ctx.adapters.get("aws_route53")
            weights = r53.weights(cut["zone_id"], cut["record"], cut.get("record_type", "CNAME"))
            old = weights.get(cut.get("old_set_id", "old-stack"))
            checks.append(Check("Route53 sends nothing to the old stack", not old, old, 0))
        else:
            checks.append(
                Check(
                    "dns-cutover recorded",
                    s.allow_without_dns_cutover,
                    None,
                    "dns-cutover outputs",
                )
            )
        return checks

    def plan(self, ctx: StepContext) -> PlanResult:
        result = PlanResult()
        for check in self.preconditions(ctx):
            if not check.ok:
                result.findings.append(
                    Finding(
                        "block", f"precondition failed: {check.name} (observed {check.observed})", "see the runbook"
                    )
                )
        if ctx.typed(self.Settings).reverse_stream == "stop":
            result.changes.append(Change("delete", "reverse stream (target -> source)", "the way back ends here"))
        process = self._process(ctx)
        if process is not None:
            result.changes.append(Change("delete", f"old stack process ({process.parent.name})", "stopped for good"))
            return result
        reason = self.docker_unavailable(ctx)
        if reason:
            result.changes.append(Change("run", "manual: " + self.manual_command(ctx), reason))
            result.findings.append(Finding("warn", f"{reason}: the command must be run by hand on the Compose host"))
        else:
            result.changes.append(
                Change(
                    "delete",
                    "compose project " + str(ctx.setting("compose_project", "betterprompts")),
                    " ".join(self.compose_args(ctx, "down", "--remove-orphans")),
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        failed = [c for c in self.preconditions(ctx) if not c.ok]
        if failed:
            raise StepFailed(
                "decommission refused: "
                + "; ".join(f"{c.name} (observed {c.observed}, expected {c.expected})" for c in failed),
                "the old stack is the only way back until these hold",
                f"bpmigrate --env {ctx.env_name} verify final-backup; bpmigrate --env {ctx.env_name} show dns-cutover",
            )
        out: dict[str, Any] = {}
        if ctx.typed(self.Settings).reverse_stream == "stop":
            out["reverse_stream_stopped"] = self._stop_reverse(ctx)
        process = self._process(ctx)
        if process is not None:
            from migrate.adapters.fences import stop_process

            ctx.intent("stop-old-stack-process", config_file=str(process))
            pid = stop_process(process)
            return out | {"method": "process", "pid": pid, "stopped_at": iso(Clock().now())}
        reason = self.docker_unavailable(ctx)
        if reason:
            raise GateWaiting(
                "decommission needs a manual step on the Compose host",
                reason,
                f"run there: `{self.manual_command(ctx)}`, then: bpmigrate --env {ctx.env_name} mark decommission "
                "--as verified --reason 'compose down run by hand'",
            )
        args = self.compose_args(ctx, "down", "--remove-orphans")
        ctx.intent("docker-compose-down", command=" ".join(args))
        ctx.adapters.proc().run(args, env=self.docker_env(ctx), cwd=ctx.project_root, timeout=600, service="docker")
        return out | {
            "method": "docker",
            "command": " ".join(args),
            "stopped_at": iso(Clock().now()),
            "volumes_kept": True,
        }

    def _stop_reverse(self, ctx: StepContext) -> list[str]:
        from .._sync import _pgsync, redis_reverse_stop

        done: list[str] = []
        pg_out = dict(ctx.upstream.get("pg-sync") or {})
        if pg_out.get("subscription"):
            rev = _pgsync(ctx, pg_out.get("name")).reverse()
            ctx.intent("detach-reverse-stream", name=rev.name)
            done += rev.teardown()
        if redis_reverse_stop(ctx):
            done.append("redis reverse follower")
        return done

    def verify(self, ctx: StepContext) -> list[Check]:
        process = self._process(ctx)
        if process is not None:
            from migrate.adapters.fences import process_alive

            alive = process_alive(process)
            return [Check("old stack process stopped", not alive, "running" if alive else "stopped", "stopped")]
        if self.docker_unavailable(ctx):
            url = ctx.setting("old_health_url")
            if not url:
                return [
                    Check(
                        "old stack stopped",
                        True,
                        "not observable from here (no docker engine, no old_health_url)",
                        "stopped",
                    )
                ]
            try:
                resp = ctx.adapters.http().get(str(url), timeout=5)
                return [Check("old stack stopped", False, f"{url} answered {resp.status}", "no answer")]
            except AdapterError:
                return [Check("old stack stopped", True, f"{url} does not answer", "no answer")]
        res = ctx.adapters.proc().run(
            self.compose_args(ctx, "ps", "-q"), env=self.docker_env(ctx), cwd=ctx.project_root, check=False, timeout=60
        )
        running = [line for line in res.stdout.splitlines() if line.strip()]
        return [Check("no Compose container running", res.returncode == 0 and not running, len(running), 0)]

    def rollback(self, ctx: StepContext) -> None:
        """Restart the old stack (``docker compose up -d``); the engine only calls this with --force-past-fence."""
        reason = self.docker_unavailable(ctx)
        up = self.compose_args(ctx, "up", "-d")
        if reason:
            if ctx.setting("manual_restart_done", False):
                ctx.log(f"decommission rollback: the operator restarted the old stack by hand (`{' '.join(up)}`)")
                return
            raise GateWaiting(
                "restarting the old Compose stack needs a manual step",
                reason,
                f"run on the Compose host: `{' '.join(up)}`; then set [steps.decommission] manual_restart_done = true "
                f"in migrate.toml and re-run: bpmigrate --env {ctx.env_name} rollback --step decommission "
                "--force-past-fence",
            )
        ctx.intent("docker-compose-up", command=" ".join(up))
        ctx.adapters.proc().run(up, env=self.docker_env(ctx), cwd=ctx.project_root, timeout=600, service="docker")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        if not outputs.get("stopped_at"):
            return ""
        how = f"process {outputs.get('pid')}" if outputs.get("method") == "process" else "docker compose down"
        extra = " · reverse stream detached" if outputs.get("reverse_stream_stopped") else ""
        return f"old stack stopped ({how}) at {outputs['stopped_at']}{extra}"
