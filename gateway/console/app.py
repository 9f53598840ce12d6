"""The console's Flask app: sessions, CSRF, language, security headers and the pages.

:func:`create_app` builds it on an open gateway database::

    app = create_app(db, ConsoleConfig(), inss_key_file=cfg.inss_key_path)
    server = serve_console(app, config)          # gateway/console/server.py: HTTPS

Pages are the modules of the packages in :data:`PAGE_PACKAGES` that define ``PAGE`` (a
:class:`~gateway.console.web.Page`): each is found and registered by itself, so adding a page is
adding a module (see :mod:`gateway.console.web` for what a page uses). The provisioning layer,
which sits above the gateway, contributes the workers page this way: it imports the console,
never the other way round (the console finds it by name at start, as a plug-in).

Sessions live in the database (``console_sessions``): the cookie holds a random token (Secure,
HttpOnly, SameSite=Strict), the database only its SHA-256, with the session's own CSRF token.
Logging out, a new password or a disabled account ends the session at once; an idle one ends
after ``session_idle_s``.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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
from markupsafe import Markup, escape
from werkzeug.exceptions import HTTPException

from siteclock.gateway.console.accounts import Accounts
from siteclock.gateway.console.config import LANGUAGES, ConsoleConfig
from siteclock.gateway.console.i18n import LANG_COOKIE, _, choose_language
from siteclock.gateway.console.login_limit import LoginLimit
from siteclock.gateway.console.web import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    UNSAFE_METHODS,
    Console,
    Page,
    audit,
    console,
)
from siteclock.gateway.db import GatewayDB

SITE_TZ = ZoneInfo("Europe/Brussels")
"""Times are shown as the worksite reads its clocks."""
TOUCH_EVERY_NS = 60 * 10**9
"""A session's last use is written at most once a minute (not on every request)."""
PRELOGIN_COOKIE = "siteclock_prelogin"
"""Before login there is no session: the login form's CSRF token is this cookie's value."""

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


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
    for page in discover_pages():
        app.register_blueprint(page.blueprint)
        state.pages.append(page)

    app.before_request(_load_session)
    app.before_request(_require_login)
    app.before_request(_check_csrf)
    app.after_request(_finish_response)
    app.register_error_handler(HTTPException, _error_page)
    _template_helpers(app)

    @app.get("/")
    def home() -> Any:
        return redirect(url_for("registrations.index"))

    return app


# --------------------------------------------------------------------------- each request


def _view_flag(name: str) -> bool:
    """Whether the view of this request was marked (``public``, ``csrf_exempt``)."""
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, name, False))


def _load_session() -> None:
    state = console()
    g.user = None
    g.session_hash = None
    g.csrf = None
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        hashed = token_hash(token)
        found = state.db.console_session(hashed)
        now = state.clock_ns()
        if found is not None:
            username, csrf, _created, seen = found
            if now - seen > state.config.session_idle_s * 1e9:
                state.db.close_console_session(hashed)
            else:
                user = state.accounts.get(username)
                if user is None:
                    state.db.close_console_session(hashed)
                else:
                    g.user, g.session_hash, g.csrf = user, hashed, csrf
                    if now - seen > TOUCH_EVERY_NS:
                        state.db.touch_console_session(hashed, now)
    if g.csrf is None:
        g.csrf = request.cookies.get(PRELOGIN_COOKIE) or secrets.token_urlsafe(32)
        g.set_prelogin = PRELOGIN_COOKIE not in request.cookies
    g.lang = choose_language(
        request.args.get("lang"), request.cookies.get(LANG_COOKIE),
        g.user.language if g.user else None, request.accept_languages,
        state.config.default_language,
    )  # fmt: skip


def wants_json() -> bool:
    return request.path.startswith("/api/") or (
        request.accept_mimetypes.best == "application/json"
    )


def _require_login() -> Any:
    if g.user is not None or request.endpoint in (None, "static") or _view_flag(
        "siteclock_public"
    ):
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
        response.set_cookie(
            PRELOGIN_COOKIE, g.csrf, secure=True, httponly=True, samesite="Strict"
        )
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


def open_session(username: str) -> str:
    """A new session for ``username``: returns the cookie's token (the database keeps its
    hash and a fresh CSRF token)."""
    state = console()
    token = secrets.token_urlsafe(32)
    state.db.open_console_session(
        token_hash(token), username, secrets.token_urlsafe(32), state.clock_ns()
    )
    return token


def set_session_cookie(response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, secure=True, httponly=True, samesite="Strict", path="/"
    )
    response.delete_cookie(PRELOGIN_COOKIE)


# --------------------------------------------------------------------------- templates


def format_ns(value: int | None, pattern: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Nanoseconds since the epoch as the worksite's local time (empty for none)."""
    if value is None:
        return ""
    return datetime.fromtimestamp(value / 1e9, UTC).astimezone(SITE_TZ).strftime(pattern)


def _template_helpers(app: Flask) -> None:
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
