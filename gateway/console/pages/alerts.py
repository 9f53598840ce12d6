"""Alerts: what needs a person, each once, with a clear text, a link, and its resolution.

``GET /alerts/`` lists the open alerts, newest first (``?all=1``: resolved ones too, with when,
why and by whom); ``POST /alerts/<id>/resolve`` records a person's resolution (audited; a
security alert's own row is marked resolved too). ``GET /api/alerts`` is the list as JSON.
A site manager sees the alerts about the terminals of their worksites; the alerts about the
NSSO connection (credentials, outages) are the administrator's. See docs/alerts.md.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for

from siteclock.gateway.alerts.rules import KINDS, resolve_by_person
from siteclock.gateway.console.i18n import _
from siteclock.gateway.console.pages.terminals import page_number
from siteclock.gateway.console.web import Page, audit, console, current_user, scoped_workplaces

blueprint = Blueprint("alerts", __name__)
PAGE = Page(blueprint, nav=(("alerts.index", "Alerts"),))
MAX_RESOLUTION = 1000
MAX_TERMINALS_IN_SCOPE = 100_000


def _subjects() -> list[str] | None:
    """The alert subjects the user may see: None (all) for an administrator, else the
    terminals of their worksites."""
    scope = scoped_workplaces()
    if scope is None:
        return None
    rows = console().db.terminals_page(workplaces=list(scope), limit=MAX_TERMINALS_IN_SCOPE)
    return [r["terminal"] for r in rows]


def kind_labels() -> dict[str, str]:
    """Each alert kind in the request's language."""
    return {
        "terminal_offline": _("terminal offline"), "backlog": _("backlog too old"),
        "relay_backlog": _("waiting at the gateway"),
        "clock_unsynced": _("clock unsynchronised"), "reader_fault": _("reader fault"),
        "disk_low": _("disk low"), "nsso_rejected": _("rejected by the NSSO"),
        "nsso_remark": _("NSSO remark"), "sequence": _("needs a person"),
        "nsso_auth": _("NSSO authentication"), "relay": _("NSSO connection"),
        "security": _("security"),
    }  # fmt: skip


def on_this_console(link: str) -> str:
    """An alert's link as a path on this console: the stored link starts with the configured
    ``console_url`` (for e-mail and chat), which may not be how this browser reached it."""
    parts = urlsplit(link)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def present(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "kind": row["kind"], "subject": row["subject"],
        "message": row["message"], "link": on_this_console(row["link"]),
        "raised_ns": row["raised_ns"],
        "resolved_ns": row["resolved_ns"], "resolution": row["resolution"],
        "resolved_by": row["resolved_by"], "sent_ns": row["sent_ns"],
        "send_error": row["send_error"] or None,
    }  # fmt: skip


def _listing() -> tuple[list[dict[str, Any]], int, bool, bool]:
    show_all = request.args.get("all") == "1"
    kind = request.args.get("kind") or None
    if kind is not None and kind not in KINDS:
        abort(400, _("Unknown kind."))
    page = page_number()
    app = console()
    size = app.config.page_size
    rows = app.db.alerts_list(
        open_only=not show_all, kinds=[kind] if kind else None, subjects=_subjects(),
        offset=(page - 1) * size, limit=size + 1,
    )  # fmt: skip
    return [present(r) for r in rows[:size]], page, len(rows) > size, show_all


@blueprint.get("/alerts/")
def index() -> Any:
    rows, page, more, show_all = _listing()
    return render_template(
        "alerts.html", rows=rows, page=page, more=more, show_all=show_all, kinds=KINDS,
        args=request.args, labels=kind_labels(),
    )  # fmt: skip


@blueprint.get("/api/alerts")
def api_index() -> Any:
    rows, page, more, _all = _listing()
    return jsonify(alerts=rows, page=page, more=more)


@blueprint.post("/alerts/<int:alert_id>/resolve")
def resolve(alert_id: int) -> Any:
    app = console()
    row = app.db.alert(alert_id)
    subjects = _subjects()
    if row is None or (subjects is not None and row["subject"] not in subjects):
        abort(404)
    resolution = (request.form.get("resolution") or "").strip()[:MAX_RESOLUTION]
    if not resolution:
        flash(_("Say how it was resolved."), "error")
    elif resolve_by_person(app.db, alert_id, resolution, current_user().username,
                           now_ns=app.clock_ns()):  # fmt: skip
        audit("alert.resolve", {"alert": alert_id, "key": row["key"], "resolution": resolution})
        flash(_("Alert resolved."), "ok")
    else:
        flash(_("This alert was already resolved."), "error")
    return redirect(url_for("alerts.index"))
