"""The one error hierarchy of bpmigrate.

Every error a user can see says three things: what happened, why, and the next command to run. The CLI is the
single error boundary: it prints ``str(error)`` (one red block) and exits with ``error.exit_code``.

Exit codes (documented in the README):

====  ===========================================================================
code  meaning
====  ===========================================================================
0     success (including "nothing to do")
1     a step failed: apply, verify or rollback said no, or an adapter faulted
2     usage or configuration error (bad flag, bad migrate.toml, unknown step)
3     blocked, operator action needed: lock held, gate waiting, stale plan,
      one-way fence, dependency not verified, confirmation declined
4     ledger problem: corrupt or truncated file, schema from a newer bpmigrate,
      broken hash chain
130   interrupted (Ctrl-C); the ledger is consistent and the run resumable
====  ===========================================================================

Tree::

    BpmError
    ├── UsageError (2)
    │   └── ConfigError (2)
    ├── StepError (1)
    │   ├── StepFailed (1)          apply/rollback raised
    │   ├── VerifyFailed (1)        verify returned a failing check
    │   ├── StepTimeout (1)
    │   └── AdapterError (1)        a third-party fault translated at the adapter edge
    │       └── TransientError (1)  retryable (network blips, throttling)
    ├── Blocked (3)
    │   ├── LockHeld (3)
    │   ├── GateWaiting (3)
    │   ├── StalePlan (3)
    │   ├── FenceRefused (3)
    │   ├── DependencyNotReady (3)
    │   ├── IllegalTransition (3)
    │   └── NotConfirmed (3)
    ├── LedgerError (4)
    └── Interrupted (130)
"""

from __future__ import annotations


class BpmError(Exception):
    """Base of every bpmigrate error: what happened, why, and the next command to run."""

    exit_code: int = 1

    def __init__(self, what: str, why: str = "", next_cmd: str = "") -> None:
        from migrate.redact import redact

        self.what = redact(what)
        self.why = redact(why)
        self.next_cmd = redact(next_cmd)
        super().__init__(self.what)

    def __str__(self) -> str:
        parts = [self.what]
        if self.why:
            parts.append(f"why: {self.why}")
        if self.next_cmd:
            parts.append(f"next: {self.next_cmd}")
        return "\n".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "what": self.what,
            "why": self.why,
            "next": self.next_cmd,
            "exit_code": self.exit_code,
        }


class UsageError(BpmError):
    exit_code = 2


class ConfigError(UsageError):
    exit_code = 2


class StepError(BpmError):
    exit_code = 1


class StepFailed(StepError):
    pass


class VerifyFailed(StepError):
    pass


class StepTimeout(StepError):
    pass


class AdapterError(StepError):
    """A fault from the outside world (AWS, PostgreSQL, Redis, Kubernetes, a subprocess), already redacted."""

    def __init__(self, what: str, why: str = "", next_cmd: str = "", *, service: str = "") -> None:
        super().__init__(what, why, next_cmd)
        self.service = service


class TransientError(AdapterError):
    """A fault worth retrying (connection reset, throttling, a server still starting)."""


class Blocked(BpmError):
    exit_code = 3


class LockHeld(Blocked):
    pass


class GateWaiting(Blocked):
    pass


class StalePlan(Blocked):
    pass


class FenceRefused(Blocked):
    pass


class DependencyNotReady(Blocked):
    pass


class IllegalTransition(Blocked):
    pass


class NotConfirmed(Blocked):
    pass


class LedgerError(BpmError):
    exit_code = 4


class Interrupted(BpmError):
    exit_code = 130
