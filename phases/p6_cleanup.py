"""Phase 6 — post-migration: final backup, decommission of the old Compose stack, archive of the old configuration,
cost report and performance review.

Order matters and is enforced by dependencies: nothing is stopped before a checksummed final backup exists and
verifies; decommission is the one-way step of the whole migration and waits at a manual gate.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from migrate.errors import AdapterError, GateWaiting, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext
from phases.p5_cutover import Clock, iso, step_settings

if TYPE_CHECKING:
    from migrate.adapters.archive import ArchiveAdapter

PHASE = 6
DEFAULT_COMPOSE_FILE = "templates/compose/docker-compose.yml"


def files(ctx: StepContext) -> ArchiveAdapter:
    return ctx.adapters.get("archive")  # type: ignore[no-any-return]


def reports_dir(ctx: StepContext) -> Path:
    return ctx.project_root / str(ctx.setting("reports_dir", "runbooks/reports"))


# -- final-backup ----------------------------------------------------------------------------------------------------
class FinalBackup(Step):
    """Final source backup: a checksummed pg_dump of the old (Compose) PostgreSQL before anything is stopped.

    Custom-format pg_dump through the postgres adapter (the server's own pg_dump version) into
    ``state/<env>/artifacts/final-backup/``, with its sha256 in a ``.sha256`` sidecar and as a ledger artifact.
    Verify re-reads the file's sha256 and lists it with ``pg_restore --list`` (a different mechanism than writing it):
    it must hold a TABLE DATA entry per source table.

    Rollback keeps the file: deleting a backup is never a compensation.
    """

    id = "final-backup"
    title = "Final checksummed backup of the source database"
    phase = PHASE
    depends_on = ("post-cutover-watch",)
    reversibility = Reversibility.REVERSIBLE
    timeout = 6 * 3600.0

    def path(self, ctx: StepContext) -> Path:
        dbname = ctx.env.postgres["source"].dbname if "source" in ctx.env.postgres else "source"
        return ctx.state_dir / ctx.env_name / "artifacts" / self.id / f"{dbname}-final.dump"

    def plan(self, ctx: StepContext) -> PlanResult:
        source = ctx.adapters.postgres("source")
        result = PlanResult(data={"path": str(self.path(ctx))})
        reason = source.unreachable_reason()
        if reason:
            result.findings.append(
                Finding("block", f"source PostgreSQL unreachable: {reason}", "start the Compose stack's database")
            )
            return result
        result.changes.append(
            Change(
                "create",
                str(self.path(ctx)),
                f"pg_dump -Fc of {source.endpoint} ({source.database_size() / 2**20:.0f} MB)",
            )
        )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        source = ctx.adapters.postgres("source")
        path = self.path(ctx)
        ctx.intent("pg-dump", source=source.endpoint, path=str(path))
        result = files(ctx).final_backup(source, path)
        files(ctx).write_text(path.with_name(path.name + ".sha256"), result.sha256 + "\n")
        ctx.artifact("final-backup", path, result.sha256, result.size)
        ctx.metrics(bytes=float(result.size))
        tables = len(source.user_tables())
        return {
            "path": str(path),
            "sha256": result.sha256,
            "size": result.size,
            "tables": tables,
            "source": source.endpoint,
            "taken_at": iso(Clock().now()),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        recorded = ctx.upstream.get(self.id, {})
        path = Path(recorded.get("path") or self.path(ctx))
        if not path.is_file():
            return [Check("final backup file exists", False, "missing", str(path))]
        sha, size = files(ctx).sha256(path)
        sidecar = path.with_name(path.name + ".sha256")
        expected = recorded.get("sha256") or (sidecar.read_text().strip() if sidecar.is_file() else None)
        source = ctx.adapters.postgres("source")
        try:
            toc = source.restore_list(path)
        except AdapterError as exc:  # a damaged archive is a failing check, not a crash of verify
            toc = []
            ctx.log(f"pg_restore --list failed: {exc.why or exc.what}")
        data_entries = sum(1 for line in toc if " TABLE DATA " in line)
        want_tables = recorded.get("tables")
        return [
            Check("sha256 re-read matches the recorded one", sha == expected, sha, expected),
            Check("size matches", recorded.get("size") in (None, size), size, recorded.get("size")),
            Check(
                "pg_restore --list: one TABLE DATA entry per source table",
                data_entries > 0 and (want_tables is None or data_entries >= int(want_tables)),
                data_entries,
                want_tables if want_tables is not None else "> 0",
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Keep the backup file: a backup is never deleted as a compensation."""
        ctx.log("final-backup rollback keeps the backup file (a backup is never deleted as a compensation)")


# -- decommission ----------------------------------------------------------------------------------------------------
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

    Rollback (only with ``--force-past-fence``): ``docker compose up -d`` — the volumes were kept, but the data in
    them is as old as the cutover. Without a Docker engine it stops with the command to run by hand; after running
    it, set ``manual_restart_done = true`` and re-run the rollback (recorded like any other).
    """

    id = "decommission"
    title = "Stop the old Docker Compose stack (one-way)"
    phase = PHASE
    depends_on = ("final-backup", "archive")
    reversibility = Reversibility.ONE_WAY
    destructive = True
    gate = "stops the old Docker Compose stack; after this, DNS rollback to the old stack is no longer possible"

    def skip_reason(self, ctx: StepContext) -> str | None:
        """Sandbox only: the rehearsal has no Compose stack of its own to stop."""
        if ctx.is_sandbox and "dns-cutover" not in ctx.upstream and not ctx.setting("compose_in_sandbox", False):
            return "the sandbox rehearsal has no old Compose stack to stop (dns-cutover did not run here)"
        return None

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
                    bool(ctx.setting("allow_without_dns_cutover", False)),
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
        return {"method": "docker", "command": " ".join(args), "stopped_at": iso(Clock().now()), "volumes_kept": True}

    def verify(self, ctx: StepContext) -> list[Check]:
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


# -- archive ---------------------------------------------------------------------------------------------------------
class Archive(Step):
    """Archive of the old configuration: a tar.gz of the Compose file (and any ``paths`` configured), checksummed.

    Inputs: ``templates/compose/docker-compose.yml`` (setting ``compose_file``) plus every entry of ``paths``
    (files or directories, relative to the project). Written to ``state/<env>/artifacts/archive/`` with a
    ``.sha256`` sidecar and recorded as a ledger artifact. The old Compose file carries plaintext credentials:
    keep the archive where secrets may live (file mode 0600), never in a ticket or a shared drive.

    Verify re-reads the archive completely, compares its member list and sha256 with the recorded ones.
    Rollback deletes the archive (the inputs are untouched).
    """

    id = "archive"
    title = "tar.gz of the old configuration, checksummed"
    phase = PHASE
    depends_on = ("final-backup",)
    reversibility = Reversibility.REVERSIBLE

    def inputs(self, ctx: StepContext) -> list[str]:
        compose = str(
            ctx.setting("compose_file", step_settings(ctx, "decommission").get("compose_file", DEFAULT_COMPOSE_FILE))
        )
        return [compose, *[str(p) for p in ctx.setting("paths", [])]]

    def path(self, ctx: StepContext) -> Path:
        return ctx.state_dir / ctx.env_name / "artifacts" / self.id / f"old-config-{ctx.env_name}.tar.gz"

    def plan(self, ctx: StepContext) -> PlanResult:
        found, missing = files(ctx).resolve_inputs(self.inputs(ctx), ctx.project_root)
        result = PlanResult(data={"inputs": self.inputs(ctx)})
        result.changes.append(Change("create", str(self.path(ctx)), f"tar.gz of {len(found)} path(s)"))
        for item in missing:
            result.findings.append(
                Finding(
                    "warn",
                    f"configured path {item} does not exist: it will be missing from the archive",
                    "fix [steps.archive] paths",
                )
            )
        if not found:
            result.findings.append(Finding("block", "nothing to archive", "set [steps.archive] compose_file / paths"))
        result.findings.append(
            Finding("info", "the archive holds the old Compose file's plaintext credentials: store it as a secret")
        )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        adapter = files(ctx)
        found, missing = adapter.resolve_inputs(self.inputs(ctx), ctx.project_root)
        out = self.path(ctx)
        ctx.intent("write-archive", path=str(out), inputs=[str(p) for p in found])
        result = adapter.make_tar_gz(out, found, ctx.project_root)
        adapter.restrict(out)
        adapter.write_text(out.with_name(out.name + ".sha256"), result.sha256 + "\n")
        ctx.artifact("config-archive", out, result.sha256, result.size)
        return {
            "path": str(out),
            "sha256": result.sha256,
            "size": result.size,
            "members": list(result.members),
            "missing": missing,
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        recorded = ctx.upstream.get(self.id, {})
        path = Path(recorded.get("path") or self.path(ctx))
        if not path.is_file():
            return [Check("archive exists", False, "missing", str(path))]
        adapter = files(ctx)
        sha, _size = adapter.sha256(path)
        members = adapter.list_tar(path)
        return [
            Check(
                "archive sha256 matches the recorded one", sha == recorded.get("sha256"), sha, recorded.get("sha256")
            ),
            Check(
                "archive members match",
                members == recorded.get("members"),
                len(members),
                len(recorded.get("members") or []),
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Delete the archive and its checksum file (the archived inputs are untouched)."""
        path = self.path(ctx)
        ctx.intent("remove-archive", path=str(path))
        files(ctx).remove(path)
        files(ctx).remove(path.with_name(path.name + ".sha256"))


# -- cost-report -----------------------------------------------------------------------------------------------------
class CostReport(Step):
    """Cost report: AWS Cost Explorer cost of the month grouped by service, against the monthly target.

    ``period`` = "current" (month to date, default; with a linear month-end projection — Cost Explorer's forecast
    API is not used) or "previous" (the last full month). Target: ``monthly_target_usd`` (default: the one
    cost-controls used). A table goes to the terminal/log and a markdown report to ``runbooks/reports/
    cost-report-<env>-<month>.md`` (checksummed artifact). Verify fails when the (projected) monthly cost exceeds
    the target.

    Rollback deletes the report file.
    """

    id = "cost-report"
    title = "Monthly cost by service vs target (report)"
    phase = PHASE
    depends_on = ("cost-controls",)
    reversibility = Reversibility.REVERSIBLE
    clock: ClassVar[Clock] = Clock()

    def today(self) -> date:
        return datetime.fromtimestamp(self.clock.now(), UTC).date()

    def target(self, ctx: StepContext) -> float:
        value = ctx.setting("monthly_target_usd")
        if value is None:
            value = ctx.upstream.get("cost-controls", {}).get("monthly_target_usd")
        if value is None:
            value = step_settings(ctx, "cost-controls").get("monthly_target_usd", 5000)
        return float(value)

    def period(self, ctx: StepContext) -> tuple[str, str, bool]:
        from migrate.adapters.aws_cost import month_bounds

        previous = str(ctx.setting("period", "current")) == "previous"
        start, end = month_bounds(self.today(), previous=previous)
        return start, end, previous

    def report_path(self, ctx: StepContext) -> Path:
        start, _end, _prev = self.period(ctx)
        return reports_dir(ctx) / f"cost-report-{ctx.env_name}-{start[:7]}.md"

    def plan(self, ctx: StepContext) -> PlanResult:
        start, end, _prev = self.period(ctx)
        return PlanResult(
            changes=[
                Change(
                    "create",
                    str(self.report_path(ctx)),
                    f"Cost Explorer {start}..{end} by service vs {self.target(ctx):.0f} USD",
                )
            ]
        )

    def apply(self, ctx: StepContext) -> Outputs:
        from migrate.adapters.aws_cost import linear_forecast

        start, end, previous = self.period(ctx)
        report = ctx.adapters.get("aws_cost").cost_by_service(
            start, end, metric=str(ctx.setting("metric", "UnblendedCost"))
        )
        target = self.target(ctx)
        projected = report.total_usd if previous else linear_forecast(report.total_usd, self.today())
        rows = [(svc, round(amount, 2)) for svc, amount in report.rows()]
        lines = [
            f"# Cost report — {ctx.env_name}, {start} to {end}" + (" (month to date)" if not previous else ""),
            "",
            f"Source: AWS Cost Explorer `GetCostAndUsage`, {report.metric}, grouped by SERVICE"
            + (" (estimated)" if report.estimated else "")
            + ".",
            "",
            "| Service | Cost (USD) | Share |",
            "|---|---:|---:|",
        ]
        for svc, amount in rows:
            share = amount / report.total_usd * 100 if report.total_usd else 0.0
            lines.append(f"| {svc} | {amount:,.2f} | {share:.1f} % |")
        lines += [
            f"| **Total** | **{report.total_usd:,.2f}** | 100 % |",
            "",
            f"- Monthly target: **{target:,.2f} USD**",
            f"- {'Monthly cost' if previous else 'Projected month-end cost (linear from month to date)'}: "
            f"**{projected:,.2f} USD** ({projected / target * 100 if target else 0:.0f} % of target)",
            f"- Verdict: **{'within target' if projected <= target else 'OVER target'}**",
            "",
            f"Generated by `bpmigrate apply --step cost-report --env {ctx.env_name}` at {iso(self.clock.now())}.",
        ]
        if not rows:
            lines.insert(6, "| (no cost data returned) | 0.00 | - |")
        path = self.report_path(ctx)
        ctx.intent("write-report", path=str(path))
        sha, size = files(ctx).write_text(path, "\n".join(lines) + "\n")
        ctx.artifact("cost-report", path, sha, size)
        for svc, amount in rows:
            ctx.log(f"{svc:<45} {amount:>12,.2f} USD")
        ctx.log(f"{'TOTAL':<45} {report.total_usd:>12,.2f} USD   target {target:,.2f}   projected {projected:,.2f}")
        return {
            "period": {"start": start, "end": end, "month_to_date": not previous},
            "by_service": dict(rows),
            "total_usd": report.total_usd,
            "projected_usd": projected,
            "target_usd": target,
            "within_target": projected <= target,
            "report": str(path),
            "sha256": sha,
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        recorded = ctx.upstream.get(self.id, {})
        path = Path(recorded.get("report") or self.report_path(ctx))
        checks = []
        if path.is_file():
            sha, _size = files(ctx).sha256(path)
            checks.append(Check("report file intact", sha == recorded.get("sha256"), sha, recorded.get("sha256")))
        else:
            checks.append(Check("report file exists", False, "missing", str(path)))
        projected, target = recorded.get("projected_usd"), recorded.get("target_usd")
        checks.append(
            Check(
                "monthly cost within target",
                projected is not None and target is not None and projected <= target,
                projected,
                target,
            )
        )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        """Delete the report file."""
        path = Path(ctx.upstream.get(self.id, {}).get("report") or self.report_path(ctx))
        files(ctx).remove(path)


# -- perf-review -----------------------------------------------------------------------------------------------------
def find_number(outputs: Any, *keys: str) -> float | None:
    """The first numeric value under one of ``keys`` (dotted paths allowed) in a step's outputs."""
    for key in keys:
        node = outputs
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            return float(node)
    return None


class PerfReview(Step):
    """Performance review: the success criteria against the recorded gate and watch results, as a report.

    Criteria (settings): API p95 < ``api_p95_ms`` (200) from the ``load-test`` gate and the ``post-cutover-watch``;
    ML p95 < ``ml_p95_ms`` (500) from ``ml-perf``; availability ≥ ``min_availability`` (0.999) from the watch.
    A criterion without a recorded measurement is "not measured" and does not pass (in a sandbox it is reported as
    NOT MEASURED without failing, since the component may not exist there). The report goes to
    ``runbooks/reports/perf-review-<env>.md``; verify returns one check per criterion.

    Rollback deletes the report file.
    """

    id = "perf-review"
    title = "Success criteria review (report)"
    phase = PHASE
    depends_on = ("post-cutover-watch",)
    reversibility = Reversibility.REVERSIBLE

    sources: ClassVar[tuple[str, ...]] = ("load-test", "ml-perf", "post-cutover-watch")

    def skip_reason(self, ctx: StepContext) -> str | None:
        if not any(ctx.upstream.get(sid) for sid in self.sources):
            return "nothing was measured in this environment (load-test, ml-perf and post-cutover-watch recorded no results)"
        return None

    def criteria(self, ctx: StepContext) -> list[dict[str, Any]]:
        up = ctx.upstream
        api_max = float(ctx.setting("api_p95_ms", 200))
        ml_max = float(ctx.setting("ml_p95_ms", 500))
        min_avail = float(ctx.setting("min_availability", 0.999))
        rows = [
            (
                "API p95 (load-test gate)",
                find_number(up.get("load-test", {}), "stats.p95_ms", "p95_ms"),
                "<",
                api_max,
                "ms",
            ),
            (
                "API p95 (post-cutover watch)",
                find_number(up.get("post-cutover-watch", {}), "p95_ms"),
                "<",
                api_max,
                "ms",
            ),
            (
                "ML p95 (ml-perf)",
                find_number(up.get("ml-perf", {}), "stats.p95_ms", "p95_ms", "latency.p95_ms"),
                "<",
                ml_max,
                "ms",
            ),
            (
                "availability (post-cutover watch)",
                find_number(up.get("post-cutover-watch", {}), "availability"),
                ">=",
                min_avail,
                "",
            ),
        ]
        out = []
        for name, observed, op, limit, unit in rows:
            if observed is None:
                # unmeasured never passes in a real environment; a sandbox without the component says so and moves on
                ok, result = ctx.is_sandbox, "NOT MEASURED"
            else:
                ok = observed < limit if op == "<" else observed >= limit
                result = "PASS" if ok else "FAIL"
            out.append(
                {"name": name, "observed": observed, "op": op, "limit": limit, "unit": unit, "ok": ok, "result": result}
            )
        return out

    def report_path(self, ctx: StepContext) -> Path:
        return reports_dir(ctx) / f"perf-review-{ctx.env_name}.md"

    def plan(self, ctx: StepContext) -> PlanResult:
        result = PlanResult(changes=[Change("create", str(self.report_path(ctx)), "success criteria report")])
        for c in self.criteria(ctx):
            if c["observed"] is None:
                result.findings.append(Finding("warn", f"{c['name']}: not measured (no recorded result)"))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        rows = self.criteria(ctx)
        lines = [
            f"# Performance review — {ctx.env_name}",
            "",
            "Success criteria of the migration against the recorded gate and watch results (from the ledger).",
            "",
            "| Criterion | Observed | Target | Result |",
            "|---|---:|---:|---|",
        ]
        for c in rows:
            observed = "not measured" if c["observed"] is None else f"{c['observed']:g} {c['unit']}".strip()
            if c["observed"] is not None and c["name"].startswith("availability"):
                observed = f"{c['observed'] * 100:.3f} %"
            lines.append(f"| {c['name']} | {observed} | {c['op']} {c['limit']:g} {c['unit']} | {c['result']} |")
        passed = all(c["ok"] for c in rows)
        unmeasured = sum(1 for c in rows if c["observed"] is None)
        verdict = "all criteria met" if passed else "criteria NOT met"
        if passed and unmeasured:
            verdict = f"criteria met where measured ({unmeasured} not measured in this sandbox)"
        lines += ["", f"Overall: **{verdict}**", ""]
        path = self.report_path(ctx)
        ctx.intent("write-report", path=str(path))
        sha, size = files(ctx).write_text(path, "\n".join(lines))
        ctx.artifact("perf-review", path, sha, size)
        for c in rows:
            ctx.log(f"{c['name']}: {c['observed']} {c['op']} {c['limit']} -> {c['result']}")
        return {"criteria": rows, "passed": passed, "report": str(path), "sha256": sha}

    def verify(self, ctx: StepContext) -> list[Check]:
        return [
            Check(c["name"], bool(c["ok"]), c["observed"], f"{c['op']} {c['limit']:g} {c['unit']}".strip())
            for c in self.criteria(ctx)
        ]

    def rollback(self, ctx: StepContext) -> None:
        """Delete the report file."""
        files(ctx).remove(self.report_path(ctx))
