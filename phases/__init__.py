"""The BetterPrompts migration plan: one package per phase, one module per step (loaded by migrate.plan)."""
