"""Runbook pages generated from the steps (bpmigrate runbook export)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from migrate.runbook import export_runbooks, md_text
from migrate.step import Check, Outputs, PlanResult, Reversibility, Step, StepContext, StepSettings


class Alpha(Step):
    """Create the widget bucket.

    Makes ``bucket-x`` with versioning.
    """

    id = "alpha"
    phase = 1
    reversibility = Reversibility.COMPENSABLE

    def plan(self, ctx: StepContext) -> PlanResult:
        return PlanResult()

    def apply(self, ctx: StepContext) -> Outputs:
        return {}

    def verify(self, ctx: StepContext) -> list[Check]:
        return []

    def rollback(self, ctx: StepContext) -> None:
        """Deletes the bucket after emptying it."""


class Alpha2(Alpha):
    """A step with settings."""

    id = "alpha2"

    class Settings(StepSettings):
        workers: int = Field(4, description="parallel | copies")
        mode: str = Field("verify", description="``verify`` or ``full``")


class Omega(Alpha):
    """Stop the old stack.

    Irreversible by nature.
    """

    id = "omega"
    phase = 6
    depends_on = ("alpha",)
    reversibility = Reversibility.ONE_WAY
    gate = "stops production"
    destructive = True
    procedures = (
        ("Old stack restart", "bpmigrate rollback --step omega --force-past-fence", "only before data moves"),
    )

    def rollback(self, ctx: StepContext) -> None:
        """Restart it with ``compose up``."""


def test_export_writes_one_page_per_phase_and_rollback(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hand-written\n")
    paths = export_runbooks([Alpha, Omega], tmp_path, {1: "foundation", 6: "cleanup"})
    assert [p.name for p in paths] == ["phase-1-foundation.md", "phase-6-cleanup.md", "rollback.md"]
    assert (tmp_path / "README.md").read_text() == "hand-written\n"  # never overwritten
    p1 = (tmp_path / "phase-1-foundation.md").read_text()
    assert "## `alpha` — Create the widget bucket." in p1
    assert "Makes `bucket-x` with versioning." in p1  # docstring body, RST backticks converted
    assert "bpmigrate --env <env> rollback --step alpha\n" in p1
    assert "Deletes the bucket after emptying it." in p1 and "Compensable" in p1
    p6 = (tmp_path / "phase-6-cleanup.md").read_text()
    assert "**Manual gate:** stops production" in p6 and "**Destructive:** yes" in p6
    assert "approve omega --reason" in p6 and "apply --step omega --yes" in p6
    assert "rollback --step omega --force-past-fence" in p6 and "**One-way**" in p6
    assert "Restart it with `compose up`." in p6
    rb = (tmp_path / "rollback.md").read_text()
    assert rb.index("Phase 6") < rb.index("Phase 1")  # newest phase first
    assert "| Old stack restart | `bpmigrate rollback --step omega --force-past-fence` | `omega` |" in rb
    # idempotent: a second export writes the same bytes
    before = {p: p.read_bytes() for p in paths}
    export_runbooks([Alpha, Omega], tmp_path, {1: "foundation", 6: "cleanup"})
    assert {p: p.read_bytes() for p in paths} == before


def test_real_plan_pages_document_the_rollback_procedures(tmp_path: Path) -> None:
    from migrate.plan import load_graph

    root = Path(__file__).resolve().parent.parent
    graph = load_graph(root / "phases")
    export_runbooks(list(graph.steps), tmp_path, graph.phases)
    cutover = (tmp_path / "phase-5-cutover.md").read_text()
    dns = graph.get("dns-cutover")
    assert "## `dns-cutover`" in cutover
    assert md_text(dns.describe().splitlines()[-1].strip()) in cutover  # the step's own documentation
    assert md_text((dns.rollback.__doc__ or "").strip().splitlines()[0]) in cutover  # and its rollback notes
    rb = (tmp_path / "rollback.md").read_text()
    assert "DNS rollback to the old stack" in rb and "rollback --phase cutover" in rb
    assert "DB rollback" in rb and "rollback --to pre-cutover-check --force-past-fence" in rb
    assert "`decommission` (one-way)" in rb


def test_settings_table_per_step(tmp_path: Path) -> None:
    export_runbooks([Alpha, Alpha2], tmp_path, {1: "foundation"})
    page = (tmp_path / "phase-1-foundation.md").read_text()
    assert "**Settings** (`[steps.alpha2]` in migrate.toml)" in page
    assert "| `workers` | int | `4` | parallel \\| copies |" in page
    assert "| `mode` | str | `verify` | `verify` or `full` |" in page
    assert page.count("**Settings**") == 1  # alpha declares none


def test_md_text() -> None:
    assert md_text("run ``a b`` and ``c``") == "run `a b` and `c`"
