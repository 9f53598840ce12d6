"""The console's pages: each module here that defines ``PAGE`` is registered by
:func:`gateway.console.app.create_app` (menu in the order of the module names)."""
