"""Provisioning that runs on the terminal: install flow, terminal.toml, rebind, key rotation."""
