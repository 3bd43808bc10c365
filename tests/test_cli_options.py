"""Global options anywhere on the command line, every printed "next:" hint parses as printed, settings at load."""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from migrate import cli
from tests.engine_helpers import REPO, make_project

# every command of the CLI, with arguments that let it run on the engine-test project
COMMANDS: list[tuple[str, ...]] = [
    ("steps",),
    ("show", "touch-a"),
    ("status",),
    ("history",),
    ("history", "--verify-chain"),
    ("plan", "touch-a"),
    ("apply", "--step", "touch-a", "--yes"),
    ("apply", "--all", "--dry-run"),
    ("verify", "touch-a"),
    ("rollback", "--step", "touch-a", "--yes"),
    ("mark", "touch-a", "--as", "skipped", "--reason", "--json"),  # an option value that looks like an option
    ("approve", "gated", "--reason", "announced"),
    ("unlock",),
    ("doctor",),
    ("ledger", "check"),
    ("ledger", "restore"),
    ("report", "compliance"),
    ("ledger", "migrate", "--to", "sqlite:///{project}/copy.db", "--yes"),
    ("runbook", "export", "--out", "{project}/runbooks"),
]
OPTIONS: dict[str, tuple[str, ...]] = {
    "--env": ("--env", "other"),
    "-e": ("-e", "other"),
    "--env=": ("--env=other",),
    "--config": ("--config", "{project}/migrate.toml"),
    "--json": ("--json",),
    "--traceback": ("--traceback",),
}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str, str]:
    """Run the CLI in-process: (outcome, stdout, stderr); outcome = exit code or the exception raised."""
    try:
        cli.main(argv)
        outcome = "returned"
    except SystemExit as exc:
        outcome = f"exit {exc.code}"
    except Exception as exc:  # noqa: BLE001 - --traceback re-raises the error itself
        outcome = type(exc).__name__
    out, err = capsys.readouterr()
    return outcome, out, err


