"""The engine: plan / apply / verify / rollback / reconcile over the step graph.

It talks to steps and the ledger only; it never prints (events go to a Reporter). Every state change goes through
``Ledger.transition`` (which asks ``states.transition``). Commands are library functions returning result objects;
the CLI parses, calls and renders.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from migrate.adapters import Adapters
from migrate.adapters import proc as _proc
from migrate.config import Config
from migrate.errors import (
    BpmError,
    DependencyNotReady,
    FenceRefused,
    GateWaiting,
    Interrupted,
    LedgerError,
    NotConfirmed,
    StalePlan,
    StepFailed,
    StepTimeout,
    UsageError,
    VerifyFailed,
)
from migrate.ledger import Ledger
from migrate.ledger_read import LedgerReader
from migrate.lock import LeaseLock
from migrate.plan import Graph, load_graph
from migrate.redact import redact
from migrate.reporting import Reporter, persisting
from migrate.settings import model_for as settings_model_for
from migrate.settings import validate_settings
from migrate.states import IN_FLIGHT, ROLLBACKABLE, SATISFIES_DEPENDENCY, Event, State
from migrate.step import Change, Check, Finding, PlanResult, Reversibility, Step, StepContext

Confirm = Callable[[str], bool]


@dataclass
class StepOutcome:
    step_id: str
    action: str
    state: str
    detail: str = ""


@dataclass
class RunResult:
    outcomes: list[StepOutcome] = field(default_factory=list)
    nothing_to_do: bool = False

    def add(self, step_id: str, action: str, state: State | str, detail: str = "") -> None:
        self.outcomes.append(StepOutcome(step_id, action, str(state), redact(detail)))


class _LedgerCheckpoints:
    """Checkpoints read from the ledger; writable only when a ledger writer is given (apply/rollback)."""

    def __init__(self, ledger: Ledger | None, reader: Callable[[], LedgerReader], step_id: str) -> None:
        self._ledger = ledger
        self._reader = reader
        self._step_id = step_id

    def get(self, key: str) -> dict[str, Any] | None:
        return self.all().get(key)

    def put(self, key: str, data: dict[str, Any] | None = None) -> None:
        if self._ledger is None:
            raise UsageError("checkpoints are only writable during apply", "plan and verify must not write", "move it to apply()")
        self._ledger.put_checkpoint(self._step_id, key, dict(data or {}))

    def all(self) -> dict[str, dict[str, Any]]:
        reader = self._reader()
        try:
            return reader.checkpoints(self._step_id)
        finally:
            reader.close()

    def clear(self) -> None:
        if self._ledger is not None:
            self._ledger.clear_checkpoints(self._step_id)


class _RecordedPlan(PlanResult):
    """A plan read back from the ledger: its fingerprint is the one recorded with it (the step's own PlanResult
    subclass may compute fingerprints differently, e.g. Terraform's ignores the plan file's name)."""

    recorded_fingerprint: str = ""
    age_note: str = ""

    def fingerprint(self) -> str:
        return self.recorded_fingerprint


class Engine:
    def __init__(self, config: Config, env_name: str | None, reporter: Reporter, *, command: str = "") -> None:
        self.config = config
        self.env = config.env(env_name)
        self.env_name = self.env.name
        self.reporter = reporter
        self.command = command or "bpmigrate"
        self.graph: Graph = load_graph(config.phases_dir)
        validate_settings(config, self.graph)
        self.ledger_url = config.ledger_url(self.env_name)
        self._ledger: Ledger | None = None
        self._adapters: Adapters | None = None
        self.run_id: int | None = None
        #: step ids the operator asked to re-take (`apply --step X --refresh`): applied again even if verified
        self.refresh: frozenset[str] = frozenset()
        self._lock: LeaseLock | None = None
        # every child carries BPMIGRATE_RUN=<env>@<ledger>:<run id>:<our pid> (migrate/adapters/proc.py)
        _proc.set_run_marker(self.env_name, scope=_proc.ledger_scope(self.ledger_url))

    # -- resources -------------------------------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.ledger_url, self.env_name)
        return self._ledger

    def reader(self) -> LedgerReader:
        return LedgerReader(self.ledger_url, self.env_name)

    @property
    def adapters(self) -> Adapters:
        if self._adapters is None:
            self._adapters = Adapters(self.env, project_root=self.config.root, state_dir=self.config.state_dir)
        return self._adapters

    def close(self) -> None:
        if self._adapters is not None:
            self._adapters.close()
        if self._ledger is not None:
            self._ledger.close()

    @contextmanager
    def session(self, command: str) -> Iterator[None]:
        """A mutating command: take the lock, open a run, reconcile interrupted steps, close everything after."""
        from migrate import ledger_backup

        lock = LeaseLock(self.ledger, command, float(self.env.lock_ttl_seconds))
        lock.acquire()
        self._lock = lock
        if lock.previous is not None:
            p = lock.previous
            self.reporter.message("warn", f"took over a stale lock from {p.holder}@{p.host} pid {p.pid} (`{p.command}`)")
        ledger_backup.before_command(self, command)  # an online snapshot before anything changes
        self.run_id = self.ledger.start_run(command)
        _proc.set_run_marker(self.env_name, self.run_id)
        status = "failed"
        try:
            ledger_backup.record_caller(self)  # against AWS: the run records the caller identity ARN
            self.clean_orphans()  # before reconcile and before any Terraform lock is evaluated
            self.reconcile()
            yield
            status = "ok"
        except Interrupted:
            status = "interrupted"
            raise
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            try:
                self.ledger.end_run(self.run_id, status)
                ledger_backup.after_run(self)  # with an AWS account: a copy to the Terraform state bucket
            finally:
                lock.release()
                _proc.set_run_marker(self.env_name)
                self._lock = None

    # -- contexts --------------------------------------------------------------------------------------------
    def context(self, step: type[Step], *, attempt_id: int | None = None, plan: PlanResult | None = None) -> StepContext:
        reader = self.reader()
        try:
            upstream = reader.outputs()
            intents = reader.intents(attempt_id) if attempt_id else []
        finally:
            reader.close()
        ledger = self._ledger
        run_id = self.run_id

        def write_intent(action: str, details: dict[str, Any]) -> None:
            if ledger is None or attempt_id is None:
                raise UsageError(
                    f"step {step.id} tried to record intent {action!r} outside apply/rollback",
                    "plan and verify must not have side effects",
                    "fix the step: move the side effect into apply()",
                )
            ledger.record_intent(step.id, attempt_id, action, details, run_id)

        def write_artifact(kind: str, path: Any, sha256: str, size: int) -> None:
            if ledger is not None:
                ledger.record_artifact(step.id, kind, path, sha256, size, run_id)

        def write_metrics(values: dict[str, float]) -> None:
            if ledger is not None and attempt_id is not None:
                ledger.record_metrics(attempt_id, values)

        def register_child(pid: int, purpose: str) -> None:
            from migrate.adapters.orphans import start_ticks

            ticks = start_ticks(pid)
            if ledger is not None and ticks is not None:
                ledger.register_child(step.id, pid, ticks, purpose, run_id)

        deadline = time.time() + step.timeout if step.timeout else None
        checkpoints = _LedgerCheckpoints(ledger if attempt_id is not None else None, self.reader, step.id)
        ctx = StepContext(
            step_id=step.id,
            env_name=self.env_name,
            env=self.env,
            settings=self.config.step_settings(self.env_name, step.id),
            settings_model=settings_model_for(self.config, self.env_name, step),
            allowed_upstream=frozenset(d.id for d in self.graph.dependencies(step.id)) if step.id in self.graph.ids else None,
            reverifier=self._reverify,
            targets=self.config.targets_for(self.env_name),
            child_registrar=register_child,
            adapters=self.adapters,
            upstream=upstream,
            state_dir=self.config.state_dir,
            templates_dir=self.config.templates_dir,
            project_root=self.config.root,
            intent_writer=write_intent,
            intents=[i for i in intents],
            checkpoints=checkpoints,
            progress_factory=self.reporter.progress
            if ledger is None or attempt_id is None
            else persisting(self.reporter.progress, lambda snap: ledger.record_progress(step.id, attempt_id, snap)),
            logger=lambda msg: self.reporter.message("note", msg, step.id),
            artifact_writer=write_artifact,
            metrics_writer=write_metrics,
            deadline=deadline,
            plan=plan,
        )
        ctx.run_id = run_id
        ctx.refresh = step.id in self.refresh
        return ctx

    def _reverify(self, step_id: str) -> list[Check]:
        """Another step's verify, now, with its own settings and upstream (``ctx.reverify`` for gates)."""
        step_cls = self.graph.get(step_id)
        ctx = self.context(step_cls)
        step = step_cls()
        reason = step.skip_reason(ctx)
        if reason:
            return [Check(f"{step_id}: skipped in this environment", True, reason, "")]
        return step.verify(ctx)

    def _plan_one(self, step: Step, ctx: StepContext) -> PlanResult:
        """The engine asks ``skip_reason`` once, before ``plan``: a step that cannot run here is not planned."""
        reason = step.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        return step.plan(ctx)

    def _states(self) -> dict[str, State]:
        reader = self.reader()
        try:
            return {sid: State(row.state) for sid, row in reader.states().items()}
        finally:
            reader.close()

    def state_of(self, step_id: str) -> State:
        return self._states().get(step_id, State.PENDING)

    # -- orphans of a killed run ------------------------------------------------------------------------------
    def clean_orphans(self) -> list[dict[str, Any]]:
        """Stop the children a dead bpmigrate of this environment left running (found by their BPMIGRATE_RUN
        marker; SIGINT → SIGTERM → SIGKILL per process group) and record an ``orphan_cleaned`` event with what was
        stopped. Children registered as long-lived (``ctx.register_child``) are adopted, not stopped."""
        from migrate.adapters.orphans import find_orphans, stop_orphans

        reader = self.reader()
        try:
            registered = reader.registered_children()
        finally:
            reader.close()
        keep = [(int(c["pid"]), int(c["start_ticks"])) for c in registered if "start_ticks" in c]
        orphans, adopted = find_orphans(self.env_name, scope=_proc.ledger_scope(self.ledger_url), adopted=keep)
        for child in adopted:
            self.reporter.message(
                "note", f"adopted pid {child.pid} left running by run {child.marker.run_id} (registered long-lived child)"
            )
            self.ledger.audit("child_adopted", child.to_dict(), run_id=self.run_id)
        if not orphans:
            return []
        shown = ", ".join(f"pid {o.pid} ({o.command.split(' ')[0].rsplit('/', 1)[-1]})" for o in orphans[:6])
        self.reporter.message(
            "warn", f"stopping {len(orphans)} orphaned process(es) of a killed bpmigrate of {self.env_name!r}: {shown}"
        )
        stopped = stop_orphans(orphans)
        self.ledger.audit("orphan_cleaned", {"processes": stopped, "count": len(stopped)}, run_id=self.run_id)
        return stopped

    # -- reconcile ---------------------------------------------------------------------------------------------
    def reconcile(self) -> list[StepOutcome]:
        """Find steps a killed run left mid-transition, decide from recorded intent and verify, record the decision."""
        decided: list[StepOutcome] = []
        reader = self.reader()
        try:
            rows = reader.states()
        finally:
            reader.close()
        for step_id, row in rows.items():
            state = State(row.state)
            if state not in IN_FLIGHT:
                continue
            try:
                step_cls = self.graph.get(step_id)
            except UsageError:
                continue
            step = step_cls()
            ctx = self.context(step_cls, attempt_id=row.attempt_id)
            self.reporter.message("warn", f"was interrupted while {state.value} (recorded intents: {len(ctx.intents)}); reconciling", step_id)
            if state == State.APPLYING:
                evidence = self._probe(step, ctx)
                decision = "effect in place" if evidence["in_place"] else "effect absent or partial"
                self.ledger.transition(
                    step_id,
                    Event.RECOVER_APPLY_FAILED,
                    run_id=self.run_id,
                    reason=f"interrupted while applying; reconciled: {decision}; apply resumes idempotently",
                    data={"reconcile": evidence},
                )
                decided.append(StepOutcome(step_id, "reconcile", State.APPLY_FAILED.value, decision))
            elif state == State.VERIFYING:
                self.ledger.transition(step_id, Event.RECOVER_VERIFY, run_id=self.run_id, reason="interrupted while verifying")
                decided.append(StepOutcome(step_id, "reconcile", State.APPLIED.value, "verify will run again"))
            elif state == State.ROLLING_BACK:
                try:
                    self._with_retry(step_cls, lambda: step.reconcile_rollback(ctx))  # noqa: B023 - called immediately
                    self.ledger.transition(
                        step_id,
                        Event.RECOVER_ROLLED_BACK,
                        run_id=self.run_id,
                        reason="interrupted while rolling back; rollback completed on resume",
                        data={"intents": ctx.intents},
                    )
                    decided.append(StepOutcome(step_id, "reconcile", State.ROLLED_BACK.value, "rollback completed"))
                except Exception as exc:  # noqa: BLE001 - recorded, then surfaced by status
                    self.ledger.transition(
                        step_id, Event.RECOVER_ROLLBACK_FAILED, run_id=self.run_id, error=_describe(exc), data={"intents": ctx.intents}
                    )
                    decided.append(StepOutcome(step_id, "reconcile", State.ROLLBACK_FAILED.value, _describe(exc)))
            self.reporter.message("warn", f"reconciled: {decided[-1].state} ({decided[-1].detail})", step_id)
        return decided

    def _probe(self, step: Step, ctx: StepContext) -> dict[str, Any]:
        try:
            in_place = bool(step.reconcile(ctx))
            error = ""
        except Exception as exc:  # noqa: BLE001 - evidence only
            in_place, error = False, _describe(exc)
        return {"in_place": in_place, "intents": [i["action"] for i in ctx.intents], "probe_error": error}

    # -- plan ----------------------------------------------------------------------------------------------
    def plan_steps(self, steps: list[type[Step]], *, record: bool) -> list[tuple[type[Step], PlanResult | None, str]]:
        """Plan each step (read-only). Steps whose dependencies are not yet in place get a plan with unknowns."""
        from migrate.samples import refuse_samples

        refuse_samples(self.config, self.env_name, steps)  # outside a sandbox no setting may point at a sample
        states = self._states()
        from migrate.render import fmt_duration
        from migrate.status import estimate, latest_rehearsals

        rehearsals = latest_rehearsals(self.config, self.env_name)
        results: list[tuple[type[Step], PlanResult | None, str]] = []
        for step_cls in steps:
            state = states.get(step_cls.id, State.PENDING)
            note = ""
            waiting = [d for d in step_cls.depends_on if states.get(d, State.PENDING) not in SATISFIES_DEPENDENCY]
            plan: PlanResult | None
            if state == State.VERIFIED:
                plan, note = None, "already verified: nothing to do"
            elif state == State.SKIPPED and self._manual_skip(step_cls.id):
                plan, note = None, "skipped by an operator (bpmigrate mark)"
            else:
                ctx = self.context(step_cls)
                try:
                    plan = self._plan_one(step_cls(), ctx)
                except BpmError as exc:
                    if waiting:
                        plan = PlanResult(unknown=[f"depends on {', '.join(waiting)} (not applied yet): {exc.what}"])
                    else:
                        raise
                if waiting:
                    plan.unknown.append(f"runs after {', '.join(waiting)}; details known once they are applied")
                size = plan.data.get("size") if isinstance(plan.data.get("size"), dict) else None
                est = estimate(rehearsals.get(step_cls.id), size)
                note = f"state: {state.value} · estimate: {fmt_duration(est) if est is not None else 'no estimate'}"
            results.append((step_cls, plan, note))
            self.reporter.plan(step_cls.id, step_cls.display_title(), plan, note)
            if record and plan is not None:
                complete = not plan.unknown and not waiting
                self.ledger.record_plan(step_cls.id, plan.to_dict(), plan.fingerprint(), complete, self.run_id)
                if state in (State.PENDING, State.PLANNED, State.APPLY_FAILED, State.VERIFY_FAILED, State.ROLLED_BACK):
                    self.ledger.transition(step_cls.id, Event.PLAN, run_id=self.run_id, data={"fingerprint": plan.fingerprint()})
        return results

    def _manual_skip(self, step_id: str) -> bool:
        reader = self.reader()
        try:
            row = reader.states().get(step_id)
        finally:
            reader.close()
        return bool(row and row.skip_kind == "manual")

    def _plan_for_apply(
        self, step: Step, ctx: StepContext, state: State, shown_plan: PlanResult | None, *, lazy: bool
    ) -> tuple[PlanResult, bool]:
        """The plan to apply and whether it is already recorded: the one shown by this command when still current,
        else (lazy) a recent recorded one whose inputs are unchanged, else a fresh plan (shown now when lazy)."""
        sid, title = step.id, step.display_title()
        if shown_plan is not None and not shown_plan.skip_reason and step.plan_still_current(ctx, shown_plan):
            self.reporter.message("note", "applying the plan shown above: nothing it was based on changed since", sid)
            return shown_plan, False  # nothing it was based on changed: apply what was shown, without planning twice
        if lazy and (reused := self._reusable_plan(step, ctx)) is not None:
            self.reporter.plan(sid, title, reused, f"reusing the plan recorded {reused.age_note}")
            return reused, True
        plan = self._plan_one(step, ctx)
        if lazy:
            self.reporter.plan(sid, title, plan, f"state: {state.value}")
        return plan, False

    def _reusable_plan(self, step: Step, ctx: StepContext) -> _RecordedPlan | None:
        """The step's recorded plan (by `plan`, or by an apply that was interrupted before using it up) when it is
        younger than ``plan_reuse_seconds``, complete, and the step proves nothing it was based on changed
        (``plan_still_current``: for Terraform, the saved file, the state serial, the root and its variables)."""
        max_age = float(self.env.plan_reuse_seconds)
        if max_age <= 0:
            return None
        reader = self.reader()
        try:
            row = reader.plans().get(step.id)
        finally:
            reader.close()
        if row is None or row.consumed_at is not None or not row.complete:
            return None
        age = time.time() - row.created_at
        doc = row.summary
        if age > max_age or doc.get("skip_reason") or doc.get("unknown"):
            return None
        plan = _RecordedPlan(
            changes=[Change(**c) for c in doc.get("changes", [])],
            in_place=list(doc.get("in_place", [])),
            findings=[Finding(**f) for f in doc.get("findings", [])],
            data=dict(doc.get("data", {})),
        )
        plan.recorded_fingerprint = row.fingerprint
        plan.age_note = f"{age:.0f}s ago (inputs unchanged)"
        try:
            current = step.plan_still_current(ctx, plan)
        except Exception:  # noqa: BLE001 - any doubt: plan again
            current = False
        return plan if current else None

    # -- apply ---------------------------------------------------------------------------------------------
    def apply(self, steps: list[type[Step]], *, confirm: Confirm, assume_yes: bool) -> RunResult:
        """Apply the selected steps in order, verifying each.

        ``assume_yes``: lazily — each step is planned (or a plan recorded less than ``plan_reuse_seconds`` ago is
        reused when the step proves its inputs unchanged), shown and recorded right before its own apply, so a run
        killed anywhere keeps every step before it. Otherwise every plan is shown first and confirmed once; each is
        still recorded right before its apply, which applies it only while it is current (else re-plans and refuses
        a plan that changed)."""
        result = RunResult()
        states = self._states()
        todo = [s for s in steps if states.get(s.id, State.PENDING) != State.VERIFIED or s.id in self.refresh]
        todo = [s for s in todo if not (states.get(s.id) == State.SKIPPED and self._manual_skip(s.id))]
        still_skipped = []
        for step_cls in todo:  # skipped for an environment reason: re-check the reason, cheaply, before planning
            if states.get(step_cls.id) == State.SKIPPED:
                reason = step_cls().skip_reason(self.context(step_cls))
                if reason:
                    still_skipped.append(step_cls)
                    self.reporter.message("note", f"still skipped: {reason}", step_cls.id)
        todo = [s for s in todo if s not in still_skipped]
        if not todo:
            result.nothing_to_do = True
            self.reporter.message("ok", f"nothing to do: all {len(steps)} selected step(s) are already verified or skipped")
            return result
        self._check_dependencies(todo, states)
        if assume_yes:
            # lazy: plan (or reuse a recent recorded plan), show and record each step right before its apply, so
            # a run interrupted anywhere has kept every step before it, and --yes costs no upfront plan of every
            # Terraform module
            for step_cls in todo:
                self._check_lock()
                self._apply_one(step_cls, None, result, None, lazy=True)
            return result
        # interactive: every plan is shown first and confirmed once; each is still recorded right before its apply
        shown = self.plan_steps(todo, record=False)
        shown_fp = {s.id: (p.fingerprint() if p and not p.unknown else None) for s, p, _ in shown}
        shown_plans = {s.id: p for s, p, _ in shown if p is not None and not p.unknown}
        self._check_saved_plans(shown)
        needs_confirm = any(p is not None and not p.is_noop for _, p, _ in shown) or any(s.destructive for s in todo)
        if needs_confirm and not assume_yes:
            destructive = [s.id for s in todo if s.destructive]
            question = f"Apply {len(todo)} step(s) to {self.env_name!r}?"
            if destructive:
                question += f" (destructive: {', '.join(destructive)})"
            if not confirm(question):
                raise NotConfirmed(
                    "apply cancelled: nothing was changed",
                    "the plan above was not confirmed",
                    f"review it, then re-run with --yes: bpmigrate --env {self.env_name} apply ... --yes",
                )
        for step_cls in todo:
            self._check_lock()
            self._apply_one(step_cls, shown_fp.get(step_cls.id), result, shown_plans.get(step_cls.id))
        return result

    def _check_dependencies(self, todo: list[type[Step]], states: dict[str, State]) -> None:
        planned = {s.id for s in todo}
        for step_cls in todo:
            for dep in step_cls.depends_on:
                if dep in planned:
                    continue
                if states.get(dep, State.PENDING) not in SATISFIES_DEPENDENCY:
                    raise DependencyNotReady(
                        f"step {step_cls.id} depends on {dep}, which is {states.get(dep, State.PENDING).value}",
                        "a step cannot apply before its dependencies are verified (or explicitly skipped)",
                        f"bpmigrate --env {self.env_name} apply --step {dep}   (or apply --from {dep})",
                    )

    def _check_saved_plans(self, shown: list[tuple[type[Step], PlanResult | None, str]]) -> None:
        reader = self.reader()
        try:
            saved = reader.plans()
        finally:
            reader.close()
        for step_cls, plan, _ in shown:
            row = saved.get(step_cls.id)
            if plan is None or row is None or row.consumed_at is not None or not row.complete or plan.unknown:
                continue
            if row.summary.get("source") == "apply" or getattr(plan, "recorded_fingerprint", None) == row.fingerprint:
                continue  # recorded by an apply right before applying (not reviewed by `plan`), or this very plan
            if row.fingerprint != plan.fingerprint():
                raise StalePlan(
                    f"the saved plan for {step_cls.id} is stale (planned {row.fingerprint}, now {plan.fingerprint()})",
                    "the world or the configuration changed since `bpmigrate plan` was run",
                    f"bpmigrate --env {self.env_name} plan {step_cls.id}   (review the new plan, then apply again)",
                )

    def _refreshed(self, step_id: str, state: State) -> State:
        """`apply --step X --refresh` on an applied/verified step: plan it again, with the reason in the ledger."""
        if step_id in self.refresh and state in (State.APPLIED, State.VERIFIED):
            reason = "apply --refresh: re-take requested by the operator"
            return self.ledger.transition(step_id, Event.REFRESH, run_id=self.run_id, reason=reason)
        return state

    def _apply_one(
        self,
        step_cls: type[Step],
        shown_fingerprint: str | None,
        result: RunResult,
        shown_plan: PlanResult | None = None,
        *,
        lazy: bool = False,
    ) -> None:
        step = step_cls()
        state = self._refreshed(step_cls.id, self.state_of(step_cls.id))
        if state == State.APPLIED:
            self._verify_one(step_cls, result)
            return
        ctx = self.context(step_cls)
        reason = step.skip_reason(ctx)
        if reason:
            if state != State.SKIPPED:
                self.ledger.transition(step_cls.id, Event.SKIP, run_id=self.run_id, reason=reason, skip_kind="auto")
            self.reporter.message("warn", f"skipped: {reason}", step_cls.id)
            result.add(step_cls.id, "apply", State.SKIPPED, reason)
            return
        self._check_dependencies([step_cls], self._states())
        if step_cls.gate and not self._gate_approved(step_cls.id):
            raise GateWaiting(
                f"step {step_cls.id} waits at a manual gate: {step_cls.gate}",
                "an operator must confirm the manual precondition before this step runs",
                f"bpmigrate --env {self.env_name} approve {step_cls.id} --reason '...'   then apply again",
            )
        plan, recorded = self._plan_for_apply(step, ctx, state, shown_plan, lazy=lazy)
        if plan.skip_reason:
            self.ledger.transition(step_cls.id, Event.SKIP, run_id=self.run_id, reason=plan.skip_reason, skip_kind="auto")
            result.add(step_cls.id, "apply", State.SKIPPED, plan.skip_reason)
            self.reporter.message("warn", f"skipped: {plan.skip_reason}", step_cls.id)
            return
        if plan.blocking:
            lines = "; ".join(f"{f.message} (fix: {f.fix})" if f.fix else f.message for f in plan.blocking)
            raise StepFailed(
                f"step {step_cls.id} cannot apply: {lines}",
                "its plan reported blocking findings",
                f"fix them, then: bpmigrate --env {self.env_name} plan {step_cls.id}",
            )
        if shown_fingerprint is not None and plan.fingerprint() != shown_fingerprint:
            raise StalePlan(
                f"the plan for {step_cls.id} changed between showing it and applying it",
                "something changed the target while this command ran",
                f"bpmigrate --env {self.env_name} plan {step_cls.id}",
            )
        if lazy:
            self._check_saved_plans([(step_cls, plan, "")])
        if not recorded:  # the saved-plan guarantee: what is applied was recorded (and shown) first
            self.ledger.record_plan(
                step_cls.id, {**plan.to_dict(), "source": "apply"}, plan.fingerprint(), not plan.unknown, self.run_id
            )
        new_state = self.ledger.transition(step_cls.id, Event.BEGIN_APPLY, run_id=self.run_id, data={"fingerprint": plan.fingerprint()})
        attempt_id = self._open_attempt(step_cls.id)
        ctx = self.context(step_cls, attempt_id=attempt_id, plan=plan)
        self.reporter.step_started(step_cls.id, "apply")
        started = time.monotonic()
        try:
            outputs = self._run_guarded(step_cls, lambda: step.apply(ctx))
        except KeyboardInterrupt:
            self.ledger.transition(step_cls.id, Event.APPLY_FAIL, run_id=self.run_id, error="interrupted by the operator (Ctrl-C)")
            raise Interrupted(
                f"apply of {step_cls.id} interrupted",
                "Ctrl-C; the ledger records the step as apply_failed and apply is idempotent",
                f"bpmigrate --env {self.env_name} apply   (resumes where it stopped)",
            ) from None
        except Exception as exc:  # recorded, then re-raised as a StepFailed
            detail = _describe(exc)
            self.ledger.transition(step_cls.id, Event.APPLY_FAIL, run_id=self.run_id, error=detail)
            self.reporter.step_finished(step_cls.id, "apply", False, detail, time.monotonic() - started)
            result.add(step_cls.id, "apply", State.APPLY_FAILED, detail)
            raise _as_step_failed(exc, step_cls.id, "apply", self.env_name) from exc  # --traceback: the step's frames
        self.ledger.transition(
            step_cls.id,
            Event.APPLY_OK,
            run_id=self.run_id,
            outputs=dict(outputs or {}),
            definition_checksum=step_cls.definition_checksum(),
        )
        self.ledger.consume_plan(step_cls.id)
        self.reporter.step_finished(step_cls.id, "apply", True, "", time.monotonic() - started)
        del new_state
        self._verify_one(step_cls, result)

    def _open_attempt(self, step_id: str) -> int:
        reader = self.reader()
        try:
            row = reader.states()[step_id]
        finally:
            reader.close()
        if row.attempt_id is None:
            raise LedgerError(f"step {step_id} has no open attempt", "ledger inconsistency", "bpmigrate ledger check")
        return int(row.attempt_id)

    def _gate_approved(self, step_id: str) -> bool:
        reader = self.reader()
        try:
            return bool(reader.approvals(step_id))
        finally:
            reader.close()

    # -- verify --------------------------------------------------------------------------------------------
    def verify(self, steps: list[type[Step]]) -> RunResult:
        result = RunResult()
        states = self._states()
        targets = [s for s in steps if states.get(s.id, State.PENDING) in (State.APPLIED, State.VERIFIED, State.VERIFY_FAILED)]
        if not targets:
            result.nothing_to_do = True
            self.reporter.message("ok", "nothing to verify: no selected step has been applied")
            return result
        for step_cls in targets:
            self._verify_one(step_cls, result)
        return result

    def _verify_one(self, step_cls: type[Step], result: RunResult) -> None:
        step = step_cls()
        self.ledger.transition(step_cls.id, Event.BEGIN_VERIFY, run_id=self.run_id)
        ctx = self.context(step_cls, attempt_id=self._open_attempt(step_cls.id))
        self.reporter.step_started(step_cls.id, "verify")
        started = time.monotonic()
        try:
            checks = self._run_guarded(step_cls, lambda: step.verify(ctx))
        except KeyboardInterrupt:
            self.ledger.transition(step_cls.id, Event.VERIFY_FAIL, run_id=self.run_id, error="interrupted by the operator")
            raise Interrupted(f"verify of {step_cls.id} interrupted", "Ctrl-C", f"bpmigrate --env {self.env_name} verify {step_cls.id}") from None
        except Exception as exc:
            detail = _describe(exc)
            self.ledger.transition(step_cls.id, Event.VERIFY_FAIL, run_id=self.run_id, error=detail)
            self.reporter.step_finished(step_cls.id, "verify", False, detail, time.monotonic() - started)
            result.add(step_cls.id, "verify", State.VERIFY_FAILED, detail)
            raise _as_step_failed(exc, step_cls.id, "verify", self.env_name) from exc  # --traceback: the step's frames
        self.reporter.checks(step_cls.id, checks)
        failed = [c for c in checks if not c.ok]
        data = {"checks": [_check_dict(c) for c in checks]}
        if failed:
            detail = "; ".join(f"{c.name}: observed {c.observed!r}, expected {c.expected!r}" for c in failed[:5])
            self.ledger.transition(step_cls.id, Event.VERIFY_FAIL, run_id=self.run_id, error=detail, data=data)
            self.reporter.step_finished(step_cls.id, "verify", False, detail, time.monotonic() - started)
            result.add(step_cls.id, "verify", State.VERIFY_FAILED, detail)
            raise VerifyFailed(
                f"verify of {step_cls.id} failed: {len(failed)} of {len(checks)} check(s)",
                detail,
                f"inspect with `bpmigrate --env {self.env_name} show {step_cls.id}`; fix, then `bpmigrate verify {step_cls.id}`"
                f" or roll back with `bpmigrate rollback --step {step_cls.id}`",
            )
        self.ledger.transition(step_cls.id, Event.VERIFY_OK, run_id=self.run_id, data=data)
        self.reporter.step_finished(step_cls.id, "verify", True, f"{len(checks)} check(s) passed", time.monotonic() - started)
        result.add(step_cls.id, "verify", State.VERIFIED)

    # -- rollback ------------------------------------------------------------------------------------------
    def rollback_targets(
        self, *, step: str | None = None, phase: int | None = None, to: str | None = None
    ) -> list[type[Step]]:
        """The steps to unwind, newest first. Default: the last applied step."""
        reader = self.reader()
        try:
            order = reader.applied_order()
            states = {k: State(v.state) for k, v in reader.states().items()}
        finally:
            reader.close()
        rollbackable = [sid for sid in order if states.get(sid) in ROLLBACKABLE]
        # failed applies have no applied_at but may have left effects behind
        rollbackable += [sid for sid, st in states.items() if st in ROLLBACKABLE and sid not in rollbackable]
        known = {s.id for s in self.graph.steps}
        rollbackable = [sid for sid in rollbackable if sid in known]
        if step is not None:
            self.graph.get(step)
            chosen = [step] if step in rollbackable else []
        elif phase is not None:
            chosen = [sid for sid in rollbackable if self.graph.get(sid).phase == phase]
        elif to is not None:
            self.graph.get(to)
            if to in order:
                after = order[order.index(to) + 1 :]
            else:
                after = [s.id for s in self.graph.steps[self.graph.index(to) + 1 :]]
            chosen = [sid for sid in rollbackable if sid in after]
        else:
            chosen = rollbackable[-1:] if rollbackable else []
        if to is not None:  # also every applied step after X in plan order (e.g. one that was skipped, then applied)
            after_in_plan = {s.id for s in self.graph.steps[self.graph.index(to) + 1 :]}
            chosen += [sid for sid in rollbackable if sid in after_in_plan and sid not in chosen]
        # unwind in reverse plan order: the reverse of the order they were applied in, and always dependents first
        position = {sid: i for i, sid in enumerate(self.graph.ids)}
        chosen.sort(key=lambda sid: position[sid], reverse=True)
        return [self.graph.get(sid) for sid in chosen]

    def rollback(
        self, targets: list[type[Step]], *, confirm: Confirm, assume_yes: bool, force_past_fence: bool, what: str
    ) -> RunResult:
        result = RunResult()
        if not targets:
            result.nothing_to_do = True
            self.reporter.message("ok", f"nothing to roll back for {what}: no matching step has been applied in {self.env_name!r}")
            return result
        states = self._states()
        chosen = {s.id for s in targets}
        for step_cls in targets:
            blockers = [
                d.id for d in self.graph.dependents(step_cls.id) if d.id not in chosen and states.get(d.id) in ROLLBACKABLE
            ]
            if blockers:
                raise DependencyNotReady(
                    f"cannot roll back {step_cls.id}: {', '.join(blockers)} depend on it and are still applied",
                    "rolling back a dependency under live dependents would break them",
                    f"bpmigrate --env {self.env_name} rollback --to {step_cls.id}  (unwinds everything after it), "
                    f"then rollback --step {step_cls.id}",
                )
        fences = [s for s in targets if s.reversibility == Reversibility.ONE_WAY]
        if fences and not force_past_fence:
            names = ", ".join(s.id for s in fences)
            raise FenceRefused(
                f"rollback would cross the one-way step(s) {names}",
                "a one-way step cannot be undone (data or traffic has moved on); crossing it needs a deliberate decision",
                f"read `bpmigrate show {fences[0].id}`; if you are sure: add --force-past-fence",
            )
        for step_cls in targets:
            self.reporter.message("warn", f"will roll back ({step_cls.reversibility.value}): {step_cls.display_title()}", step_cls.id)
        if not assume_yes and not confirm(f"Roll back {len(targets)} step(s) in {self.env_name!r}?"):
            raise NotConfirmed(
                "rollback cancelled: nothing was changed",
                "the rollback was not confirmed",
                f"re-run with --yes: {self.command} --yes",
            )
        for step_cls in targets:
            self._check_lock()
            step = step_cls()
            self.ledger.transition(step_cls.id, Event.BEGIN_ROLLBACK, run_id=self.run_id, data={"forced_fence": force_past_fence})
            ctx = self.context(step_cls, attempt_id=self._open_attempt(step_cls.id))
            ctx.force_past_fence = force_past_fence
            self.reporter.step_started(step_cls.id, "rollback")
            started = time.monotonic()
            try:
                self._run_guarded(step_cls, lambda: step.rollback(ctx))  # noqa: B023 - called immediately
            except KeyboardInterrupt:
                self.ledger.transition(step_cls.id, Event.ROLLBACK_FAIL, run_id=self.run_id, error="interrupted by the operator")
                raise Interrupted(f"rollback of {step_cls.id} interrupted", "Ctrl-C", f"bpmigrate --env {self.env_name} rollback --step {step_cls.id}") from None
            except Exception as exc:
                detail = _describe(exc)
                self.ledger.transition(step_cls.id, Event.ROLLBACK_FAIL, run_id=self.run_id, error=detail)
                self.reporter.step_finished(step_cls.id, "rollback", False, detail, time.monotonic() - started)
                result.add(step_cls.id, "rollback", State.ROLLBACK_FAILED, detail)
                if isinstance(exc, FenceRefused):
                    raise
                raise _as_step_failed(exc, step_cls.id, "rollback", self.env_name) from exc  # --traceback: the step's frames
            self.ledger.transition(step_cls.id, Event.ROLLBACK_OK, run_id=self.run_id)
            self.reporter.step_finished(step_cls.id, "rollback", True, "", time.monotonic() - started)
            result.add(step_cls.id, "rollback", State.ROLLED_BACK)
        return result

    # -- escape hatches ----------------------------------------------------------------------------------
    def check_mark(self, step_id: str, as_state: str, reason: str) -> Event:
        """Validate a mark request before anything is written (the CLI calls this before taking the lock)."""
        self.graph.get(step_id)
        if not reason.strip():
            raise UsageError("mark needs --reason", "escape hatches are audited", f"bpmigrate mark {step_id} --as {as_state} --reason '...'")
        ev = {"verified": Event.MARK_VERIFIED, "skipped": Event.MARK_SKIPPED}.get(as_state)
        if ev is None:
            raise UsageError(f"cannot mark as {as_state!r}", "mark accepts --as verified or --as skipped", f"bpmigrate mark {step_id} --as skipped --reason '...'")
        return ev

    def mark(self, step_id: str, as_state: str, reason: str) -> State:
        ev = self.check_mark(step_id, as_state, reason)
        step_cls = self.graph.get(step_id)
        return self.ledger.transition(
            step_cls.id, ev, run_id=self.run_id, reason=f"marked by operator: {reason}", skip_kind="manual", data={"audited": True}
        )

    def check_approve(self, step_id: str) -> type[Step]:
        step_cls = self.graph.get(step_id)
        if not step_cls.gate:
            raise UsageError(f"step {step_id} has no manual gate", "only gated steps need approval", f"bpmigrate show {step_id}")
        return step_cls

    def approve(self, step_id: str, reason: str) -> None:
        step_cls = self.check_approve(step_id)
        self.ledger.audit("gate_approved", {"reason": reason, "gate": step_cls.gate}, step_id=step_id, run_id=self.run_id)

    # -- internals ---------------------------------------------------------------------------------------
    def _check_lock(self) -> None:
        if self._lock is not None and self._lock.lost:
            raise LedgerError(
                "this process lost the environment lock (someone ran `unlock --force`)",
                "continuing could interleave two operators' changes",
                "bpmigrate status  (see who holds the lock now)",
            )

    def _run_guarded(self, step_cls: type[Step], fn: Callable[[], Any]) -> Any:
        return self._with_retry(step_cls, lambda: _with_timeout(step_cls, fn))

    def _with_retry(self, step_cls: type[Step], fn: Callable[[], Any]) -> Any:
        policy = step_cls.retry
        if policy.attempts <= 1:
            return fn()
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.reporter.message("warn", f"attempt {state.attempt_number} failed ({_describe(exc)}); retrying", step_cls.id)
            if self._ledger is not None:
                self._ledger.audit("retry", {"attempt": state.attempt_number, "error": _describe(exc)}, step_id=step_cls.id, run_id=self.run_id)

        for attempt in Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait_exponential(multiplier=policy.wait_initial, max=policy.wait_max),
            retry=retry_if_exception_type(policy.retry_on),
            reraise=True,
            before_sleep=before_sleep,
        ):
            with attempt:
                return fn()
        return None  # pragma: no cover


