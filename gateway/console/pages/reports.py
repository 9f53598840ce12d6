"""Reports: presence per worker, worksite and day (first in, last out, breaks, hours) for a
period, on the page and as CSV for payroll or a social secretariat (``;``-separated on request,
as Belgian spreadsheets read it). Only the user's worksites; no INSS (names and references)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, abort, render_template, request

from siteclock.gateway.console.i18n import _
from siteclock.gateway.console.pages.evidence import BadRequest, read_period, visible_worksites
from siteclock.gateway.console.web import Page, audit, console, current_user, scoped_workplaces
from siteclock.gateway.reports import DayPresence, presence, presence_csv
from siteclock.gateway.site_time import day_start_ns, local
from siteclock.inss_shape import WRITTEN_INSS_RE

blueprint = Blueprint("reports", __name__)
PAGE = Page(blueprint, nav=(("reports.index", "Reports"),))
MAX_DAYS = 93


def _period(args: Any) -> tuple[dt.date, dt.date]:
    today = local(console().clock_ns()).date()
    return read_period(args.get("from") or today.replace(day=1).isoformat(),
                       args.get("to") or today.isoformat(), MAX_DAYS)  # fmt: skip


def _days(args: Any) -> tuple[list[DayPresence], dt.date, dt.date]:
    first, last = _period(args)
    worksite = args.get("worksite") or None
    if worksite is not None and not current_user().can_see(worksite):
        abort(404)
    worker = (args.get("worker") or "").strip() or None
    if worker and WRITTEN_INSS_RE.search(worker):
        raise BadRequest(_("Search a worker by name reference or badge, never by INSS."))
    days = presence(console().db, day_start_ns(first),
                    day_start_ns(last + dt.timedelta(days=1)), workplace=worksite,
                    worker_ref=worker)  # fmt: skip
    scope = scoped_workplaces()
    if scope is not None:
        days = [d for d in days if d.workplace in scope]
    return days, first, last


@blueprint.get("/reports/")
def index() -> Any:
    try:
        days, first, last = _days(request.args)
        error = None
    except BadRequest as exc:
        days, error = [], str(exc)
        first = last = local(console().clock_ns()).date()
    args = {"from": first.isoformat(), "to": last.isoformat(), **request.args.to_dict()}
    page = render_template(
        "reports.html", days=days, args=args, error=error, worksites=visible_worksites(),
        total_hours=sum(d.hours for d in days),
    )  # fmt: skip
    return page, (400 if error else 200)


@blueprint.get("/reports/presence.csv")
def presence_export() -> Any:
    try:
        days, first, last = _days(request.args)
    except BadRequest as exc:
        return Response(str(exc), status=400, mimetype="text/plain")
    delimiter = ";" if request.args.get("sep") == "semicolon" else ","
    audit("report_export", {"worksite": request.args.get("worksite") or "all",
                            "from": str(first), "to": str(last), "rows": len(days)})  # fmt: skip
    name = f"presence-{request.args.get('worksite') or 'all'}-{first}-{last}.csv"
    return Response(presence_csv(days, delimiter=delimiter), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip
