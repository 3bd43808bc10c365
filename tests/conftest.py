"""Shared pytest configuration: fixture plugins.

* tests/servers_plugin.py — real local servers (moto, PostgreSQL 16 + pgvector, Redis), started by the same code
  the sandbox uses (migrate/adapters/localservers.py).
* tests/kube_double.py — ``kube_api``: a clearly named test double of the Kubernetes API server (kmock, real HTTP).
"""

pytest_plugins = ["tests.servers_plugin", "tests.kube_double"]
