"""The proof of the cutover: a logging writer drives a steady write+read mix through the sandbox router for the
whole of phase 5 (stream, data-switch with both stacks fenced, dns-cutover 10/50/100 %, rollback through the
reverse stream); every acknowledged write is found exactly once in the primary at 100 % and after the rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cutover_stack import Stack, rehearse, stack  # noqa: F401 - fixture


@pytest.mark.slow
def test_every_acknowledged_write_survives_the_switch_dns_and_a_rollback_after_100(
    stack: Stack,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    report = rehearse(stack, tmp_path / "work", rollback=True)
    at_100 = report["at_100"]
    assert at_100["acknowledged"] > 100 and at_100["lost"] == 0 and at_100["duplicated"] == 0, report
    final = report["final"]
    assert final["primary"] == "source" and final["lost"] == 0 and final["duplicated"] == 0, report
    assert final["acknowledged"] > at_100["acknowledged"]  # the writer kept writing through the rollback
    assert report["by_backend"].get("new.betterprompts.test", 0) > 0  # traffic really reached the new stack
