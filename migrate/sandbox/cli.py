"""``bpmigrate sandbox up | down | status | seed | reset`` — parse, call :mod:`migrate.sandbox.orchestrate`, render.

Exit codes follow :mod:`migrate.errors`: 0 ok (including "already up"/"already seeded"), 1 a server fault,
2 usage/config, 3 (status only) the sandbox is not fully up.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from migrate.errors import BpmError

app = typer.Typer(
    name="sandbox",
    help="Local rehearsal environment: moto (AWS), PostgreSQL 16 + pgvector and Redis on loopback, real engines.",
    no_args_is_help=True,
    add_completion=False,
)


@functools.cache
def _out() -> Any:
    from rich.console import Console  # imported lazily: `bpmigrate status` must start fast

    return Console()


@functools.cache
def _err() -> Any:
    from rich.console import Console

    return Console(stderr=True)


ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="Path to migrate.toml (default: search upwards).")
]
EnvOpt = Annotated[
    str | None, typer.Option("--env", "-e", help="Sandbox environment name in migrate.toml [default: sandbox].")
]
T = TypeVar("T")


def _run(call: Callable[[], T], *, json_out: bool = False) -> T:
    """The error boundary of these commands: a BpmError becomes one red block (or JSON) and its exit code."""
    try:
        return call()
    except BpmError as exc:
        if json_out:
            print(json.dumps(exc.to_dict()))
        else:
            _err().print(f"[bold red]error:[/] {exc.what}")
            if exc.why:
                _err().print(f"[red]why:[/] {exc.why}", highlight=False)
            if exc.next_cmd:
                _err().print(f"[yellow]next:[/] {exc.next_cmd}", highlight=False)
        raise typer.Exit(exc.exit_code) from None


def _raise(exc: BpmError) -> None:
    raise exc


def _load(config_path: str | None) -> Any:
    from migrate import config

    return config.load(config_path)


def _resolve(ctx: typer.Context, config: str | None, env: str | None, json_out: bool) -> tuple[str | None, str, bool]:
    """Options given here win; else those given to ``bpmigrate`` itself (``bpmigrate --env x sandbox up``)."""
    root = ctx.find_root().params if ctx.parent is not None else {}
    return (
        config or root.get("config"),
        env or root.get("env") or "sandbox",
        json_out or bool(root.get("json_out")),
    )


def _progress(quiet: bool) -> Callable[[str], None] | None:
    if quiet:
        return None
    return lambda msg: _err().print(f"[dim]{msg}[/]", highlight=False)


def _render_status(st: Any, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    wide = _out().width >= 110
    table.add_column("component")
    if wide:
        table.add_column("role")
    table.add_column("endpoint", overflow="fold")
    table.add_column("pid", justify="right")
    table.add_column("state")
    show_action = any(c.action for c in st.components)
    if show_action:
        table.add_column("this run")
    for comp in st.components:
        state = "[green]● up[/]" if comp.ok else ("[yellow]● not answering[/]" if comp.alive else "[red]○ down[/]")
        row = [comp.name, *([comp.role] if wide else []), comp.endpoint, str(comp.pid or "-"), state]
        if show_action:
            row.append(comp.action)
        table.add_row(*row)
    _out().print(table)
    colour = {"up": "green", "down": "red", "degraded": "yellow"}.get(st.state, "dim")
    _out().print(f"sandbox [bold]{st.env}[/]: [{colour}]{st.state}[/]   data: {st.data_dir}", highlight=False)
    if st.seeded:
        pg = st.seeded.get("postgres") or {}
        rd = st.seeded.get("redis") or {}
        rows = sum((pg.get("rows") or {}).values())
        _out().print(
            f"seeded: PostgreSQL scale={pg.get('scale')} seed={pg.get('seed')} ({rows} rows); "
            f"Redis {rd.get('keys', 0)} keys",
            highlight=False,
        )
    for note in st.notes:
        _out().print(f"[yellow]note:[/] {note}", highlight=False)


@app.command()
def up(
    ctx: typer.Context,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Start moto, source/target PostgreSQL and source/target Redis (idempotent: adopts what already runs)."""
    from migrate.sandbox import orchestrate

    config, env, json_out = _resolve(ctx, config, env, json_out)
    st = _run(lambda: orchestrate.up(_load(config), env, progress=_progress(json_out)), json_out=json_out)
    if json_out:
        print(json.dumps(st.to_dict()))
        return
    if st.already_up:
        _render_status(st, f"sandbox {env} is already up — nothing to do")
    else:
        _render_status(st, f"sandbox {env} is up ({st.seconds:.1f}s)")
        seed_hint = "" if st.seeded else f"bpmigrate sandbox seed --env {env}   then   "
        _out().print(f"next: {seed_hint}bpmigrate --env {env} apply --all --yes", highlight=False)


