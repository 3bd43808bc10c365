"""bpmigrate: an executable, resumable, auditable migration engine.

The engine knows nothing about BetterPrompts: it loads step classes from the phases directory named in
``migrate.toml`` and runs them through one state machine, recording every transition in the ledger.
"""

__version__ = "0.1.0"
