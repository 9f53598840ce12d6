"""The top layer: programs that assemble a whole site from every role (the demo).

Nothing below imports from here; see ``docs/architecture.md`` for the layers and the
import-linter contracts that keep them.
"""
