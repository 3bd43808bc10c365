"""Phase 5 — optimization and cutover: cost controls, autoscaling, hardening, the pre-cutover checklist, the gated
weighted DNS cutover with automatic revert, and the post-cutover watch.

The old (Compose) stack keeps running through all of phase 5: every step here can send traffic back to it.
"""

NUMBER = 5
TITLE = "cutover"
# step modules in definition order (the graph orders by phase, then depends_on, then this order)
ORDER = (
    "cost_controls",
    "autoscale_tune",
    "security_hardening",
    "pre_cutover_check",
    "dns_cutover",
    "post_cutover_watch",
    "db_rollback_point",
    "data_switch",
)
