"""Log in and log out. Failed logins are counted (:mod:`gateway.console.login_limit`) and
every attempt is in the audit trail (never the password tried)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, make_response, redirect, render_template, request, url_for

from siteclock.gateway.console.i18n import _
from siteclock.gateway.console.sessions import open_session, set_session_cookie
from siteclock.gateway.console.web import (
    SESSION_COOKIE,
    Page,
    audit,
    console,
    local_path,
    public,
    remote_address,
)

blueprint = Blueprint("auth", __name__)
PAGE = Page(blueprint)


@blueprint.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    state = console()
    username = request.form.get("username", "").strip().lower()[:64]
    password = request.form.get("password", "")
    remote = remote_address()
    wait_s = state.login_limit.retry_after(username, remote)
    if wait_s > 0:
        audit("login.throttled", {"user": username}, username=username)
        message = _("Too many failed logins. Try again in {minutes} min.",
                    minutes=int(wait_s // 60) + 1)  # fmt: skip
        response = make_response(render_template("login.html", error=message), 429)
        response.headers["Retry-After"] = str(int(wait_s) + 1)
        return response
    user = state.accounts.check_password(username, password)
    if user is None:
        state.login_limit.failed(username, remote)
        audit("login.failed", {"user": username}, username=username)
        message = _("Wrong user name or password.")
        return render_template("login.html", error=message, next=request.form.get("next")), 401
    state.login_limit.succeeded(username)
    # Sessions left idle are deleted here (each is refused on use anyway): a login is rare
    # enough to pay for it, and the table never grows with abandoned browsers.
    state.db.expire_console_sessions(state.clock_ns() - int(state.config.session_idle_s * 1e9))
    g.user = user
    audit("login", {})
    response = redirect(local_path(request.form.get("next"), url_for("home")))
    set_session_cookie(response, open_session(user.username))
    return response


@blueprint.post("/logout")
def logout() -> Any:
    audit("logout", {})
    if g.session_hash:
        console().db.close_console_session(g.session_hash)
    response = redirect(url_for("auth.login"))
    response.delete_cookie(SESSION_COOKIE)
    return response
