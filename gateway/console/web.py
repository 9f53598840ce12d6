"""What every console page uses: who is asking, what they may see, the audit trail, CSRF.

A blueprint of the console (``gateway/console/pages/<name>.py``) imports these::

    from siteclock.gateway.console.web import (
        Page, admin_required, audit, console, current_user, scoped_workplaces,
    )
    from siteclock.gateway.console.i18n import _

    blueprint = Blueprint("terminals", __name__, url_prefix="/terminals")
    PAGE = Page(blueprint, nav=(("terminals.index", "Terminals"),))

    @blueprint.get("/")
    def index():
        scope = scoped_workplaces()      # None: every worksite (administrator)
        rows = console().db.some_named_read(scope)
        return render_template("terminals.html", rows=rows)

    @blueprint.post("/<terminal_id>/decommission")
    def decommission(terminal_id):
        if not current_user().can_see(workplace_of(terminal_id)):
            abort(404)                   # another worksite's: as if it did not exist
        ...
        audit("terminal.decommission", {"terminal": terminal_id})

Every page needs a logged-in user unless its view is marked :func:`public` (the health probe,
and ``/metrics`` which checks its own token). Every POST, PUT, PATCH and DELETE needs the
session's CSRF token (form field ``csrf_token``, or header ``X-CSRF-Token`` for JSON calls);
templates write it with ``{{ csrf_field() }}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, g, request

from siteclock.gateway.console.accounts import Accounts, User
from siteclock.gateway.console.config import ConsoleConfig
from siteclock.gateway.console.login_limit import LoginLimit
from siteclock.gateway.db import GatewayDB
from siteclock.gateway.identifiers import InvalidIdentifier, normalize_workplace
from siteclock.inss_shape import redact

F = TypeVar("F", bound=Callable[..., Any])

SESSION_COOKIE = "siteclock_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Page:
    """A console blueprint and its entries in the menu: ``(endpoint, English label)``.
    ``admin_only``: the whole blueprint is for administrators (and hidden from others)."""

    blueprint: Blueprint
    nav: tuple[tuple[str, str], ...] = ()
    admin_only: bool = False


@dataclass
class Console:
    """What the app holds for its pages (``console()``): the database, the settings, the
    accounts, the login limit, the INSS key file (to show masked INSS), and the pages."""

    db: GatewayDB
    config: ConsoleConfig
    accounts: Accounts
    login_limit: LoginLimit
    inss_key_file: Path | None = None
    pages: list[Page] = field(default_factory=list)
    clock_ns: Callable[[], int] = time.time_ns
    extras: dict[str, Any] = field(default_factory=dict)
    """What other parts hand their pages (c-ops: the health tracker, the alerter...)."""


def console() -> Console:
    return current_app.extensions["siteclock_console"]  # type: ignore[no-any-return]


def current_user() -> User:
    """The logged-in user of this request (a page without one never runs, see :func:`public`)."""
    user = getattr(g, "user", None)
    if user is None:
        abort(401)
    return user  # type: ignore[no-any-return]


def scoped_workplaces() -> tuple[str, ...] | None:
    """The worksites the current user may see; ``None`` means every worksite."""
    return current_user().scope()


def visible_worksite(reference: str | None) -> str | None:
    """A worksite named in a request (``?worksite=``), normalised; 404 when it is not a
    Declaration of Works reference or not one the user may see."""
    if not reference:
        return None
    try:
        reference = normalize_workplace(reference)
    except InvalidIdentifier:
        abort(404)
    if not current_user().can_see(reference):
        abort(404)
    return reference


def public(view: F) -> F:
    """Mark a view as served without login (the health probe, ``/metrics``)."""
    view.siteclock_public = True  # type: ignore[attr-defined]
    return view


def csrf_exempt(view: F) -> F:
    """Mark a public view whose POST carries its own credential (none does today)."""
    view.siteclock_csrf_exempt = True  # type: ignore[attr-defined]
    return view


def admin_required(view: F) -> F:
    """Only administrators; anyone else gets 403."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current_user().is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def local_path(target: str | None, default: str) -> str:
    """``target`` when it is a path on this console, else ``default`` (a form's "back" or a
    login's "next" never sends anyone to another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    return default if parts.scheme or parts.netloc else target


def remote_address() -> str:
    """The client's address as the server saw it (no proxy headers are trusted)."""
    return str(request.remote_addr or "")


def audit(action: str, detail: dict[str, Any] | str = "", *, username: str | None = None) -> None:
    """One line of the audit trail: who (the current user, or ``username``), when, what
    (``action`` such as ``registration.requeue``) and the details (JSON)."""
    who = username if username is not None else getattr(getattr(g, "user", None), "username", "")
    text = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
    text = redact(text)  # an INSS typed into a user-name field never reaches the trail
    app = console()
    app.db.add_console_audit(app.clock_ns(), redact(who) or "-", action, text, remote_address())