def _with_timeout(step_cls: type[Step], fn: Callable[[], Any]) -> Any:
    timeout = step_cls.timeout
    if not timeout or threading.current_thread() is not threading.main_thread():
        return fn()

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise StepTimeout(
            f"step {step_cls.id} exceeded its timeout of {timeout:.0f}s",
            "the step's work took longer than allowed",
            "raise the timeout in the step or investigate the stuck operation, then re-run (apply is idempotent)",
        )

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    if isinstance(exc, BpmError):
        return redact(f"{exc.what}" + (f" ({exc.why})" if exc.why else ""))
    return redact(f"{type(exc).__name__}: {exc}")


def _check_dict(check: Check) -> dict[str, Any]:
    return {"name": check.name, "ok": check.ok, "observed": check.observed, "expected": check.expected, "detail": check.detail}


def _as_step_failed(exc: BaseException, step_id: str, action: str, env: str) -> BpmError:
    if isinstance(exc, BpmError) and not isinstance(exc, (StepFailed,)) and exc.exit_code != 1:
        return exc  # blocked / usage errors keep their own exit code
    if isinstance(exc, BpmError):
        return StepFailed(
            f"{action} of {step_id} failed: {exc.what}",
            exc.why,
            exc.next_cmd or f"fix the cause, then: bpmigrate --env {env} {action} --step {step_id}",
        )
    return StepFailed(
        f"{action} of {step_id} failed: {type(exc).__name__}: {redact(str(exc))}",
        f"an unexpected error escaped the step{_origin(exc)} (re-run with --traceback to see the step's frames)",
        f"bpmigrate --env {env} show {step_id}; after fixing: bpmigrate --env {env} apply --step {step_id}",
    )


