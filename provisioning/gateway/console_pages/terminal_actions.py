"""The terminal actions in the console (:mod:`provisioning.gateway.terminal_actions`): rebind
(a token for the new worksite and the installer's command), decommission, revoke a compromised
key, and the enrolment tokens (create, list, revoke). Forms on the terminal's page post here;
``GET /tokens/`` lists the tokens of the user's worksites.

Every action is audited twice: in the console's trail (who, when, from where) and in the
terminal's own trail (``terminal_audit``). A site manager acts on their worksites' terminals
and tokens only; another worksite's is answered as if it did not exist. The broker login of a
decommissioned terminal is removed when the console was given the broker's accounts
(``extras["broker_accounts"]``, or ``[console] broker_password_file``); otherwise the page
says how to remove it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for

from siteclock.gateway.console.config import ConsoleConfig
from siteclock.gateway.console.i18n import _
from siteclock.gateway.console.pages.terminals import visible_terminal
from siteclock.gateway.console.web import Page, audit, console, current_user, scoped_workplaces
from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts, pid_file_reloader
from siteclock.provisioning.gateway.terminal_actions import ActionRefused, TerminalActions

blueprint = Blueprint("terminal_actions", __name__)
PAGE = Page(blueprint, nav=(("terminal_actions.tokens", "Enrolment tokens"),))
MAX_TEXT = 200


def actions() -> TerminalActions:
    state = console()
    found = state.extras.get("terminal_actions")
    if found is None:
        found = state.extras["terminal_actions"] = TerminalActions(
            state.db,
            broker=state.extras.get("broker_accounts") or _broker_accounts(state.config),
            gateway_url=state.extras.get("enrolment_url", "https://<gateway>:8443"),
            clock_ns=state.clock_ns,
        )
    return found  # type: ignore[no-any-return]


def _broker_accounts(config: ConsoleConfig) -> BrokerAccounts | None:
    """The broker's logins, when the console's configuration names the password file."""
    if config.broker_password_file is None:
        return None
    pid_file = config.broker_pid_file
    reload = pid_file_reloader(pid_file) if pid_file is not None else (lambda: None)
    return BrokerAccounts(config.broker_password_file, reload)


def _text(name: str) -> str:
    return (request.form.get(name) or "").strip()[:MAX_TEXT]


def _back(terminal_id: str) -> Any:
    return redirect(url_for("terminals.detail", terminal_id=terminal_id))


@blueprint.post("/terminals/<terminal_id>/rebind")
def rebind(terminal_id: str) -> Any:
    visible_terminal(terminal_id)
    workplace = _text("workplace").upper()
    if not current_user().can_see(workplace):
        flash(_("You may only move a terminal to one of your worksites."), "error")
        return _back(terminal_id)
    try:
        plan = actions().prepare_rebind(
            terminal_id, workplace, reason=_text("reason"), by=current_user().username
        )
    except (ActionRefused, ValueError) as exc:
        flash(str(exc), "error")
        return _back(terminal_id)
    audit("terminal.rebind_prepared", {"terminal": terminal_id, "workplace": workplace})
    return render_template("token_issued.html", token=plan.token, command=plan.command,
                           terminal=terminal_id)  # fmt: skip


@blueprint.post("/terminals/<terminal_id>/decommission")
def decommission(terminal_id: str) -> Any:
    visible_terminal(terminal_id)
    if request.form.get("confirm") != terminal_id:
        flash(_("Type the terminal's id to confirm."), "error")
        return _back(terminal_id)
    try:
        removed = actions().decommission(terminal_id, by=current_user().username)
    except ActionRefused as exc:
        flash(str(exc), "error")
        return _back(terminal_id)
    audit("terminal.decommission", {"terminal": terminal_id, "broker_login_removed": removed})
    if removed:
        flash(_("Terminal {t} decommissioned; its broker login is removed.", t=terminal_id), "ok")
    else:
        flash(_("Terminal {t} decommissioned: its events are refused. Remove its broker login on the broker host: siteclock provision decommission.", t=terminal_id), "ok")  # noqa: E501 - one text to translate
    return redirect(url_for("terminals.index"))


@blueprint.post("/terminals/<terminal_id>/keys/revoke")
def revoke_key(terminal_id: str) -> Any:
    visible_terminal(terminal_id)
    kid = _text("kid")
    try:
        actions().revoke_key(terminal_id, kid, by=current_user().username)
    except ActionRefused as exc:
        flash(str(exc), "error")
        return _back(terminal_id)
    audit("terminal.revoke_key", {"terminal": terminal_id, "kid": kid})
    flash(_("Key {k} revoked.", k=kid), "ok")
    return _back(terminal_id)


# ---------------------------------------------------------------------- enrolment tokens


def _scope() -> list[str] | None:
    scope = scoped_workplaces()
    return None if scope is None else list(scope)


def _state_text(state: str, used_by: str | None) -> str:
    if state.startswith("used by"):
        return _("used by {t}", t=used_by or "")
    return {"unused": _("unused"), "expired": _("expired"), "revoked": _("revoked")}.get(
        state, state
    )


@blueprint.get("/tokens/")
def tokens() -> Any:
    now = console().clock_ns()
    listed = [
        {"id": t.id, "workplace": t.workplace, "state": t.state(now), "created_ns": t.created_ns,
         "expires_ns": t.expires_ns, "created_by": t.created_by, "note": t.note,
         "state_text": _state_text(t.state(now), t.used_by)}
        for t in actions().list_tokens(_scope())
    ]  # fmt: skip
    scope = _scope()
    return render_template("tokens.html", tokens=listed, worksites=scope)


@blueprint.post("/tokens/")
def create_token() -> Any:
    workplace = _text("workplace").upper()
    if not current_user().can_see(workplace):
        flash(_("You may only create tokens for your worksites."), "error")
        return redirect(url_for("terminal_actions.tokens"))
    try:
        hours = float(request.form.get("hours") or 24)
        issued = actions().create_token(
            workplace, by=current_user().username, note=_text("note"), ttl_s=hours * 3600
        )
    except ValueError as exc:
        flash(str(exc), "error")
        return redirect(url_for("terminal_actions.tokens"))
    audit("token.create", {"workplace": workplace, "token": issued.token_hash[:10]})
    return render_template("token_issued.html", token=issued, command=None, terminal=None)


@blueprint.post("/tokens/<token_id>/revoke")
def revoke_token(token_id: str) -> Any:
    try:
        revoked = actions().revoke_token(token_id, by=current_user().username,
                                         workplaces=_scope())  # fmt: skip
    except ActionRefused as exc:
        flash(str(exc), "error")
    else:
        audit("token.revoke", {"token": revoked.id, "workplace": revoked.workplace})
        flash(_("Token {t} revoked.", t=revoked.id), "ok")
    return redirect(url_for("terminal_actions.tokens"))


