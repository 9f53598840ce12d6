"""Console pages that need the provisioning layer (worker CSV rules, worker references): found
by :func:`gateway.console.app.discover_pages` like the console's own pages."""