@app.command()
def down(
    ctx: typer.Context,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    wipe: Annotated[
        bool, typer.Option("--wipe", help="Also delete the data, the stand-in Terraform state and archive the ledger.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Stop every sandbox process (verified by PID). Data is kept unless --wipe."""
    from migrate.sandbox import orchestrate

    config, env, json_out = _resolve(ctx, config, env, json_out)
    st = _run(lambda: orchestrate.down(_load(config), env, wipe=wipe, progress=_progress(json_out)), json_out=json_out)
    if json_out:
        print(json.dumps(st.to_dict()))
        return
    stopped = sum(1 for c in st.components if c.action == "stopped")
    _render_status(st, f"sandbox {env}: stopped {stopped} process(es)" if stopped else f"sandbox {env} was not running")


@app.command()
def status(
    ctx: typer.Context,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show each server: PID alive, answering, endpoint; and whether the source is seeded. Exit 3 unless fully up."""
    from migrate.sandbox import orchestrate

    config, env, json_out = _resolve(ctx, config, env, json_out)
    st = _run(lambda: orchestrate.status(_load(config), env), json_out=json_out)
    if json_out:
        print(json.dumps(st.to_dict()))
    else:
        _render_status(st, f"sandbox {env}")
    if st.state != "up":
        raise typer.Exit(3)


@app.command()
def seed(
    ctx: typer.Context,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    scale: Annotated[int, typer.Option("--scale", min=1, help="Dataset size: 1 ≈ 60 MB (default), 35 ≈ 2 GB.")] = 1,
    seed_value: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same data.")] = 42,
    redis_keys: Annotated[
        int | None, typer.Option("--redis-keys", min=0, help="Redis keys (default 5000 × scale).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing dataset.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Fill the source PostgreSQL and Redis with a deterministic BetterPrompts-shaped dataset (no-op if already)."""
    from migrate.sandbox import orchestrate

    config, env, json_out = _resolve(ctx, config, env, json_out)
    result = _run(
        lambda: orchestrate.seed(
            _load(config),
            env,
            scale=scale,
            seed_value=seed_value,
            redis_keys=redis_keys,
            force=force,
            progress=_progress(json_out),
        ),
        json_out=json_out,
    )
    if json_out:
        print(json.dumps(result.to_dict()))
        return
    pg, rd = result.postgres, result.redis
    if result.skipped:
        _out().print(
            f"sandbox {env} is already seeded (scale={pg['scale']}, seed={pg['seed']}, {pg['total_rows']} rows, "
            f"{sum(rd['per_db'].values())} Redis keys) — nothing to do (use --force to replace it)",
            highlight=False,
        )
        return
    from rich.table import Table

    table = Table(title=f"seeded sandbox {env} (scale {scale}, seed {seed_value}) in {result.seconds:.1f}s")
    table.add_column("table / db")
    table.add_column("rows / keys", justify="right")
    for name, count in pg["rows"].items():
        table.add_row(name, f"{count:,}")
    for db, count in sorted(rd["per_db"].items()):
        table.add_row(f"redis db {db}", f"{count:,}")
    _out().print(table)
    _out().print(
        f"PostgreSQL: {pg['total_rows']:,} rows, {pg['bytes'] / 1e6:.0f} MB in {pg['seconds']:.1f}s; "
        f"Redis: {rd['keys']:,} keys ({rd['with_ttl']:,} with TTL) in {rd['seconds']:.1f}s",
        highlight=False,
    )
    if pg.get("extensions_missing"):
        _out().print(
            f"[yellow]note:[/] extensions not available on this PostgreSQL: {', '.join(pg['extensions_missing'])} "
            "(the source would use them; the data phase reports extension parity)",
            highlight=False,
        )


@app.command()
def reset(
    ctx: typer.Context,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """down --wipe + up: delete every sandbox server's data, archive the ledger and the artifacts (backups, saved
    plans, reports) side by side, start clean (unseeded). The output lists what was archived where."""
    from migrate.sandbox import orchestrate

    config, env, json_out = _resolve(ctx, config, env, json_out)
    if not yes:
        question = (
            f"wipe sandbox {env!r} (server data, stand-in Terraform state; the ledger and artifacts are archived)?"
        )
        if not (sys.stdin.isatty() and typer.confirm(question, default=False)):
            from migrate.errors import NotConfirmed

            _run(
                lambda: _raise(
                    NotConfirmed(
                        "reset not confirmed",
                        "reset deletes the sandbox's data",
                        f"bpmigrate sandbox reset --env {env} --yes",
                    )
                ),
                json_out=json_out,
            )
    st = _run(lambda: orchestrate.reset(_load(config), env, progress=_progress(json_out)), json_out=json_out)
    if json_out:
        print(json.dumps(st.to_dict()))
        return
    _render_status(st, f"sandbox {env} reset and up ({st.seconds:.1f}s)")


if __name__ == "__main__":  # python -m migrate.sandbox.cli ...
    app()
