"""The data side of the cutover's switch, as mechanics, every writer being fenced: the forward streams detached while
the reverse ones start and every stack pointed at the target; the same undone before the switch point; the reverse
stream drained before a rollback points the stacks back. ``data-switch`` decides the gates, when to undo and what
it records."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from migrate.step import StepContext

from ._sync import _dms, _pgsync, redis_forward_stop, redis_reverse_start, redis_reverse_stop
from ._writers import Writers, point_stacks

if TYPE_CHECKING:
    from migrate.adapters.pgsync import PgSync


class SwitchSettings(Protocol):
    """The data-switch settings these mechanics read (the step's ``Settings`` has them, and decides the rest)."""

    @property
    def catchup_timeout_s(self) -> float: ...
    @property
    def slot_drop_timeout_s(self) -> float: ...
    @property
    def reverse(self) -> bool: ...
    @property
    def reverse_publisher_host(self) -> str: ...
    @property
    def reverse_publisher_port(self) -> int: ...


@contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """How long the block took, in seconds, as ``timings[key]`` (when it completes)."""
    t = time.monotonic()
    yield
    timings[key] = time.monotonic() - t


def redis_forward_fence(ctx: StepContext, timeout: float) -> dict[str, Any]:
    """Wait until the source -> target follower applied every event written before its fence."""
    from migrate.adapters.redis_sync import fence_follower

    return fence_follower(ctx.adapters.redis("source"), ctx.state_dir / ctx.env_name / "redis-sync", timeout)


def switch(ctx: StepContext, s: SwitchSettings, writers: Writers, out: dict[str, Any], *, redis: bool) -> None:
    """Idempotent steps from the gates to the repointed stacks (a killed run repeats them): the forward streams
    stopped (PostgreSQL subscription detached beside the reverse stream's start, the DMS task, the Redis follower),
    the reverse streams started when ``s.reverse``, every stack and the ConfigMap pointed at the target."""
    pg_out = ctx.upstream.get("pg-sync", {})
    timings: dict[str, float] = out.setdefault("timings", {})
    if pg_out.get("subscription"):
        sync = _pgsync(ctx, pg_out.get("name"))
        with timed(timings, "detach_and_reverse_s"):
            ctx.intent("detach-stream", name=sync.name)
            if s.reverse:  # started beside the detach: the writers are fenced, nothing flows either way
                rev = sync.reverse()
                tables = list(pg_out.get("tables") or []) or [f"{ti.schema}.{ti.name}" for ti in sync.source.tables()]
                conninfo = rev.publisher_conninfo(s.reverse_publisher_host or None, s.reverse_publisher_port or None)
                ctx.intent("start-reverse-stream", name=rev.name, publisher=rev.source.endpoint)
                with ThreadPoolExecutor(max_workers=1) as pool:
                    reverse = pool.submit(rev.start_stream, tables, conninfo)
                    out["detached"] = sync.teardown(timeout=s.slot_drop_timeout_s) or out.get("detached", [])
                    out["reverse"] = {"name": rev.name, "tables": tables, "started": reverse.result()}
            else:
                out["detached"] = sync.teardown(timeout=s.slot_drop_timeout_s) or out.get("detached", [])
    if pg_out.get("driver") == "aws-dms":
        ctx.intent("dms-stop-task")
        out["dms_stopped"] = _dms(ctx).stop(timeout=s.catchup_timeout_s)
    if redis:
        redis_forward_stop(ctx)
        if s.reverse:
            out["redis_reverse"] = redis_reverse_start(ctx)
    with timed(timings, "point_s"):
        out.update(point_stacks(ctx, writers, "target"))
    out["switched_at"] = time.time()


def undo_switch(ctx: StepContext, s: SwitchSettings, writers: Writers, *, redis: bool) -> None:
    """Writers still fenced (nothing wrote): the reverse streams dropped, every stack back on the source, released
    (every fence tried)."""
    pg_out = ctx.upstream.get("pg-sync", {})
    if pg_out.get("subscription"):
        _pgsync(ctx, pg_out.get("name")).reverse().teardown(timeout=s.slot_drop_timeout_s)
    if redis:
        redis_reverse_stop(ctx)
    writers.point("source")
    writers.off_quietly()


def drain_reverse(ctx: StepContext, rev: PgSync, s: SwitchSettings) -> None:
    """Writers fenced: wait until the reverse stream confirmed the target's fence LSN (lag 0), carry the sequences
    back to the source, detach the stream."""
    lsn = rev.fence_lsn()
    waited = rev.wait_confirmed(lsn, s.catchup_timeout_s)
    ctx.intent("set-sequences", target=rev.target.endpoint)
    rev.carry_sequences()
    ctx.intent("detach-reverse-stream", name=rev.name)
    rev.teardown(timeout=s.slot_drop_timeout_s)
    ctx.log(f"data-switch rollback: reverse stream caught up to {lsn} in {waited:.2f}s and was detached")
