"""One [targets] table for the plan's figures, and no bundled sample file outside a sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrate.config import Targets, load
from migrate.errors import ConfigError
from migrate.samples import refuse_samples, sample_settings
from tests.engine_helpers import make_project, run_cli

REPO = Path(__file__).resolve().parent.parent


def test_the_plans_figures_come_from_one_targets_table() -> None:
    cfg = load(REPO / "migrate.toml")
    prod = cfg.targets_for("production")
    assert (prod.monthly_budget_usd, prod.cost_reduction_pct, prod.rps) == (245_000, 40, 10_000)
    assert (prod.api_p95_ms, prod.ml_p95_ms, prod.availability, prod.error_rate) == (200, 500, 0.999, 0.001)
    assert cfg.targets_for("sandbox").rps < prod.rps  # the sandbox overrides what 2 cores can offer, nothing else
    assert cfg.targets_for("sandbox").model_dump(exclude={"rps"}) == prod.model_dump(exclude={"rps"})
    assert Targets(cost_baseline_monthly_usd=400_000).cost_ceiling_usd == 240_000
    assert Targets().cost_ceiling_usd is None


def test_cost_controls_budget_defaults_to_the_target(tmp_path: Path) -> None:
    from migrate.testing import make_context
    from phases.p5_cutover.cost_controls import CostControls

    env = load(REPO / "migrate.toml").env("production")
    ctx = make_context(tmp_path, env, "cost-controls")
    assert CostControls().budget_spec(ctx)["amount_usd"] == 245_000
    ctx.targets = Targets(monthly_budget_usd=180_000)
    assert CostControls().budget_spec(ctx)["amount_usd"] == 180_000


def test_a_misspelled_target_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    toml = project / "migrate.toml"
    toml.write_text(toml.read_text() + "\n[targets]\nrps = 500\n")
    assert load(toml).targets.rps == 500
    toml.write_text(toml.read_text().replace("[environments.other]\n", "[environments.other]\ntargets = { p95 = 3 }\n"))
    with pytest.raises(ConfigError) as info:
        load(toml)
    assert "p95" in info.value.what and info.value.exit_code == 2


def test_a_production_plan_with_the_sample_compose_file_is_refused() -> None:
    from phases.p6_cleanup.archive import Archive
    from phases.p6_cleanup.decommission import Decommission

    cfg = load(REPO / "migrate.toml")
    refuse_samples(cfg, "sandbox", [Archive, Decommission])  # the sandbox rehearses on the sample
    assert ("compose_file", "templates/compose/docker-compose.yml") in sample_settings(cfg, "production", Decommission)
    with pytest.raises(ConfigError) as info:
        refuse_samples(cfg, "production", [Decommission])
    err = info.value
    assert err.exit_code == 2
    assert "decommission" in err.what and "compose_file" in err.what and "sample" in err.what
    assert "[environments.production.steps.decommission] compose_file" in err.next_cmd


def test_plan_refuses_a_sample_path_outside_a_sandbox_end_to_end(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    (project / "templates" / "compose").mkdir(parents=True)
    (project / "templates" / "compose" / "docker-compose.yml").write_text("services: {}\n")
    toml = project / "migrate.toml"
    toml.write_text(
        toml.read_text()
        + '\n[environments.rehearsal]\nkind = "sandbox"\n'
        + '\n[steps.touch-a]\nsource_files = ["notes.txt", "templates/compose/docker-compose.yml"]\n'
    )
    refused = run_cli(project, "--json", "plan", "touch-a")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    error = json.loads(refused.stdout)
    assert "source_files" in error["what"] and "touch-a" in error["what"]
    assert not (project / "state" / "work").exists()  # nothing ran
    assert run_cli(project, "--env", "rehearsal", "plan", "touch-a").returncode == 0
    # the real file, set for the environment, is accepted
    toml.write_text(toml.read_text() + '\n[environments.test.steps.touch-a]\nsource_files = ["/srv/compose.yml"]\n')
    assert run_cli(project, "plan", "touch-a").returncode == 0
