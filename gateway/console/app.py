"""The console's Flask app: login required, CSRF, security headers, errors and the pages.

:func:`create_app` builds it on an open gateway database::

    app = create_app(db, ConsoleConfig(), inss_key_file=cfg.inss_key_path)
    server = serve_console(app, config)          # gateway/console/server.py: HTTPS

Pages are the modules of the packages in :data:`PAGE_PACKAGES` that define ``PAGE`` (a
:class:`~gateway.console.web.Page`): each is found and registered by itself, so adding a page is
adding a module (see :mod:`gateway.console.web` for what a page uses). The provisioning layer,
which sits above the gateway, contributes the workers page this way: it imports the console,
never the other way round (the console finds it by name at start, as a plug-in).

Who is asking is :mod:`.sessions`' job; what templates use, :mod:`.templating`'s.
"""

from __future__ import annotations

import importlib
import pkgutil
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import (
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from siteclock.gateway.console import templating
from siteclock.gateway.console.accounts import Accounts
from siteclock.gateway.console.config import LANGUAGES, ConsoleConfig
from siteclock.gateway.console.i18n import LANG_COOKIE, _
from siteclock.gateway.console.login_limit import LoginLimit
from siteclock.gateway.console.sessions import PRELOGIN_COOKIE, load_session
from siteclock.gateway.console.web import (
    CSRF_FIELD,
    CSRF_HEADER,
    UNSAFE_METHODS,
    Console,
    Page,
    audit,
)
from siteclock.gateway.db import GatewayDB

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",
    "Cache-Control": "no-store",
}


PAGE_PACKAGES = (
    "siteclock.gateway.console.pages",
    "siteclock.provisioning.gateway.console_pages",  # workers and badges (needs provisioning)
)


def discover_pages() -> list[Page]:
    """Every ``PAGE`` of the modules of :data:`PAGE_PACKAGES`, menu order by module name."""
    modules = []
    for package_name in PAGE_PACKAGES:
        package = importlib.import_module(package_name)
        modules += [
            f"{package_name}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
        ]
    found = []
    for name in sorted(modules, key=lambda m: m.rpartition(".")[2]):
        page = getattr(importlib.import_module(name), "PAGE", None)
        if isinstance(page, Page):
            found.append(page)
    return found


def create_app(
    db: GatewayDB,
    config: ConsoleConfig | None = None,
    *,
    inss_key_file: Path | None = None,
    clock: Callable[[], float] = time.monotonic,
    clock_ns: Callable[[], int] = time.time_ns,
    extras: dict[str, Any] | None = None,
) -> Flask:
    """The console on ``db``. ``clock`` drives the login limit and ``clock_ns`` sessions and
    the audit trail (tests inject them). ``extras`` reach the pages as ``console().extras``."""
    config = config or ConsoleConfig()
    app = Flask("siteclock.gateway.console")
    # Flask's own signed cookie carries only the one-shot messages of the next page (flash);
    # who is logged in lives in the database (see the module docstring).
    app.config.update(
        MAX_CONTENT_LENGTH=4 * 1024 * 1024, SECRET_KEY=secrets.token_bytes(32),
        SESSION_COOKIE_NAME="siteclock_flash", SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
    )  # fmt: skip
    state = Console(
        db=db, config=config, accounts=Accounts(db, clock_ns=clock_ns),
        login_limit=LoginLimit(
            failures=config.login_failures, window_s=config.login_window_s, clock=clock
        ),
        inss_key_file=inss_key_file, clock_ns=clock_ns, extras=dict(extras or {}),
    )  # fmt: skip
    app.extensions["siteclock_console"] = state
    db.index_inbox_by_badge()  # the worker filter finds unlinked badges' taps through it
    for page in discover_pages():
        app.register_blueprint(page.blueprint)
        state.pages.append(page)

    app.before_request(load_session)
    app.before_request(_require_login)
    app.before_request(_check_csrf)
    app.after_request(_finish_response)
    app.register_error_handler(HTTPException, _error_page)
    templating.install(app)

    @app.get("/")
    def home() -> Any:
        return redirect(url_for("registrations.index"))

    return app


# --------------------------------------------------------------------------- each request


def _view_flag(name: str) -> bool:
    """Whether the view of this request was marked (``public``, ``csrf_exempt``)."""
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, name, False))


def wants_json() -> bool:
    return request.path.startswith("/api/") or (request.accept_mimetypes.best == "application/json")


def _require_login() -> Any:
    if g.user is not None or request.endpoint in (None, "static") or _view_flag("siteclock_public"):
        return None
    if wants_json():
        return jsonify(error="unauthorized", detail="log in first"), 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _check_csrf() -> Any:
    if request.method not in UNSAFE_METHODS or _view_flag("siteclock_csrf_exempt"):
        return None
    offered = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if g.csrf and secrets.compare_digest(offered, g.csrf):
        return None
    audit("csrf.refused", {"path": request.path, "method": request.method})
    message = _("This form has expired or did not come from this console. Reload and retry.")
    if wants_json():
        return jsonify(error="csrf", detail=message), 403
    return Response(str(escape(message)), status=403, mimetype="text/plain")


def _finish_response(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if getattr(g, "set_prelogin", False):
        response.set_cookie(PRELOGIN_COOKIE, g.csrf, secure=True, httponly=True, samesite="Strict")
    if "lang" in request.args and request.args["lang"] in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, request.args["lang"], secure=True, httponly=True, samesite="Strict",
            max_age=365 * 86400,
        )  # fmt: skip
    return response


def _error_page(error: HTTPException) -> Any:
    if wants_json():
        return jsonify(error=error.name.lower(), detail=error.description), error.code
    return render_template("error.html", error=error), error.code
