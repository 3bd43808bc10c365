"""The bpmigrate CLI (typer). Each command parses, calls the engine or a report function, and renders. No logic.

This module is the one error boundary: BpmError -> one red block + its documented exit code (see errors.py).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

# pydantic scans every installed distribution's entry points for plugins the first time a model is built (~15 ms
# of every command); bpmigrate uses none. An operator who wants one sets PYDANTIC_DISABLE_PLUGINS themselves.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer

from migrate.errors import BpmError, Interrupted, UsageError

app = typer.Typer(
    name="bpmigrate",
    help="Executable, resumable, auditable migration of BetterPrompts from Docker Compose to AWS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
ledger_app = typer.Typer(help="Inspect and maintain the ledger.", no_args_is_help=True)
runbook_app = typer.Typer(help="Runbooks generated from the steps.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
app.add_typer(runbook_app, name="runbook")
report_app = typer.Typer(help="Reports read from the live environment.", no_args_is_help=True)
app.add_typer(report_app, name="report")

try:  # the sandbox commands live with the sandbox package
    from migrate.sandbox.cli import app as sandbox_app

    app.add_typer(sandbox_app, name="sandbox", help="Local rehearsal environment: real PostgreSQL, Redis, moto, Terraform.")
except ImportError:  # pragma: no cover - the sandbox package is optional
    pass


@dataclass
class Opts:
    env: str | None
    config: str | None
    json: bool
    traceback: bool


_opts = Opts(None, None, False, False)
T = TypeVar("T")


@app.callback()
def _global(
    env: str | None = typer.Option(
        None, "--env", "-e", help="Environment (default: $BPMIGRATE_ENV, else project.default_env in migrate.toml)."
    ),
    config: str | None = typer.Option(None, "--config", "-c", help="Path to migrate.toml."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output (read commands and results)."),
    traceback: bool = typer.Option(False, "--traceback", help="Show Python tracebacks for errors."),
) -> None:
    # $BPMIGRATE_ENV is read here, not as the option's envvar: `bpmigrate sandbox …` keeps its own default (sandbox)
    # an explicit --env '' is refused (unknown environment), never taken for "the default"
    _opts.env = env if env is not None else (os.environ.get("BPMIGRATE_ENV") or None)
    _opts.config, _opts.json, _opts.traceback = config, json_out, traceback


# -- helpers -------------------------------------------------------------------------------------------------
def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _config() -> Any:
    from migrate import config

    return config.load(_opts.config)


def _graph(cfg: Any) -> Any:
    """The plan, with migrate.toml's step settings validated against it (exit 2 naming the step and key)."""
    from migrate.plan import load_graph
    from migrate.settings import validate_settings

    graph = load_graph(cfg.phases_dir)
    validate_settings(cfg, graph)
    return graph


def _env_name(cfg: Any) -> str:
    return str(cfg.env(_opts.env).name)


def _print_json(obj: Any) -> None:
    from migrate.redact import redact_obj

    sys.stdout.write(json.dumps(redact_obj(obj), indent=2, default=str) + "\n")


def _say(document: dict[str, Any], text: str) -> None:
    """One result: ``document`` with --json, else ``text`` (rich markup)."""
    if _opts.json:
        _print_json(document)
    else:
        _console().print(text)


def _engine(command: str) -> Any:
    from migrate.engine import Engine
    from migrate.reporting import ConsoleReporter, JsonReporter

    cfg = _config()
    reporter = JsonReporter() if _opts.json else ConsoleReporter(_console())
    return Engine(cfg, _opts.env, reporter, command=command)


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return bool(typer.confirm(question, default=False))


def _command_line() -> str:
    return "bpmigrate " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _one_selector(selector: str | None, step: str | None, command: str) -> str | None:
    if selector and step:
        raise UsageError(f"give either a selector or --step to {command}, not both", "they select different steps", f"bpmigrate {command} --help")
    return step or selector


def _with_adapters(cfg: Any, env: Any, run: Callable[[Any, dict[str, dict[str, Any]]], T]) -> T:
    """``run(adapters, recorded outputs)`` for read-only reports (doctor, compliance); the adapters are closed after."""
    from migrate.adapters import Adapters
    from migrate.ledger_read import LedgerReader

    reader = LedgerReader(cfg.ledger_url(env.name), env.name)
    try:
        outputs = reader.outputs()
    finally:
        reader.close()
    adapters = Adapters(env, project_root=cfg.root, state_dir=cfg.state_dir)
    try:
        return run(adapters, outputs)
    finally:
        adapters.close()


