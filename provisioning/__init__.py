"""Installer and employer tooling, split by the machine it runs on.

``terminal`` runs on the terminal (never imports the gateway), ``gateway`` on the gateway
(never imports the terminal or its hardware), ``shared`` is what both speak (the core only);
``cli`` is the command line on top of both. ``make lint`` checks it (docs/architecture.md).
"""
