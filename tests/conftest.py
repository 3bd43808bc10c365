"""Shared pytest configuration: fixture plugins, and the sandbox's Terraform root for tests.

* tests/servers_plugin.py — real local servers (moto, PostgreSQL 16 + pgvector, Redis), started by the same code
  the sandbox uses (migrate/adapters/localservers.py).
* tests/kube_double.py — ``kube_api``: a clearly named test double of the Kubernetes API server (kmock, real HTTP).

Sandbox rehearsals in tests use the terraform_data stand-in root (``BPMIGRATE_SANDBOX_TERRAFORM=stand-in``): the
project's real modules against moto cost minutes of provider waiters per run, so only the tests that are about them
(marked ``aws_provider``, in test_sandbox_terraform.py and test_terraform_modules.py) choose them, explicitly.
"""

import os

os.environ.setdefault("BPMIGRATE_SANDBOX_TERRAFORM", "stand-in")

pytest_plugins = ["tests.servers_plugin", "tests.kube_double"]
