"""Shared pytest configuration: fixture plugins with real local servers (see tests/servers_plugin.py)."""

pytest_plugins = ["tests.servers_plugin"]
