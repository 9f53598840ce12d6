"""Users (administrators only): accounts, their role and worksites, and the audit trail.

The same rules as ``siteclock console add-user``: a site manager needs worksites, an
administrator has none (they see all); passwords of 12 characters or more. Changing a user's
password, worksites or role, or disabling them, ends their open sessions. Everything is in the
audit trail, which this page shows, newest first.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for

from siteclock.gateway.console.accounts import AccountError, Role
from siteclock.gateway.console.config import LANGUAGES
from siteclock.gateway.console.i18n import _
from siteclock.gateway.console.web import Page, admin_required, audit, console, current_user

blueprint = Blueprint("users", __name__)
PAGE = Page(blueprint, nav=(("users.index", "Users"), ("users.trail", "Audit trail")),
            admin_only=True)  # fmt: skip
AUDIT_PAGE = 100


def _sites(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


@blueprint.get("/users/")
@admin_required
def index() -> Any:
    return render_template(
        "users.html", users=console().accounts.all(), roles=list(Role), languages=LANGUAGES,
        worksites=console().db.known_workplaces(),
    )  # fmt: skip


def _done(action: str, detail: dict[str, Any], message: str) -> Any:
    audit(action, detail)
    flash(message, "ok")
    return redirect(url_for(".index"))


def _refused(exc: AccountError) -> Any:
    flash(str(exc), "error")
    return redirect(url_for(".index"))


@blueprint.post("/users/add")
@admin_required
def add() -> Any:
    form = request.form
    try:
        user = console().accounts.add(
            form.get("username", "").strip().lower(), form.get("password", ""),
            role=form.get("role", ""), worksites=_sites(form.get("worksites", "")),
            language=form.get("language", "nl"),
        )  # fmt: skip
    except (AccountError, ValueError) as exc:
        return _refused(AccountError(str(exc)))
    return _done("user.add", {"user": user.username, "role": str(user.role),
                              "worksites": sorted(user.worksites)},
                 _("User {name} added.", name=user.username))  # fmt: skip


@blueprint.post("/users/<username>/update")
@admin_required
def update(username: str) -> Any:
    form = request.form
    change = form.get("change", "")
    accounts = console().accounts
    try:
        if change == "worksites":
            accounts.update(username, worksites=_sites(form.get("worksites", "")))
        elif change in ("disable", "enable"):
            if username == current_user().username:
                raise AccountError(_("You cannot disable your own account."))
            accounts.update(username, disabled=change == "disable")
        elif change == "password":
            accounts.set_password(username, form.get("password", ""))
        elif change == "remove":
            if username == current_user().username:
                raise AccountError(_("You cannot remove your own account."))
            accounts.remove(username)
        else:
            raise AccountError(_("Unknown change."))
    except AccountError as exc:
        return _refused(exc)
    detail: dict[str, Any] = {"user": username, "change": change}
    if change == "worksites":
        detail["worksites"] = sorted(_sites(form.get("worksites", "")))
    return _done("user.update", detail, _("User {name} updated.", name=username))


@blueprint.get("/audit/")
@admin_required
def trail() -> Any:
    before = request.args.get("before", type=int)
    rows = console().db.console_audit(limit=AUDIT_PAGE + 1, before_id=before)
    older = rows[AUDIT_PAGE][0] + 1 if len(rows) > AUDIT_PAGE else None
    return render_template("audit.html", rows=rows[:AUDIT_PAGE], older=older)
