"""What the console's templates use besides the request: ``_``, ``csrf_field()``, the menu,
``url_with()``, and the ``ns`` filter that shows a time as the worksite reads its clocks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, g, request, url_for
from markupsafe import Markup

from siteclock.gateway.console.config import LANGUAGES
from siteclock.gateway.console.i18n import _
from siteclock.gateway.console.web import CSRF_FIELD, console

SITE_TZ = ZoneInfo("Europe/Brussels")
"""Times are shown as the worksite reads its clocks."""


def format_ns(value: int | None, pattern: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Nanoseconds since the epoch as the worksite's local time (empty for none)."""
    if value is None:
        return ""
    return datetime.fromtimestamp(value / 1e9, UTC).astimezone(SITE_TZ).strftime(pattern)


def install(app: Flask) -> None:
    """Give ``app``'s templates the console's helpers."""

    def csrf_field() -> Markup:
        return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, g.csrf)

    def nav_items() -> list[tuple[str, str]]:
        user = g.get("user")
        if user is None:
            return []
        return [
            (endpoint, _(label))
            for page in console().pages
            if user.is_admin or not page.admin_only
            for endpoint, label in page.nav
        ]

    def url_with(**changes: Any) -> str:
        """This page's URL with some query arguments changed (``None`` removes one)."""
        args = {**request.args.to_dict(), **changes}
        return url_for(
            request.endpoint or "home",
            **(request.view_args or {}),
            **{k: v for k, v in args.items() if v not in (None, "")},
        )

    app.jinja_env.globals.update(
        _=_, csrf_field=csrf_field, nav_items=nav_items, languages=LANGUAGES,
        url_with=url_with,
    )  # fmt: skip
    app.jinja_env.filters["ns"] = format_ns