def _finish(engine: Any, result: Any) -> None:
    from migrate.reporting import JsonReporter

    if isinstance(engine.reporter, JsonReporter):
        _print_json({"events": engine.reporter.document(), "outcomes": [o.__dict__ for o in result.outcomes], "nothing_to_do": result.nothing_to_do})


# -- read-only commands ----------------------------------------------------------------------------------
@app.command()
def steps() -> None:
    """List the steps of the plan, in execution order."""
    graph = _graph(_config())
    rows = [
        {"phase": s.phase, "id": s.id, "title": s.display_title(), "depends_on": list(s.depends_on), "reversibility": s.reversibility.value, "gate": s.gate}
        for s in graph.steps
    ]
    if _opts.json:
        _print_json(rows)
        return
    from migrate.render import steps_table

    _console().print(steps_table(rows))


@app.command()
def show(step: str = typer.Argument(..., help="Step id.")) -> None:
    """A step's documentation, settings, dependencies, reversibility, state, outputs and last plan."""
    from migrate.status import step_details

    cfg = _config()
    details = step_details(cfg, _env_name(cfg), _graph(cfg).get(step))
    if _opts.json:
        _print_json(details)
        return
    from rich.markup import escape
    from rich.panel import Panel

    from migrate.redact import redact

    body = [
        f"[bold]{escape(details['title'])}[/bold]  (phase {details['phase']}, {details['reversibility']}"
        + (", destructive" if details["destructive"] else "")
        + ")",
        f"state: {details['state']}" + (f" — {escape(details['reason'])}" if details["reason"] else ""),
        f"depends on: {', '.join(details['depends_on']) or '—'}",
    ]
    if details["gate"]:
        body.append(f"manual gate: {escape(details['gate'])}")
    if details["doc"]:
        body.append("\n" + escape(details["doc"]))
    if details["settings"]:
        body.append("\nsettings (key: type = value in this env; default — description):")
        for row in details["settings"]:
            value = row.get("value", row["default"])
            mark = "" if value == row["default"] else f" (default {row['default']!r})"
            body.append(f"  {escape(row['key'])}: {escape(row['type'])} = {escape(repr(value))}{escape(mark)}"
                        + (f" — {escape(row['description'])}" if row["description"] else ""))
    if details["outputs"]:
        body.append("\noutputs:\n" + "\n".join(f"  {escape(k)} = {escape(redact(str(v)))}" for k, v in details["outputs"].items()))
    if details["last_plan"]:
        lp = details["last_plan"]
        body.append(f"\nlast plan: {lp['fingerprint']} ({'consumed' if lp['consumed'] else 'pending'}, {len(lp.get('changes', []))} change(s))")
    for a in details["attempts"][:5]:
        body.append(f"attempt: {a['action']} {a['status']} {a['duration'] or 0:.1f}s" + (f" — {escape(str(a['error']))}" if a["error"] else ""))
    _console().print(Panel("\n".join(body), title=details["id"], title_align="left"))


@app.command()
def status(
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh every 2 s until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", help="Refresh interval for --watch."),
) -> None:
    """Dashboard: what needs you, then phases × steps (state, apply time, summary), ETA and downtime window."""
    from migrate.plan_index import plan_index
    from migrate.status import build_status

    cfg = _config()
    env = _env_name(cfg)
    # read-only and fast: the plan's cached index (no step module imported while the code is unchanged); settings
    # are validated by the commands that use them
    graph = plan_index(cfg.phases_dir, cfg.state_dir)

    def report() -> dict[str, Any]:
        built = build_status(cfg, env, graph)
        graph.save()  # summaries learnt for outputs recorded since the last `status`
        return built

    if _opts.json:
        _print_json(report())
        return
    from migrate.render import status_dashboard, watch_view

    console = _console()
    if not watch:
        console.print(status_dashboard(report(), console.width))
        return
    import time

    from rich.live import Live

    def view() -> Any:  # reads the ledger only, never the lock: works while `apply` runs in another terminal
        return watch_view(report(), console.width)

    try:
        if not console.is_terminal:  # a log or a pipe: one snapshot after the other, readable as plain text
            while True:
                console.print(view())
                console.print("─" * min(console.width, 80), style="dim")
                sys.stdout.flush()
                time.sleep(max(interval, 0.2))
        with Live(view(), console=console, auto_refresh=False, screen=False, redirect_stdout=False) as live:
            while True:
                time.sleep(max(interval, 0.2))
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return


