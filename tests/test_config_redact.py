"""Configuration errors (one precise message, exit 2) and secret redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.config import load
from migrate.errors import BpmError, ConfigError
from migrate.redact import redact, redact_obj, register
from tests.engine_helpers import make_project, run_cli

GOOD_HEAD = '[project]\nname = "x"\nphases_dir = "testphases"\ndefault_env = "test"\n'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[project\n", "TOML syntax error"),
        (GOOD_HEAD + '[environments.test]\nkind = "moon"\n', "environments.test.kind"),
        (GOOD_HEAD + "[environments.test]\nlock_ttl_seconds = 1\n", "lock_ttl_seconds"),
        (GOOD_HEAD + "[environments.test]\nfrobnicate = 1\n", "frobnicate"),
        (GOOD_HEAD + '[environments.test.postgres.source]\npassword = "hunter2"\n', "literal secret"),
        (GOOD_HEAD + '[environments.test]\nledger_url = "postgresql://bp:hunter2@db/ledger"\n', "embedded password"),
        ('[project]\nphases_dir = "../../etc"\ndefault_env = "test"\n[environments.test]\n', "outside the project"),
        ('[project]\ndefault_env = "nope"\n[environments.test]\n', "default_env"),
        ('[project]\ndefault_env = "test"\n[environments."../x"]\n', "not allowed"),
        ("[project]\n", "environments"),
    ],
)
def test_bad_config_one_message_exit_2(tmp_path: Path, body: str, expected: str) -> None:
    project = make_project(tmp_path)
    (project / "migrate.toml").write_text(body)
    r = run_cli(project, "status")
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr
    assert "Traceback" not in r.stderr
    assert "hunter2" not in r.stderr + r.stdout
    assert "next:" in r.stderr


def test_unknown_env_and_step(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    r = run_cli(project, "--env", "prod", "status")
    assert r.returncode == 2 and "unknown environment 'prod'" in r.stderr
    r = run_cli(project, "show", "touch-z")
    assert r.returncode == 2 and "unknown step 'touch-z'" in r.stderr


def test_load_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.toml")
    assert info.value.exit_code == 2 and "not found" in info.value.what


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://bp:s3cr3t-pw@db:5432/x", "s3cr3t-pw"),
        ("host=db password=s3cr3t-pw user=bp", "s3cr3t-pw"),
        ('{"password": "s3cr3t-pw", "user": "bp"}', "s3cr3t-pw"),
        ("PGPASSWORD=s3cr3t-pw pg_dump", "s3cr3t-pw"),
        ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
        ("redis://:s3cr3t-pw@cache:6379/0", "s3cr3t-pw"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"),
        ("api_key: 'zzzz-1234-yyyy'", "zzzz-1234-yyyy"),
    ],
)
def test_redact_patterns(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "***" in out


def test_redact_registered_values_and_objects() -> None:
    register("correct-horse-battery")
    assert "correct-horse-battery" not in redact("the value correct-horse-battery leaked")
    obj = redact_obj({"db": {"password": "p4ss", "host": "h"}, "list": ["token=abc123def"], "n": 3})
    assert obj["db"]["password"] == "***" and obj["db"]["host"] == "h"
    assert "abc123def" not in obj["list"][0] and obj["n"] == 3


def test_errors_are_redacted() -> None:
    err = BpmError("failed to connect to postgresql://u:pw-secret-1@h/db", "password=pw-secret-2", "retry")
    assert "pw-secret-1" not in str(err) and "pw-secret-2" not in str(err)
