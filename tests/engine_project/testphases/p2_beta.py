"""Phase 2 of the engine-test project: a one-way fence and a gated step."""

from __future__ import annotations

from testphases.p1_alpha import FileStep

from migrate.step import Reversibility


class Fence(FileStep):
    """A one-way step (like a DNS cutover at weight 100 after bake time)."""

    id = "fence"
    phase = 2
    depends_on = ("touch-c",)
    filename = "fence"
    reversibility = Reversibility.ONE_WAY


class Gated(FileStep):
    """Needs an operator's approval."""

    id = "gated"
    phase = 2
    depends_on = ("fence",)
    filename = "gated"
    gate = "confirm the maintenance window is announced"