def _case(tmp_path: Path, name: str, command: tuple[str, ...], option: tuple[str, ...], before: bool) -> list[str]:
    project = make_project(tmp_path / name)
    fill = [a.replace("{project}", str(project)) for a in command]
    opt = [a.replace("{project}", str(project)) for a in option]
    return opt + fill if before else fill + opt


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(a for a in c if not a.startswith(("{", "sqlite"))))
def test_global_option_before_or_after_any_command(
    command: tuple[str, ...], option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BPMIGRATE_ENV", raising=False)
    monkeypatch.delenv("BPMIGRATE_CONFIG", raising=False)
    results = []
    for before in (True, False):
        argv = _case(tmp_path, "before" if before else "after", command, OPTIONS[option], before)
        # --config: run from a directory with no migrate.toml, so only the option can find the project
        monkeypatch.chdir(tmp_path if option == "--config" else tmp_path / ("before" if before else "after") / "project")
        outcome, out, err = _run(argv, capsys)
        assert "No such option" not in err, (argv, err)
        assert "Got unexpected extra argument" not in err, (argv, err)
        opts = dict(vars(cli._opts))
        if option == "--config":
            opts["config"] = Path(opts["config"]).name
        results.append((outcome, opts))
        if option == "--json" and out.strip():
            json.loads(out)  # one JSON document, whatever the command
        if option.startswith(("--env", "-e")):
            assert cli._opts.env == "other"
            assert not (Path.cwd() / "state" / "test.db").exists(), "the option was ignored: the default env's ledger was written"
    assert results[0] == results[1]


def test_the_matrix_covers_every_command() -> None:
    """A new command joins COMMANDS (the sandbox's own commands define --env/--config/--json themselves)."""
    import typer.main

    def paths(command: Any, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
        subs = getattr(command, "commands", None)
        if subs is None:
            return {prefix}
        return {p for name, sub in subs.items() for p in paths(sub, (*prefix, name))}

    every = {p for p in paths(typer.main.get_command(cli.app), ()) if p[0] != "sandbox"}
    covered = {tuple(a for a in c if not a.startswith("-"))[: len(p)] for c in COMMANDS for p in every}
    assert every <= covered, f"not in COMMANDS: {sorted(every - covered)}"


def test_bpmigrate_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    project = make_project(tmp_path)
    monkeypatch.chdir(project)
    monkeypatch.setenv("BPMIGRATE_ENV", "other")
    outcome, out, _ = _run(["status", "--json"], capsys)
    assert outcome == "exit 0"
    assert json.loads(out)["env"] == "other"
    outcome, out, _ = _run(["status", "--json", "--env", "test"], capsys)  # the option wins over the variable
    assert json.loads(out)["env"] == "test"


def test_hoisting_leaves_values_and_subcommand_options_alone() -> None:
    hoist = cli.hoist_global_options
    assert hoist(["status", "--json"]) == ["--json", "status"]
    assert hoist(["apply", "--all", "--env", "sandbox", "--yes"]) == ["--env", "sandbox", "apply", "--all", "--yes"]
    assert hoist(["ledger", "check", "--env=x"]) == ["--env=x", "ledger", "check"]
    assert hoist(["mark", "s", "--reason", "--json", "--as", "skipped"]) == ["mark", "s", "--reason", "--json", "--as", "skipped"]
    assert hoist(["sandbox", "up", "--env", "x", "--json"]) == ["sandbox", "up", "--env", "x", "--json"]
    assert hoist(["--env", "a", "status", "--", "--json"]) == ["--env", "a", "status", "--", "--json"]


# -- every "next:" hint the code can print parses as printed -----------------------------------------------------
_SEPARATORS = re.compile(r";|\s{2,}|\s\(|\sthen\s|\s—\s|\s·\s|,\s|`|\)|\n|\.\s|:\s")
#: a command, not prose ("not a bpmigrate ledger"): the text starts with it, or it follows a backtick, "run", "next:" …
_HINT_START = re.compile(r"(^|`|\b(run|then|next:|fixing:|with|retry|or)\s+|:\s+)$")


#: texts that start like a command but are not one
NOT_HINTS = {"bpmigrate sandbox stand-in"}  # the marker of a stand-in image (migrate/adapters/aws_app.py)


def _placeholder(expr: str) -> str:
    low = expr.lower()
    if "env" in low:
        return "sandbox"
    if "action" in low:
        return "apply"
    if "phase" in low:
        return "2"
    if "reason" in low:
        return "'why'"
    return "rds-restore"  # a step id: the commonest placeholder


def _text_of(node: ast.expr) -> str:
    """A string expression with its placeholders filled: literals, f-strings and ``+`` concatenations."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                parts.append(_placeholder(ast.unparse(value.value)))
            else:
                parts.append(_text_of(value))
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text_of(node.left) + _text_of(node.right)
    return _placeholder(ast.unparse(node))


def _literal_texts(tree: ast.AST) -> list[str]:
    """The string literals, f-strings and concatenations of a module (placeholders filled), docstrings excluded."""
    skip = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    texts: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            skip.update(id(child) for child in ast.walk(node))
            continue
        is_str = isinstance(node, ast.Constant) and isinstance(node.value, str)
        is_concat = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
        if is_str or is_concat or isinstance(node, ast.JoinedStr):
            text = _text_of(node)
            if not is_concat or "bpmigrate" in text:
                skip.update(id(child) for child in ast.walk(node))
                texts.append(text)
    return texts


def printed_hints() -> list[tuple[str, str]]:
    """(file, command) for every ``bpmigrate <command> …`` the sources can print, as printed."""
    import typer.main

    tree = typer.main.get_command(cli.app).commands  # type: ignore[attr-defined]
    commands = set(tree)
    found: list[tuple[str, str]] = []
    for path in sorted([*REPO.glob("migrate/**/*.py"), *REPO.glob("phases/**/*.py")]):
        for text in _literal_texts(ast.parse(path.read_text(encoding="utf-8"))):
            for match in re.finditer(r"\bbpmigrate\s", text):
                if not _HINT_START.search(text[: match.start()]):
                    continue
                raw = _SEPARATORS.split(text[match.start() :], maxsplit=1)[0]
                tail = raw.rstrip(".:, ")
                try:
                    words = shlex.split(tail)
                except ValueError:
                    words = tail.split()
                rest = words[1:]
                while rest[:1] and rest[0] in ("--env", "-e", "--config", "-c"):
                    rest = rest[2:]
                while rest[:1] and rest[0] in ("--json", "--traceback"):
                    rest = rest[1:]
                if tail in NOT_HINTS or raw.endswith(" ..."):  # a marker; "bpmigrate sandbox ..." names a family
                    continue
                if len(rest) == 1 and hasattr(tree.get(rest[0]), "commands"):  # "another `bpmigrate sandbox` command"
                    continue
                if rest and rest[0] in commands and "--help" not in words:
                    found.append((str(path.relative_to(REPO)), tail))
    return sorted(set(found))


def parse_as_printed(words: list[str]) -> None:
    """Parse a command line with the CLI's own click tree (nothing runs); raises click's UsageError if it does not parse."""
    import typer.main

    command: Any = typer.main.get_command(cli.app)
    ctx = command.make_context("bpmigrate", cli.hoist_global_options(words))
    while hasattr(command, "resolve_command"):
        args = [*ctx._protected_args, *ctx.args]
        if not args:
            break
        name, command, rest = command.resolve_command(ctx, args)
        ctx = command.make_context(name, rest, parent=ctx)


def test_hints_are_collected() -> None:
    hints = [h for _, h in printed_hints()]
    assert len(hints) >= 30
    assert any(h.startswith("bpmigrate --env sandbox apply --step") for h in hints)


@pytest.mark.parametrize(("where", "hint"), printed_hints())
def test_every_printed_hint_parses_as_printed(where: str, hint: str) -> None:
    try:
        parse_as_printed(shlex.split(hint)[1:])
    except Exception as exc:  # noqa: BLE001 - click's usage errors and exits: report which hint, from where
        pytest.fail(f"{where}: `{hint}` does not parse: {type(exc).__name__}: {exc}")


# -- settings are validated when the plan loads, for every command that loads it --------------------------------
def _project_with_typo(tmp_path: Path) -> Path:
    project = tmp_path / "real"
    project.mkdir()
    shutil.copytree(REPO / "phases", project / "phases", ignore=shutil.ignore_patterns("__pycache__"))
    text = (REPO / "migrate.toml").read_text(encoding="utf-8")
    assert "[steps.data-switch]\n" in text
    text = text.replace("[steps.data-switch]\n", "[steps.data-switch]\ncatchup_timout_s = 30\n", 1)
    (project / "migrate.toml").write_text(text, encoding="utf-8")
    return project


@pytest.mark.parametrize("command", [("steps",), ("show", "data-switch"), ("runbook", "export", "--out", "rb"), ("plan", "data-switch")])
def test_misspelled_step_setting_fails_at_load(command: tuple[str, ...], tmp_path: Path) -> None:
    from phases.p5_cutover.data_switch import DataSwitch

    if not DataSwitch.declares_settings():
        pytest.skip("data-switch declares no Settings model yet (its owner is converting it)")
    project = _project_with_typo(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "migrate.cli", *command, "--env", "sandbox"],
        cwd=project,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "data-switch" in r.stderr and "catchup_timout_s" in r.stderr
    assert not (project / "rb").exists()


def test_show_lists_the_step_settings(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from phases.p5_cutover.data_switch import DataSwitch

    if not DataSwitch.declares_settings():
        pytest.skip("data-switch declares no Settings model yet (its owner is converting it)")
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("BPMIGRATE_ENV", raising=False)
    outcome, out, err = _run(["show", "data-switch", "--env", "sandbox", "--json"], capsys)
    assert outcome == "exit 0", err + out
    rows = {r["key"]: r for r in json.loads(out)["settings"]}
    assert set(rows) == set(DataSwitch.Settings.model_fields)
    for row in rows.values():
        assert {"key", "type", "default", "description", "value"} <= set(row) and row["type"]
    outcome, out, _ = _run(["show", "data-switch", "--env", "sandbox"], capsys)
    assert outcome == "exit 0" and "settings (key: type = value" in out
    assert all(key in out for key in rows)


def test_sandbox_commands_keep_their_default_under_bpmigrate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from migrate.sandbox import cli as sandbox_cli

    seen: list[str] = []

    def resolve(ctx: Any, config: str | None, env: str | None, json_out: bool) -> tuple[str | None, str, bool]:
        seen.append(ctx.find_root().params.get("env") or "")
        return config, env or "sandbox", json_out

    monkeypatch.setattr(sandbox_cli, "_resolve", resolve)
    monkeypatch.setenv("BPMIGRATE_ENV", "production")
    CliRunner().invoke(cli.app, ["sandbox", "status"])
    assert seen == [""]  # the root --env stays unset: the sandbox commands default to their sandbox
