"""Hostile inputs: thousands of malformed migrate.toml files and CLI argument combinations.

Every one must end in a clear error (first line `error: …`, no traceback) with exit code 2, and the ledger (and the
whole state/ directory) byte-for-byte unchanged. Runs the real CLI entry point in-process for speed.
"""

from __future__ import annotations

import hashlib
import io
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate import cli
from tests.engine_helpers import make_project, run_cli

BASE: dict[str, Any] = {
    "project": {"name": "engine-test", "phases_dir": "testphases", "state_dir": "state", "default_env": "test"},
    "environments": {
        "test": {
            "kind": "aws",
            "lock_ttl_seconds": 30,
            "aws": {"region": "us-east-1"},
            "postgres": {"source": {"host": "db", "port": 5432, "password_env": "PGPW"}},
            "redis": {"target": {"host": "cache", "port": 6379}},
            "terraform": {"root": "terraform"},
            "kube": {"namespace": "bp"},
            "steps": {"touch-a": {"jobs": 2}},
        }
    },
    "steps": {"touch-b": {"x": 1}},
}

# (path to a strict table) for unknown-key injection
STRICT_TABLES = [
    ("project",),
    ("environments", "test"),
    ("environments", "test", "aws"),
    ("environments", "test", "postgres", "source"),
    ("environments", "test", "redis", "target"),
    ("environments", "test", "terraform"),
    ("environments", "test", "kube"),
]
TYPED_FIELDS: list[tuple[tuple[str, ...], list[Any]]] = [
    (("environments", "test", "lock_ttl_seconds"), ["sixty", 0, 1, 10**9, -5, 3.5, [1], {"a": 1}]),
    (("environments", "test", "postgres", "source", "port"), [0, 70000, -1, "5432x", 10**30, [5432], True]),
    (("environments", "test", "redis", "target", "port"), [0, 65536, "abc", {"p": 1}]),
    (("environments", "test", "kind"), ["moon", "", "SANDBOX", 1, ["aws"]]),
    (("environments", "test", "terraform", "engine"), ["pulumi", 3, ""]),
    (("environments", "test", "redis", "target", "cluster_mode"), ["maybe", [True], {"x": 1}]),
    (("environments", "test", "aws"), ["us-east-1", 5, [1, 2]]),
    (("project", "name"), [42, ["x"], {"y": 1}]),
]
SECRET_KEYS = ["password", "db_password", "token", "api_key", "secret", "aws_secret_access_key", "auth_token", "private_key"]
SECRET_PLACES = [("environments", "test"), ("environments", "test", "steps", "touch-a"), ("steps", "touch-b"), ("environments", "test", "postgres", "source")]
PATH_KEYS = ["phases_dir", "state_dir", "templates_dir", "runbooks_dir"]
TRAVERSALS = ["../outside", "../../etc", "/etc", "a/../../b", "..", "testphases/../../x", "/tmp/elsewhere"]
TEXTY = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=30)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else _toml_value(key)


