"""The local sandbox: rehearse the whole migration on one machine against real engines.

``bpmigrate sandbox up`` starts a moto server (AWS), a source and a target PostgreSQL 16 + pgvector, a source and a
target Redis on free loopback ports, records their endpoints and PIDs in ``state/<env>/endpoints.json`` (merged over
the ``sandbox`` environment by :func:`migrate.config.load`) and writes ``state/<env>/terraform.tfvars.json`` for the
stand-in Terraform root. ``seed`` fills the source with a deterministic BetterPrompts-shaped dataset.

Modules: :mod:`.dataset` (pure data generation), :mod:`.orchestrate` (up/down/status/seed/reset as library functions
returning result objects), :mod:`.cli` (the typer layer mounted as ``bpmigrate sandbox``).
"""
