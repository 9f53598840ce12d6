"""Console sessions: kept in the gateway database, named by a random token in a cookie.

The cookie ``siteclock_session`` holds a random token (Secure, HttpOnly, SameSite=Strict); the
database keeps only its SHA-256, with the session's own CSRF token and when it was last used.
Logging out, a new password, other worksites or a disabled account delete the row, so the
session ends at once; a session unused for ``session_idle_s`` ends at its next use. Before
login the login form's CSRF token lives in a cookie of its own (``siteclock_prelogin``).
"""

from __future__ import annotations

import hashlib
import secrets

from flask import Response, g, request

from siteclock.gateway.console.i18n import LANG_COOKIE, choose_language
from siteclock.gateway.console.web import SESSION_COOKIE, console

TOUCH_EVERY_NS = 60 * 10**9
"""A session's last use is written at most once a minute (not on every request)."""
PRELOGIN_COOKIE = "siteclock_prelogin"
"""Before login there is no session: the login form's CSRF token is this cookie's value."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_session() -> None:
    """Before each request: who is asking (``g.user``), their CSRF token, their language."""
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