def dump(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    scalars = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    out = ""
    if prefix and (scalars or not tables):
        out += "[" + ".".join(_key(p) for p in prefix) + "]\n"
    for k, v in scalars.items():
        out += f"{_key(k)} = {_toml_value(v)}\n"
    for k, v in tables.items():
        out += dump(v, (*prefix, k))
    return out


def _copy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    return doc


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = doc
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


@st.composite
def hostile_config(draw: st.DrawFn) -> str:
    doc = _copy(BASE)
    kind = draw(st.sampled_from(["unknown_key", "wrong_type", "traversal", "secret", "url_secret", "env_name", "syntax", "default_env", "huge"]))
    if kind == "unknown_key":
        table = draw(st.sampled_from(STRICT_TABLES))
        key = draw(st.sampled_from(["frobnicate", "passwrod", "regoin", "ünïcode", "x" * 200, "dbname_typo", "sslmod"]))
        _set(doc, (*table, key), draw(st.one_of(st.integers(), TEXTY, st.booleans())))
    elif kind == "wrong_type":
        path, values = draw(st.sampled_from(TYPED_FIELDS))
        _set(doc, path, draw(st.sampled_from(values)))
    elif kind == "traversal":
        _set(doc, ("project", draw(st.sampled_from(PATH_KEYS))), draw(st.sampled_from(TRAVERSALS)))
    elif kind == "secret":
        place = draw(st.sampled_from(SECRET_PLACES))
        _set(doc, (*place, draw(st.sampled_from(SECRET_KEYS))), draw(st.text(min_size=1, max_size=20).filter(lambda s: s.strip() != "")))
    elif kind == "url_secret":
        url = f"postgresql://bp:{draw(st.text(alphabet='abcdefXYZ123!$', min_size=3, max_size=12))}@db:5432/x"
        place = draw(st.sampled_from([("environments", "test", "ledger_url"), ("environments", "test", "steps", "touch-a", "dsn"), ("steps", "touch-b", "url")]))
        _set(doc, place, url)
    elif kind == "env_name":
        name = draw(st.sampled_from(["Prod", "../x", "a b", "ünï", "x" * 41, "1abc", "-dash", "a/b", "."]))
        doc["environments"][name] = {"kind": "aws"}
    elif kind == "syntax":
        text = dump(doc)
        cut = draw(st.integers(min_value=0, max_value=len(text)))
        return text[:cut] + draw(st.sampled_from(["[[[", "= =", "[project\n", 'x = "unterminated', "\x01", "key = [1,,2]"]))
    elif kind == "default_env":
        doc["project"]["default_env"] = draw(st.sampled_from(["nope", "production", "", "TEST"]))
    elif kind == "huge":
        _set(doc, ("environments", "test", "lock_ttl_seconds"), 10 ** draw(st.integers(min_value=6, max_value=40)))
    return dump(doc)


HOSTILE_ARGS = st.one_of(
    st.tuples(st.just("--env"), st.sampled_from(["../../etc", "prod", "Ünï", "", "x" * 300, "test;rm -rf /"]), st.sampled_from(["status", "apply", "plan", "rollback", "history"])),
    st.tuples(st.sampled_from(["show", "plan"]), st.sampled_from(["nope", "../../x", "touch-a\x1b[31m", "ph", "phase-9"])),
    st.tuples(st.just("apply"), st.just("--step"), st.sampled_from(["nope", "../x", "💥"]), st.just("--yes")),
    st.tuples(st.just("apply"), st.just("--phase"), st.sampled_from(["9", "0", "phase-7", "data2", "-1"]), st.just("--yes")),
    st.tuples(st.just("apply"), st.just("--step"), st.just("touch-a"), st.just("--phase"), st.just("1")),
    st.tuples(st.just("rollback"), st.just("--step"), st.just("touch-a"), st.just("--to"), st.just("touch-b")),
    st.tuples(st.sampled_from(["apply", "status", "rollback", "frobnicate"]), st.sampled_from(["--bogus", "--yes=maybe", "-Z", "--phase"])),
    st.tuples(st.just("--config"), st.sampled_from(["/nonexistent/migrate.toml", "../../../../etc/passwd", "state"]), st.just("status")),
    st.tuples(st.just("mark"), st.just("touch-a"), st.just("--as"), st.sampled_from(["done", "applied", "VERIFIED"]), st.just("--reason"), st.just("x")),
    st.tuples(st.just("status"), st.just("--interval"), st.sampled_from(["fast", "1e9999x"])),
)


def _snapshot(state_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(state_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(state_dir.rglob("*")) if p.is_file()}


def _invoke(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["bpmigrate", *argv]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        code = int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def seeded_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    project = make_project(tmp_path_factory.mktemp("hostile"))
    assert run_cli(project, "apply", "--step", "touch-a", "--yes").returncode == 0
    # settle the WAL into the main file so the snapshot is stable
    assert run_cli(project, "status").returncode == 0
    yield project


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=hostile_config(), command=st.sampled_from([["status"], ["steps"], ["plan"], ["apply", "--all", "--yes"], ["rollback", "--yes"], ["history"], ["show", "touch-a"], ["unlock", "--force"]]))
def test_hostile_config_files(seeded_project: Path, monkeypatch: pytest.MonkeyPatch, text: str, command: list[str]) -> None:
    toml = seeded_project / "migrate.toml"
    original = toml.read_text()
    before = _snapshot(seeded_project / "state")
    monkeypatch.chdir(seeded_project)
    try:
        toml.write_text(text, encoding="utf-8", errors="surrogatepass")
        code, out, err = _invoke(command)
    finally:
        toml.write_text(original)
    assert code == 2, (text, command, out, err)
    assert err.startswith("error: "), err
    assert "Traceback" not in err + out
    assert _snapshot(seeded_project / "state") == before


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(args=HOSTILE_ARGS)
def test_hostile_cli_arguments(seeded_project: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    before = _snapshot(seeded_project / "state")
    monkeypatch.chdir(seeded_project)
    code, out, err = _invoke(list(args))
    assert code == 2, (args, out, err)
    assert "Traceback" not in err + out
    assert err.strip(), args
    assert _snapshot(seeded_project / "state") == before


def test_secret_literal_is_never_echoed(seeded_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = seeded_project / "migrate.toml"
    original = toml.read_text()
    monkeypatch.chdir(seeded_project)
    try:
        toml.write_text(original.replace("[environments.test]\n", '[environments.test]\nledger_url = "postgresql://bp:Sup3rS3cret@db/x"\n'))
        code, out, err = _invoke(["status"])
    finally:
        toml.write_text(original)
    assert code == 2 and "Sup3rS3cret" not in out + err and "embedded password" in err
