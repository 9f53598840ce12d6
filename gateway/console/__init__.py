"""The employer's console: a web app served by the gateway over HTTPS (docs/console.md).

:func:`create_app` builds it; :mod:`.web` is what its pages use (``current_user()``,
``scoped_workplaces()``, ``audit()``, ``Page``); :mod:`.i18n` gives ``_()``; the pages are the
modules of :mod:`.pages`.
"""

from __future__ import annotations

from siteclock.gateway.console.app import create_app
from siteclock.gateway.console.config import ConsoleConfig

__all__ = ["ConsoleConfig", "create_app"]
