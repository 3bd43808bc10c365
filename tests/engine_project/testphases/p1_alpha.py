"""Phase 1 of the engine-test project."""

from __future__ import annotations

import os
import time

from testphases._effects import create_once, exists, maybe_die, remove

from migrate.errors import StepFailed, TransientError
from migrate.step import Change, Check, Outputs, PlanResult, RetryPolicy, Reversibility, Step, StepContext, StepSettings


class FileStep(Step):
    """Base: create one file; verify it exists; rollback removes it."""

    filename = ""

    class Settings(StepSettings):
        """The keys the engine tests configure (a step's settings are declared, or refused when migrate.toml loads)."""

        jobs: int = 1
        x: int = 0
        source_files: list[str] = []

    def plan(self, ctx: StepContext) -> PlanResult:
        if exists(ctx, self.filename):
            return PlanResult(in_place=[self.filename])
        return PlanResult(changes=[Change("create", self.filename)])

    def apply(self, ctx: StepContext) -> Outputs:
        if os.environ.get("BPM_TEST_FAIL") == self.id:
            raise StepFailed(f"{self.id} failed on purpose", "BPM_TEST_FAIL", "unset it")
        maybe_die(self.id, "before-intent")
        ctx.intent("create-file", name=self.filename)
        maybe_die(self.id, "after-intent")
        sleep = os.environ.get("BPM_TEST_SLEEP", "")
        if sleep.startswith(f"{self.id}:"):
            time.sleep(float(sleep.split(":")[1]))
        steps_ = os.environ.get("BPM_TEST_PROGRESS", "")  # "<step>:<n>": report n rows, 0.2 s apart
        if steps_.startswith(f"{self.id}:"):
            total = int(steps_.split(":")[1])
            with ctx.progress("copy rows", total=total, unit="rows") as bar:
                for _ in range(total):
                    time.sleep(0.2)
                    bar.advance(1)
        create_once(ctx, self.filename, self.id)
        maybe_die(self.id, "after-effect")
        return {"file": self.filename, "db_url": "postgresql://app:hunter2secret@db:5432/x"}

    def verify(self, ctx: StepContext) -> list[Check]:
        ok = exists(ctx, self.filename) and os.environ.get("BPM_TEST_VERIFY_FAIL") != self.id
        return [Check("file exists", ok, observed=exists(ctx, self.filename), expected=True)]

    def rollback(self, ctx: StepContext) -> None:
        maybe_die(self.id, "rollback-before")
        ctx.intent("remove-file", name=self.filename)
        remove(ctx, self.filename)
        maybe_die(self.id, "rollback-after")


class TouchA(FileStep):
    """Create file a."""

    id = "touch-a"
    phase = 1
    filename = "a"


class TouchB(FileStep):
    """Create file b (needs a's output)."""

    id = "touch-b"
    phase = 1
    depends_on = ("touch-a",)
    filename = "b"

    def apply(self, ctx: StepContext) -> Outputs:
        upstream = ctx.output("touch-a", "file")
        out = super().apply(ctx)
        out["upstream"] = upstream
        return out


class Flaky(FileStep):
    """Fails transiently twice, then works (retry policy)."""

    id = "flaky"
    phase = 1
    depends_on = ("touch-a",)
    filename = "flaky"
    retry = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02)

    def apply(self, ctx: StepContext) -> Outputs:
        counter = ctx.state_dir / "work" / "flaky.count"
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
        if n < 2:
            raise TransientError("flaky blip", "simulated network reset", "retry")
        return super().apply(ctx)


class Reversible(FileStep):
    """Reversible file c."""

    id = "touch-c"
    phase = 1
    depends_on = ("touch-b",)
    filename = "c"
    reversibility = Reversibility.REVERSIBLE
