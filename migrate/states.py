"""The step state machine: the ONE place where transitions are decided.

``transition(current, event)`` returns the next state or raises :class:`IllegalTransition` (which writes nothing:
the ledger calls this function before it opens its transaction, and again inside it against the row it locked).
"""

from __future__ import annotations

from enum import StrEnum

from migrate.errors import IllegalTransition


class Reversibility(StrEnum):
    """What a step's rollback can do (declared by the step; rollback refuses to cross ONE_WAY without force)."""


    REVERSIBLE = "reversible"  # rollback restores the exact previous state
    COMPENSABLE = "compensable"  # rollback undoes the effect by a compensating action
    ONE_WAY = "one-way"  # cannot be undone; rollback refuses to cross it without --force-past-fence


#: prefix of a step's definition checksum (a hash of its module file); a checksum recorded by an older bpmigrate (a hash
#: of the class source) has none and is never compared
CHECKSUM_PREFIX = "f1:"


class State(StrEnum):
    PENDING = "pending"
    PLANNED = "planned"
    APPLYING = "applying"
    APPLIED = "applied"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    APPLY_FAILED = "apply_failed"
    VERIFY_FAILED = "verify_failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    SKIPPED = "skipped"


class Event(StrEnum):
    PLAN = "plan"
    BEGIN_APPLY = "begin_apply"
    APPLY_OK = "apply_ok"
    APPLY_FAIL = "apply_fail"
    BEGIN_VERIFY = "begin_verify"
    VERIFY_OK = "verify_ok"
    VERIFY_FAIL = "verify_fail"
    BEGIN_ROLLBACK = "begin_rollback"
    ROLLBACK_OK = "rollback_ok"
    ROLLBACK_FAIL = "rollback_fail"
    SKIP = "skip"
    # audited escape hatches (bpmigrate mark)
    MARK_VERIFIED = "mark_verified"
    MARK_SKIPPED = "mark_skipped"
    # apply --refresh: an applied/verified step is planned again on purpose (e.g. re-take a backup)
    REFRESH = "refresh"
    # reconciliation of a run that was killed mid-transition
    RECOVER_APPLIED = "recover_applied"
    RECOVER_APPLY_FAILED = "recover_apply_failed"
    RECOVER_ROLLED_BACK = "recover_rolled_back"
    RECOVER_ROLLBACK_FAILED = "recover_rollback_failed"
    RECOVER_VERIFY = "recover_verify"


S = State
#: States a step may be *resting* in (not mid-transition).
RESTING = frozenset(s for s in State if s not in (S.APPLYING, S.VERIFYING, S.ROLLING_BACK))
#: States that mean "a command was interrupted mid-flight"; the engine reconciles them before anything else.
IN_FLIGHT = frozenset({S.APPLYING, S.VERIFYING, S.ROLLING_BACK})
#: States from which a fresh apply may start.
APPLYABLE = frozenset({S.PENDING, S.PLANNED, S.APPLY_FAILED, S.VERIFY_FAILED, S.ROLLED_BACK, S.SKIPPED})
#: States whose side effects may exist in the world, and so can be rolled back.
ROLLBACKABLE = frozenset({S.APPLIED, S.VERIFIED, S.VERIFY_FAILED, S.APPLY_FAILED, S.ROLLBACK_FAILED})
#: States that satisfy a dependency.
SATISFIES_DEPENDENCY = frozenset({S.VERIFIED, S.SKIPPED})

_TABLE: dict[Event, tuple[frozenset[State], State]] = {
    Event.PLAN: (frozenset({S.PENDING, S.PLANNED, S.APPLY_FAILED, S.VERIFY_FAILED, S.ROLLED_BACK, S.SKIPPED}), S.PLANNED),
    Event.BEGIN_APPLY: (APPLYABLE, S.APPLYING),
    Event.APPLY_OK: (frozenset({S.APPLYING}), S.APPLIED),
    Event.APPLY_FAIL: (frozenset({S.APPLYING}), S.APPLY_FAILED),
    Event.BEGIN_VERIFY: (frozenset({S.APPLIED, S.VERIFIED, S.VERIFY_FAILED}), S.VERIFYING),
    Event.VERIFY_OK: (frozenset({S.VERIFYING}), S.VERIFIED),
    Event.VERIFY_FAIL: (frozenset({S.VERIFYING}), S.VERIFY_FAILED),
    Event.BEGIN_ROLLBACK: (ROLLBACKABLE, S.ROLLING_BACK),
    Event.ROLLBACK_OK: (frozenset({S.ROLLING_BACK}), S.ROLLED_BACK),
    Event.ROLLBACK_FAIL: (frozenset({S.ROLLING_BACK}), S.ROLLBACK_FAILED),
    Event.SKIP: (frozenset({S.PENDING, S.PLANNED, S.APPLY_FAILED, S.VERIFY_FAILED, S.ROLLED_BACK, S.SKIPPED}), S.SKIPPED),
    Event.MARK_VERIFIED: (RESTING, S.VERIFIED),
    Event.MARK_SKIPPED: (RESTING - {S.APPLIED, S.VERIFIED}, S.SKIPPED),
    Event.REFRESH: (frozenset({S.APPLIED, S.VERIFIED}), S.PLANNED),
    Event.RECOVER_APPLIED: (frozenset({S.APPLYING}), S.APPLIED),
    Event.RECOVER_APPLY_FAILED: (frozenset({S.APPLYING}), S.APPLY_FAILED),
    Event.RECOVER_ROLLED_BACK: (frozenset({S.ROLLING_BACK}), S.ROLLED_BACK),
    Event.RECOVER_ROLLBACK_FAILED: (frozenset({S.ROLLING_BACK}), S.ROLLBACK_FAILED),
    Event.RECOVER_VERIFY: (frozenset({S.VERIFYING}), S.APPLIED),
}

_HINTS: dict[Event, str] = {
    Event.BEGIN_APPLY: "a verified step needs no apply; to redo it run `bpmigrate rollback --step {step}` first",
    Event.BEGIN_VERIFY: "verify needs a step that was applied: run `bpmigrate apply --step {step}`",
    Event.BEGIN_ROLLBACK: "only applied steps can be rolled back; see `bpmigrate show {step}`",
    Event.MARK_SKIPPED: "an applied step must be rolled back before it is skipped: `bpmigrate rollback --step {step}`",
}


def transition(current: State, event: Event, step_id: str = "?") -> State:
    """Return the state ``event`` leads to from ``current``; raise IllegalTransition if it is not allowed."""
    sources, target = _TABLE[event]
    if current not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        hint = _HINTS.get(event, "see `bpmigrate status` for what the step is doing").format(step=step_id)
        raise IllegalTransition(
            f"step {step_id}: cannot {event.value.replace('_', ' ')} while it is {current.value}",
            f"{event.value} is allowed only from: {allowed}",
            hint,
        )
    return target


def allowed_events(current: State) -> list[Event]:
    return [event for event, (sources, _) in _TABLE.items() if current in sources]
