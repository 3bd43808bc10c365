"""Step ``target-cleanup``: Leave nothing of bpmigrate's behind: drop ``_bpmigrate`` from the target, prove no slot, publication, subscription or follower is left."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from migrate.errors import StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings

from .._sync import REVERSE_FOLLOWER_DIR, redis_reverse_stop
from ._common import PHASE

_KINDS = ("slots", "publications", "subscriptions")
_REVERSE = "_rev"  # migrate.adapters.pgsync.reverse_name


class TargetCleanup(Step):
    """Leave nothing of bpmigrate's behind: drop ``_bpmigrate`` from the target, prove no slot, publication,
    subscription or follower is left.

    Runs once the final backup is verified, i.e. after post-cutover-watch: the rollback window is closed and no step
    needs the restore, copy or sync state any more. Apply ends what data-switch left running for that window — the
    reverse stream (``bpm_…_rev``: subscription on the source, slot and publication on the target), a forward stream
    still there after the switch, the Redis reverse follower — then drops the schema ``_bpmigrate`` from both sides.
    A forward stream before data-switch ran, or another live process marked as this environment's bpmigrate, means
    a step still runs: plan blocks naming each with the command that ends it. Verify proves every absence on both
    sides and on this host. Rollback has nothing to restore (the schema held only progress records; the rollback
    window was already closed).
    """

    id = "target-cleanup"
    title = "Remove bpmigrate's schema and prove no replication object or follower is left"
    phase = PHASE
    depends_on = ("final-backup",)
    reversibility = Reversibility.REVERSIBLE
    destructive = False  # the schema it drops holds only bpmigrate's progress records, no migrated data

    class Settings(StepSettings):
        check_processes: bool = Field(True, description="also prove no marked bpmigrate process of this env is alive")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        if "dropped" not in outputs:
            return ""
        dropped = outputs.get("dropped") or []
        return f"dropped {', '.join(dropped)}" if dropped else "nothing to drop · nothing left"

    def _sides(self, ctx: StepContext) -> dict[str, Any]:
        sides: dict[str, Any] = {r: ctx.adapters.postgres(r) for r in ("source", "target") if r in ctx.env.postgres}
        target = sides.get("target")
        if target is not None and target.needs_address and ctx.upstream.get("rds", {}).get("endpoint"):
            rds = ctx.upstream["rds"]
            sides["target"] = target.with_address(str(rds["endpoint"]), int(rds.get("port") or target.port))
        return sides

    def _streams(self, ctx: StepContext) -> list[str]:
        """Names of the streams apply ends: the reverse ones (target -> source, kept for the rollback window), and
        forward ones too once data-switch has run (the switch detaches them; one still there is garbage)."""
        leftovers = ctx.adapters.get("leftovers")
        names: set[str] = set()
        for db in self._sides(ctx).values():
            if not db.needs_address:
                found = leftovers.database(db)
                names |= {n for kind in _KINDS for n in found[kind] if self._ends(ctx, n)}
        return sorted(names)

    @staticmethod
    def _ends(ctx: StepContext, name: str) -> bool:
        return name.endswith(_REVERSE) or bool(ctx.upstream.get("data-switch"))

    def _reverse_follower(self, ctx: StepContext) -> int | None:
        """The pid of the Redis reverse follower data-switch started, while it runs."""
        from migrate.adapters.redis_sync import follower_pid

        return follower_pid(ctx.state_dir / ctx.env_name / REVERSE_FOLLOWER_DIR)

    def _blockers(self, ctx: StepContext, *, after_reverse: bool = False) -> list[Finding]:
        out: list[Finding] = []
        leftovers = ctx.adapters.get("leftovers")
        for role, db in self._sides(ctx).items():
            if db.needs_address:
                continue
            found = leftovers.database(db)
            for kind in _KINDS:
                for name in found[kind]:
                    if self._ends(ctx, name) and not after_reverse:
                        continue  # ended by apply (the rollback window is closed)
                    out.append(
                        Finding(
                            "block",
                            f"{kind[:-1]} {name} is still on the {role} ({db.endpoint}): a stream is still running",
                            f"bpmigrate --env {ctx.env_name} apply --step "
                            f"{self.id if self._ends(ctx, name) else 'data-switch'} --yes",
                        )
                    )
        if ctx.typed(self.Settings).check_processes and (after_reverse or self._reverse_follower(ctx) is None):
            for proc in leftovers.processes():
                out.append(
                    Finding(
                        "block",
                        f"bpmigrate process {proc['pid']} of {ctx.env_name} is still alive: {proc['command'][:80]}",
                        f"kill {proc['pid']}",
                    )
                )
        return out

    def plan(self, ctx: StepContext) -> PlanResult:
        result = PlanResult()
        leftovers = ctx.adapters.get("leftovers")
        for role, db in self._sides(ctx).items():
            if db.needs_address:
                result.unknown.append(f"{role} address (rds endpoint output)")
            elif leftovers.database(db)["schema"]:
                result.changes.append(Change("delete", f"schema _bpmigrate on the {role}", db.endpoint))
        for name in self._streams(ctx):
            result.changes.append(
                Change("delete", f"stream {name}", "subscription, slot, publication: the rollback window closed")
            )
        if self._reverse_follower(ctx) is not None:
            result.changes.append(
                Change("delete", "Redis reverse follower", "stopped; notify-keyspace-events restored")
            )
        result.findings += self._blockers(ctx)
        if not result.changes and not result.unknown:
            result.in_place.append("no _bpmigrate schema on either side")
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        blockers = self._blockers(ctx)
        if blockers:
            raise StepFailed(blockers[0].message, "bpmigrate's state is still in use", blockers[0].fix)
        leftovers = ctx.adapters.get("leftovers")
        dropped: list[str] = []
        sides = self._sides(ctx)
        for name in self._streams(ctx):
            from migrate.adapters.pgsync import PgSync

            ctx.intent("end-stream", name=name)
            reverse = name.endswith(_REVERSE)
            publisher, subscriber = sides["target" if reverse else "source"], sides["source" if reverse else "target"]
            dropped += PgSync(publisher, subscriber, name).teardown()
        if self._reverse_follower(ctx) is not None:
            redis_reverse_stop(ctx)
            dropped.append("Redis reverse follower")
        left = self._blockers(ctx, after_reverse=True)
        if left:
            raise StepFailed(left[0].message, "it is still there after the streams were ended", left[0].fix)
        for role, db in self._sides(ctx).items():
            ctx.intent("drop-internal-schema", side=role, endpoint=db.endpoint)
            if leftovers.drop_internal_schema(db):
                dropped.append(f"_bpmigrate on the {role}")
        return {"dropped": dropped}

    def verify(self, ctx: StepContext) -> list[Check]:
        leftovers = ctx.adapters.get("leftovers")
        checks: list[Check] = []
        for role, db in self._sides(ctx).items():
            found = leftovers.database(db)
            checks.append(Check(f"no _bpmigrate schema on the {role}", not found["schema"], found["schema"] or "none"))
            for kind in _KINDS:
                checks.append(
                    Check(f"no bpmigrate {kind} on the {role}", not found[kind], found[kind] or "none", "none")
                )
        if ctx.typed(self.Settings).check_processes:
            procs = leftovers.processes()
            checks.append(
                Check(
                    f"no live bpmigrate process of {ctx.env_name} on this host",
                    not procs,
                    [p["pid"] for p in procs] or "none",
                    "none",
                )
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("target-cleanup rollback: nothing to restore (the dropped schema held only bpmigrate's progress)")
