"""Phase 6 — post-migration: final backup, decommission of the old Compose stack, archive of the old configuration,
cost report and performance review.

Order matters and is enforced by dependencies: nothing is stopped before a checksummed final backup exists and
verifies; decommission is the one-way step of the whole migration and waits at a manual gate.
"""

NUMBER = 6
TITLE = "cleanup"
# step modules in definition order (the graph orders by phase, then depends_on, then this order)
ORDER = (
    "final_backup",
    "decommission",
    "archive",
    "target_cleanup",
    "cost_report",
    "perf_review",
)