@app.command()
def history(
    step: str | None = typer.Option(None, "--step", help="Only this step's events."),
    limit: int | None = typer.Option(200, "--limit", help="Newest N events (0 = all)."),
    verify_chain: bool = typer.Option(False, "--verify-chain", help="Check the hash chain for tampering."),
) -> None:
    """The append-only, hash-chained event log."""
    from migrate.ledger_read import LedgerReader
    from migrate.status import history as history_rows

    cfg = _config()
    env = _env_name(cfg)
    if verify_chain:
        reader = LedgerReader(cfg.ledger_url(env), env)
        try:
            report = reader.verify_chain()
        finally:
            reader.close()
        if _opts.json:
            _print_json(report.__dict__)
        elif report.ok:
            _console().print(f"[green]✓ hash chain intact[/green]: {report.events} event(s)")
        if not report.ok:
            from migrate.errors import LedgerError
            from migrate.ledger_backup import restore_hint

            raise LedgerError(
                f"the ledger's hash chain is broken: {report.problem}",
                "the event log was edited outside bpmigrate; the tampered file is kept aside by the restore",
                restore_hint(cfg.ledger_url(env), env, _opts.config),
            )
        return
    rows = history_rows(cfg, env, step, limit or None)
    if _opts.json:
        _print_json(rows)
        return
    from migrate.render import history_table

    _console().print(history_table(rows))


@app.command()
def plan(
    selector: str | None = typer.Argument(None, help="phase-N, a phase name, a step id, or all."),
    step: str | None = typer.Option(None, "--step", help="One step (same as giving its id as the selector)."),
) -> None:
    """Plan (read-only): what apply would change, what is in place, what stays unknown. Records the plan."""
    selector = _one_selector(selector, step, "plan")
    engine = _engine(_command_line())
    try:
        steps_ = engine.graph.select(selector)
        engine.plan_steps(steps_, record=True)
        if _opts.json:
            _print_json({"events": engine.reporter.document()})
    finally:
        engine.close()