def _origin(exc: BaseException) -> str:
    """Where an unexpected error came from: the innermost frame of the step's own code (the phases) and the adapter
    call below it, e.g. " in p2_data/_common.py:231 (_redis_counts), inside the adapter call
    migrate/adapters/redis.py:245 (dbsize)". Library and engine frames are skipped."""
    import sysconfig
    import traceback
    from pathlib import Path

    engine_root = Path(__file__).resolve().parent
    libraries = {Path(p).resolve() for k, p in sysconfig.get_paths().items() if k in ("stdlib", "purelib", "platlib")}

    def inside(path: Path, root: Path) -> bool:
        return path == root or root in path.parents

    def short(frame: traceback.FrameSummary) -> str:
        return f"{'/'.join(Path(frame.filename).parts[-3:])}:{frame.lineno} ({frame.name})"

    frames = traceback.extract_tb(exc.__traceback__)
    paths = [Path(f.filename).resolve() for f in frames]
    own = [
        i
        for i, path in enumerate(paths)
        if not inside(path, engine_root) and not any(inside(path, lib) for lib in libraries)
    ]
    if not own:
        return ""
    step_i = own[-1]
    adapters = engine_root / "adapters"
    below = [f for f, path in zip(frames[step_i + 1 :], paths[step_i + 1 :], strict=True) if inside(path, adapters)]
    where = f" in {short(frames[step_i])}"
    if below:
        where += f", inside the adapter call {short(below[0])}"
        if (below[-1].filename, below[-1].lineno) != (below[0].filename, below[0].lineno):
            where += f" -> {short(below[-1])}"
    return where
