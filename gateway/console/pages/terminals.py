"""Terminals: which are online, when each last spoke, what it holds, and its health.

``GET /terminals/`` shows the counts (online, offline, never heard from) of the terminals in
the user's worksites and one page of them, offline first (a fleet of 10,000 is 200 pages of
50, each one indexed query); filters by state and by a search on id or worksite.
``GET /terminals/<id>`` shows one terminal: every figure of its last heartbeat, its refusals
by reason, its keys, its open alerts and its audit trail; the actions (rebind, decommission,
keys, enrolment tokens) come from the provisioning layer's plug-in page when it is installed.
``GET /api/terminals`` is the list as JSON. A terminal of a worksite the user may not see is
answered as if it did not exist (404). See docs/alerts.md for what online and offline mean.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, jsonify, render_template, request

from siteclock.gateway.console.i18n import _
from siteclock.gateway.console.web import Page, console, current_user, scoped_workplaces
from siteclock.gateway.db.health_ops import STATES
from siteclock.gateway.terminals import ACTIVE

blueprint = Blueprint("terminals", __name__)
PAGE = Page(blueprint, nav=(("terminals.index", "Terminals"),))
MAX_SEARCH = 40


def _page_args() -> tuple[str | None, str | None, int]:
    state = request.args.get("state") or None
    if state is not None and state not in STATES:
        abort(400, _("Unknown state."))
    search = (request.args.get("q") or "").strip()[:MAX_SEARCH] or None
    return state, search, page_number()


def page_number() -> int:
    """The ``page`` query argument (1 when absent); 400 when it is not a number."""
    try:
        return max(1, int(request.args.get("page", "1")))
    except ValueError:
        abort(400, _("A page is a number."))


def words() -> dict[str, str]:
    """The states and offline reasons as the page shows them, in the request's language."""
    return {
        "online": _("online"), "offline": _("offline"), "never": _("never heard from"),
        "connection lost": _("connection lost"), "stopped": _("stopped"),
        "silent": _("silent"), "disabled": _("disabled"),
    }  # fmt: skip


def present(row: Any, refusals: dict[str, int], now_ns: int) -> dict[str, Any]:
    """One terminal as the page and the JSON show it."""
    seen = row["heartbeat_ns"]
    return {
        "terminal": row["terminal"],
        "worksite": row["workplace"],
        "state": "never" if row["online"] is None else "online" if row["online"] else "offline",
        "since_ns": row["changed_ns"],
        "reason": row["reason"] or None,
        "last_heartbeat_ns": seen,
        "last_heartbeat_age_s": round((now_ns - seen) / 1e9) if seen else None,
        "heartbeat_s": row["heartbeat_s"],
        "backlog": row["queue_depth"],
        "oldest_unsent_age_s": row["oldest_unsent_age_s"],
        "clock_synced": None if row["clock_synced"] is None else bool(row["clock_synced"]),
        "clock_maxerror_us": row["clock_maxerror_us"],
        "clock_offset_ms": row["clock_offset_ms"],
        "reader": row["reader"],
        "disk_free_mb": row["disk_free_mb"],
        "version": row["version"],
        "terminal_alerts": [a for a in (row["alerts"] or "").split(",") if a],
        "refusals": refusals,
    }


def _listing() -> tuple[dict[str, int], list[dict[str, Any]], int, bool]:
    state, search, page = _page_args()
    app = console()
    size = app.config.page_size
    scope = scoped_workplaces()
    rows = app.db.terminals_page(
        workplaces=scope, state=state, search=search, offset=(page - 1) * size, limit=size + 1
    )
    more = len(rows) > size
    rows = rows[:size]
    refusals = app.db.terminal_refusals([r["terminal"] for r in rows])
    now = app.clock_ns()
    shown = [present(r, refusals.get(r["terminal"], {}), now) for r in rows]
    return app.db.terminals_summary(workplaces=scope, search=search), shown, page, more


@blueprint.get("/terminals/")
def index() -> Any:
    summary, rows, page, more = _listing()
    return render_template(
        "terminals.html", summary=summary, rows=rows, page=page, more=more, states=STATES,
        args=request.args, words=words(),
    )  # fmt: skip


@blueprint.get("/api/terminals")
def api_index() -> Any:
    summary, rows, page, more = _listing()
    return jsonify(summary=summary, terminals=rows, page=page, more=more)


def visible_terminal(terminal_id: str) -> tuple[str, str]:
    """``(workplace, status)`` of a terminal the user may see; 404 otherwise (another
    worksite's terminal is answered as if it did not exist)."""
    found = console().db.terminal(terminal_id)
    if found is None or not current_user().can_see(found[0]):
        abort(404)
    return found[0], found[1]


@blueprint.get("/terminals/<terminal_id>")
def detail(terminal_id: str) -> Any:
    workplace, status = visible_terminal(terminal_id)
    app = console()
    db = app.db
    health = db.terminal_health(terminal_id)
    row = {"terminal": terminal_id, "workplace": workplace, **(dict(health) if health else {})}
    for name in ("online", "changed_ns", "reason", "heartbeat_ns", "heartbeat_s", "queue_depth",
                 "oldest_unsent_age_s", "clock_synced", "clock_maxerror_us", "clock_offset_ms",
                 "reader", "disk_free_mb", "version", "alerts"):  # fmt: skip
        row.setdefault(name, None)
    refusals = db.terminal_refusals([terminal_id]).get(terminal_id, {})
    shown = present(row, refusals, app.clock_ns())
    _, _, keys = db.terminal(terminal_id) or ("", "", [])
    return render_template(
        "terminal.html", t=shown, status=status, active=status == ACTIVE,
        keys=[{"kid": k[0], "alg": k[1], "valid_from_ns": k[3], "revoked_at_ns": k[4]}
              for k in keys],
        alerts=db.alerts_list(subjects=[terminal_id], limit=20),
        audit=db.terminal_audit_rows(terminal_id, limit=20),
        has_actions="terminal_actions" in current_app.blueprints, words=words(),
    )  # fmt: skip