# -- mutating commands ----------------------------------------------------------------------------------
@app.command()
def apply(
    step: str | None = typer.Option(None, "--step", help="Apply one step."),
    phase: str | None = typer.Option(None, "--phase", help="Apply one phase (N or name)."),
    from_step: str | None = typer.Option(None, "--from", help="Apply from this step to the end."),
    all_: bool = typer.Option(False, "--all", help="Apply every step."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show exactly what would run; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    refresh: bool = typer.Option(
        False, "--refresh", help="With --step: apply it again even if verified (re-take a backup); the reason is recorded."
    ),
) -> None:
    """Apply steps (idempotent), verifying each. With no selector: continue where the plan stopped."""

    chosen = [x for x in (step, phase, from_step) if x] + (["all"] if all_ else [])
    if len(chosen) > 1:
        raise UsageError("choose one of --step, --phase, --from, --all", "they select different sets of steps", "bpmigrate apply --help")
    if refresh and not step:
        raise UsageError("--refresh needs --step", "a re-take is asked for one step at a time", "bpmigrate apply --step pg-backup --refresh")
    engine = _engine(_command_line())
    try:
        if step:
            selected = [engine.graph.get(step)]
            engine.refresh = frozenset({selected[0].id}) if refresh else frozenset()
        elif phase:
            selected = engine.graph.phase_steps(engine.graph.parse_phase(phase) or 0)
        elif from_step:
            selected = engine.graph.from_step(from_step)
        else:
            selected = list(engine.graph.steps)
        if dry_run:
            engine.reporter.message("note", "dry run: nothing will be changed and nothing recorded")
            engine.plan_steps(selected, record=False)
            if _opts.json:
                _print_json({"events": engine.reporter.document(), "dry_run": True})
            return
        with engine.session(_command_line()):
            result = engine.apply(selected, confirm=_confirm, assume_yes=yes)
        _finish(engine, result)
    finally:
        engine.close()


@app.command()
def verify(
    selector: str | None = typer.Argument(None, help="phase-N, a phase name, a step id, or all."),
    step: str | None = typer.Option(None, "--step", help="One step (same as giving its id as the selector)."),
) -> None:
    """Re-run the read-only verification of applied steps."""
    selector = _one_selector(selector, step, "verify")
    engine = _engine(_command_line())
    try:
        selected = engine.graph.select(selector)
        with engine.session(_command_line()):
            result = engine.verify(selected)
        _finish(engine, result)
    finally:
        engine.close()


@app.command()
def rollback(
    step: str | None = typer.Option(None, "--step", help="Roll back one step."),
    phase: str | None = typer.Option(None, "--phase", help="Roll back every applied step of a phase, newest first."),
    to: str | None = typer.Option(None, "--to", help="Roll back everything applied after this step, newest first."),
    force_past_fence: bool = typer.Option(False, "--force-past-fence", help="Allow crossing one-way steps."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Unwind applied steps in reverse order (default: the last applied step)."""
    if len([x for x in (step, phase, to) if x]) > 1:
        raise UsageError("choose one of --step, --phase, --to", "they select different sets of steps", "bpmigrate rollback --help")
    engine = _engine(_command_line())
    try:
        phase_no = engine.graph.parse_phase(phase) if phase else None
        for named in (step, to):
            if named:
                engine.graph.get(named)  # unknown step: usage error before anything is written
        with engine.session(_command_line()):
            targets = engine.rollback_targets(step=step, phase=phase_no, to=to)
            what = f"step {step}" if step else f"phase {phase}" if phase else f"everything after {to}" if to else "the last applied step"
            result = engine.rollback(targets, confirm=_confirm, assume_yes=yes, force_past_fence=force_past_fence, what=what)
        _finish(engine, result)
    finally:
        engine.close()


@app.command()
def mark(
    step: str = typer.Argument(..., help="Step id."),
    as_: str = typer.Option(..., "--as", help="verified | skipped"),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audited event log)."),
) -> None:
    """Audited escape hatch: record a step as verified or skipped without running it."""
    engine = _engine(_command_line())
    try:
        engine.check_mark(step, as_, reason)
        with engine.session(_command_line()):
            state = engine.mark(step, as_, reason)
        if _opts.json:
            _print_json({"step": step, "state": state.value, "reason": reason})
        else:
            _console().print(f"[yellow]marked[/yellow] {step} as {state.value} (audited)")
    finally:
        engine.close()


@app.command()
def approve(step: str = typer.Argument(..., help="Gated step id."), reason: str = typer.Option(..., "--reason")) -> None:
    """Approve a step's manual gate (audited)."""
    engine = _engine(_command_line())
    try:
        engine.check_approve(step)
        with engine.session(_command_line()):
            engine.approve(step, reason)
        if _opts.json:
            _print_json({"step": step, "approved": True, "reason": reason})
        else:
            _console().print(f"[green]approved[/green] the gate of {step} (audited)")
    finally:
        engine.close()


@app.command()
def unlock(
    force: bool = typer.Option(False, "--force", help="Take the lock away from its holder (audited)."),
    reason: str = typer.Option("operator unlock", "--reason", help="Recorded in the audit event."),
) -> None:
    """Release a stuck lock. Without --force only a lock whose holder is dead on this host is released."""
    from migrate.ledger import Ledger, lock_held_error
    from migrate.lock import pid_alive

    cfg = _config()
    env = _env_name(cfg)
    ledger = Ledger(cfg.ledger_url(env), env)
    try:
        from migrate.ledger_read import LedgerReader

        reader = LedgerReader(cfg.ledger_url(env), env)
        try:
            held = reader.lock()
        finally:
            reader.close()
        if held is None:
            _say({"released": None}, "the lock is free: nothing to do")
            return
        dead_here = held["host"] == ledger.host and not pid_alive(int(held["pid"]))
        if not force and not dead_here:
            from migrate.ledger import LockInfo

            raise lock_held_error(env, LockInfo("", held["holder"], held["host"], held["pid"], held["command"], held["acquired_at"], held["heartbeat_at"], held["expires_at"]))
        info = ledger.force_unlock(reason if force else f"holder pid {held['pid']} is dead on this host")
        if info:
            released = {"holder": info.holder, "host": info.host, "pid": info.pid}
            _say({"released": released}, f"[yellow]released[/yellow] the lock of {info.holder}@{info.host} pid {info.pid} (audited)")
    finally:
        ledger.close()


@app.command()
def doctor() -> None:
    """Preflight: what will fail before anything runs (engines, credentials, servers, parity, disk, cluster, clock)."""
    from migrate.doctor import DoctorContext, run_checks

    cfg = _config()
    env = cfg.env(_opts.env)
    results = _with_adapters(cfg, env, lambda adapters, outputs: run_checks(DoctorContext(cfg, env, adapters, outputs)))
    blocking = [r for r in results if r.status == "fail" and r.blocking]
    if _opts.json:
        _print_json({"env": env.name, "ok": not blocking, "checks": [r.to_dict() for r in results]})
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"bpmigrate doctor · env {env.name}", title_justify="left", show_lines=False)
        for col in ("check", "status", "detail", "fix"):
            table.add_column(col, overflow="fold")
        style = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
        for r in results:
            table.add_row(escape(r.check), f"[{style[r.status]}]{r.status}[/]", escape(r.detail), escape(r.fix))
        _console().print(table)
    if blocking:
        from migrate.errors import StepFailed

        if _opts.json:  # one JSON document: the checks already say what failed ("ok": false)
            sys.exit(StepFailed.exit_code)
        raise StepFailed(
            f"doctor: {len(blocking)} blocking check(s) failed: {', '.join(r.check for r in blocking)}",
            blocking[0].detail,
            blocking[0].fix or f"fix them, then: bpmigrate --env {env.name} doctor",
        )


@ledger_app.command("check")
def ledger_check() -> None:
    """Check the ledger file: integrity, schema version, hash chain, steps mid-transition."""
    from migrate.ledger_read import LedgerReader

    cfg = _config()
    env = _env_name(cfg)
    reader = LedgerReader(cfg.ledger_url(env), env)
    problems: list[str] = []
    try:
        if not reader.exists:
            _say({"ok": True, "problems": [], "in_flight": [], "exists": False}, f"no ledger yet for {env!r} (nothing recorded)")
            return
        problems.extend(reader.problems())
        stuck = [f"{sid} ({row.state})" for sid, row in reader.states().items() if row.state in ("applying", "verifying", "rolling_back")]
    except BpmError as exc:
        problems.append(exc.what)
        stuck = []
    finally:
        reader.close()
    if _opts.json:
        _print_json({"ok": not problems, "problems": problems, "in_flight": stuck})
    else:
        for p in problems:
            _console().print(f"[red]✗[/red] {p}")
        if stuck:
            _console().print(f"[yellow]in flight[/yellow] (reconciled by the next mutating command): {', '.join(stuck)}")
        if not problems:
            _console().print("[green]✓ ledger OK[/green]")
    if problems:
        from migrate.errors import LedgerError
        from migrate.ledger_backup import restore_hint

        raise LedgerError(f"the ledger for {env!r} has {len(problems)} problem(s)", problems[0], restore_hint(cfg.ledger_url(env), env, _opts.config))


@ledger_app.command("restore")
def ledger_restore(
    from_: str | None = typer.Option(None, "--from", help="Backup file or s3://BUCKET/KEY (default: the newest good local backup)."),
    force: bool = typer.Option(False, "--force", help="Replace a ledger that is still healthy (it is kept aside)."),
) -> None:
    """Restore the ledger from a backup after checking its integrity and hash chain (the old file is kept aside)."""
    from migrate.ledger_backup import restore

    cfg = _config()
    done = restore(cfg, _env_name(cfg), from_, force=force)
    _say(
        {"restored_from": done.source, "ledger": str(done.path), "events": done.events, "kept_aside": [str(p) for p in done.kept_aside]},
        f"[green]restored[/green] {done.path} from {done.source}: {done.events} events, hash chain intact"
        + (f"; the replaced file is kept at {done.kept_aside[0]}" if done.kept_aside else ""),
    )


@ledger_app.command("migrate")
def ledger_migrate(
    to: str = typer.Option(..., "--to", help="SQLAlchemy URL of the new ledger, e.g. postgresql://bpm@ledger-db/bpmigrate"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Copy this environment's ledger (with its whole history) to another database, e.g. a shared PostgreSQL."""
    from migrate.ledger import copy_ledger
    from migrate.ledger_read import LedgerReader
    from migrate.redact import redact

    cfg = _config()
    env = _env_name(cfg)
    src = cfg.ledger_url(env)
    if not yes and not _confirm(f"Copy the ledger of {env!r} from {redact(src)} to {redact(to)}?"):
        from migrate.errors import NotConfirmed

        raise NotConfirmed("ledger migrate cancelled", "not confirmed", f"bpmigrate --env {env} ledger migrate --to URL --yes")
    engine = _engine(_command_line())  # hold the old ledger's lock so nobody writes during the copy
    try:
        with engine.session(_command_line()):
            counts = copy_ledger(src, to, env)
    finally:
        engine.close()
    reader = LedgerReader(to, env)
    try:
        chain = reader.verify_chain()
    finally:
        reader.close()
    if _opts.json:
        _print_json({"copied": counts, "chain_ok": chain.ok})
        return
    console = _console()
    console.print(f"[green]copied[/green] {counts.get('bpm_events', 0)} events, {counts.get('bpm_step_state', 0)} step states "
                  f"to {redact(to)}; hash chain {'intact' if chain.ok else 'BROKEN'}")
    console.print(f"next: set [bold]ledger_url = \"{redact(to)}\"[/bold] under [environments.{env}] in {cfg.path} "
                  "(password via PGPASSWORD or ~/.pgpass, never in the file)")


@runbook_app.command("export")
def runbook_export(out: str | None = typer.Option(None, "--out", help="Directory (default: runbooks/).")) -> None:
    """Generate runbook pages from the steps' docstrings."""
    from pathlib import Path

    try:
        from migrate.runbook import export_runbooks
    except ImportError as exc:  # pragma: no cover
        raise UsageError("runbook export is not available", str(exc), "pip install -e .") from None
    cfg = _config()
    graph = _graph(cfg)
    paths = export_runbooks(list(graph.steps), Path(out) if out else cfg.runbooks_dir, graph.phases)
    if _opts.json:
        _print_json({"written": [str(p) for p in paths]})
        return
    for p in paths:
        _console().print(f"wrote {p}")


@report_app.command("compliance")
def report_compliance() -> None:
    """Each security control with its evidence from the live account; Markdown under runbooks/reports/.

    Exit 0 when no control fails, 1 when one does (n/a and unchecked controls are listed, not failed)."""
    from migrate.adapters.reports import write_text
    from migrate.compliance import ComplianceContext, collect, markdown, report_path

    cfg = _config()
    env = cfg.env(_opts.env)
    controls = _with_adapters(cfg, env, lambda adapters, outputs: collect(ComplianceContext(cfg, env, adapters, outputs)))
    path = write_text(report_path(cfg, env.name), markdown(env.name, controls))
    failed = [c for c in controls if c.status == "fail"]
    if _opts.json:
        _print_json({"env": env.name, "ok": not failed, "report": str(path), "controls": [c.to_dict() for c in controls]})
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"bpmigrate compliance · env {env.name}", title_justify="left")
        for col in ("control", "status", "evidence", "fix"):
            table.add_column(col, overflow="fold")
        style = {"pass": "green", "fail": "bold red", "n/a": "dim", "unchecked": "yellow"}
        for c in controls:
            table.add_row(escape(f"{c.id} {c.title}"), f"[{style[c.status]}]{c.status}[/]", escape(c.evidence), escape(c.fix))
        console = _console()
        console.print(table)
        console.print(f"report: {path}")
    if failed:
        raise typer.Exit(1)


# -- entry point -----------------------------------------------------------------------------------------
def _fail(exc: BpmError) -> NoReturn:
    if _opts.json:
        _print_json(exc.to_dict())
    else:
        from rich.console import Console
        from rich.markup import escape

        err = Console(stderr=True, highlight=False)
        err.print(f"[bold red]error:[/bold red] {escape(exc.what)}")
        if exc.why:
            err.print(f"  [dim]why:[/dim] {escape(exc.why)}")
        if exc.next_cmd:
            err.print(f"  [dim]next:[/dim] [bold]{escape(exc.next_cmd)}[/bold]")
    sys.exit(exc.exit_code)


def _click_exceptions() -> tuple[type[BaseException], type[BaseException]]:
    """(ClickException, Abort) of the click typer runs on (typer ≥ 0.16 vendors its own copy)."""
    try:
        from typer import exceptions as typer_exc
        from typer._click import exceptions as exc

        return exc.ClickException, typer_exc.Abort
    except (ImportError, AttributeError):  # pragma: no cover - older typer on upstream click
        from click import exceptions as click_exc

        return click_exc.ClickException, click_exc.Abort


#: the global options (see ``_global``): accepted before or after any command and subcommand
GLOBAL_VALUE_OPTIONS = ("--env", "-e", "--config", "-c")
GLOBAL_FLAG_OPTIONS = ("--json", "--traceback")


def _takes_value(command: Any, token: str) -> bool | None:
    """Whether ``token`` is an option of ``command`` that takes a value (None: not one of its options)."""
    for param in getattr(command, "params", ()):
        if token in getattr(param, "opts", ()) or token in getattr(param, "secondary_opts", ()):
            return not (getattr(param, "is_flag", False) or getattr(param, "count", False))
    return None


def _click_root() -> Any:
    """The click command tree typer builds from ``app`` (built once per process: it costs ~8 ms)."""
    global _ROOT
    if _ROOT is None:
        import typer.main

        _ROOT = typer.main.get_command(app)
    return _ROOT


_ROOT: Any = None


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move the global options found after a command in front of it: ``status --json`` → ``--json status``.

    Walks the command tree as click will parse it, so an option value that happens to look like a global option
    (``--reason --json``) and the options a subcommand defines itself (``sandbox up --env x``) are left alone."""
    globals_ = (*GLOBAL_VALUE_OPTIONS, *GLOBAL_FLAG_OPTIONS)
    if not any(a.split("=", 1)[0] in globals_ or a[:2] in ("-e", "-c") for a in argv[1:]):
        return argv  # nothing to move (the common case): no need to build the command tree
    command: Any = _click_root()
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            rest.extend(argv[i:])
            break
        name, has_value = (token.split("=", 1)[0], "=" in token) if token.startswith("--") else (token, False)
        own = _takes_value(command, name) if token.startswith("-") else None
        short_glued = len(token) > 2 and token[:2] in ("-e", "-c") and not token.startswith("--")
        if own is None and (name in GLOBAL_VALUE_OPTIONS or short_glued) and rest:
            front.extend(argv[i : i + (1 if has_value or short_glued else 2)])
            i += 1 if has_value or short_glued else 2
            continue
        if own is None and name in GLOBAL_FLAG_OPTIONS and rest:
            front.append(token)
            i += 1
            continue
        if own and not has_value:
            rest.extend(argv[i : i + 2])
            i += 2
            continue
        if not token.startswith("-"):
            sub = getattr(command, "commands", {}).get(token)
            if sub is not None:
                command = sub
        rest.append(token)
        i += 1
    return front + rest


def main(argv: list[str] | None = None) -> None:
    try:
        _run(argv)
    except BrokenPipeError:  # `bpmigrate status --json | head`: the reader left; no traceback about it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _run(argv: list[str] | None) -> None:
    click_error, abort = _click_exceptions()
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    try:
        rv = _click_root().main(args=args, prog_name="bpmigrate", standalone_mode=False)
    except BpmError as exc:
        if _opts.traceback:
            raise
        _fail(exc)
    except abort:
        _fail(Interrupted("interrupted", "Ctrl-C", "re-run the command; the ledger is consistent"))
    except KeyboardInterrupt:
        _fail(Interrupted("interrupted", "Ctrl-C; the ledger is consistent", "re-run the same command to resume"))
    except click_error as exc:
        exc.show()  # type: ignore[attr-defined]
        sys.exit(2)
    except BrokenPipeError:
        raise
    except Exception as exc:  # last-resort boundary (re-raised with --traceback): never a raw traceback by default
        if _opts.traceback:
            raise
        from migrate.redact import redact

        _fail(BpmError(f"internal error: {type(exc).__name__}: {redact(str(exc))}", "this is a bug in bpmigrate or a step", "re-run with --traceback and report it"))
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
