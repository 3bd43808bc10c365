"""Shared pytest configuration: fixture plugins, and the sandbox's Terraform root for tests.

* tests/servers_plugin.py — real local servers (moto, PostgreSQL 16 + pgvector, Redis), started by the same code
  the sandbox uses (migrate/adapters/localservers.py).
* tests/kube_double.py — ``kube_api``: a clearly named test double of the Kubernetes API server (kmock, real HTTP).

Sandbox rehearsals in tests use the terraform_data stand-in root (``BPMIGRATE_SANDBOX_TERRAFORM=stand-in``): the
project's real modules against moto cost minutes of provider waiters per run, so only the tests that are about them
(marked ``aws_provider``, in test_sandbox_terraform.py and test_terraform_modules.py) choose them, explicitly.
"""

import os

import pytest

os.environ.setdefault("BPMIGRATE_SANDBOX_TERRAFORM", "stand-in")

pytest_plugins = ["tests.servers_plugin", "tests.kube_double"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow end-to-end tests first, the slowest of them (real AWS provider waiters) before the others; otherwise
    file order. With xdist workers the few tests that take minutes start at once on different workers instead of
    lengthening the tail of the run. Deterministic, as xdist needs."""
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, item.get_closest_marker("aws_provider") is None))
