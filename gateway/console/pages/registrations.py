"""Registrations: every event with its fate at the NSSO, filters, problem details, and the
actions a person takes (requeue after a fix, mark resolved, link an unknown badge).

``GET /registrations/`` lists newest tap first, a page at a time (a keyset cursor ``before``,
never an OFFSET: page 1,000 costs what page 1 does); ``GET /api/registrations`` is the same
as JSON. A registration on a worksite the user may not see is answered as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from siteclock.gateway.console.i18n import _
from siteclock.gateway.console.people import people
from siteclock.gateway.console.templating import SITE_TZ
from siteclock.gateway.console.web import (
    Page,
    audit,
    console,
    current_user,
    scoped_workplaces,
)
from siteclock.gateway.db.console_ops import RegistrationFilter
from siteclock.gateway.registry import RegistryError
from siteclock.gateway.relay_store import REQUEUE_TARGET, RelayStore, State
from siteclock.inss_shape import WRITTEN_INSS_RE
from siteclock.protocol import check_badge

blueprint = Blueprint("registrations", __name__)
PAGE = Page(blueprint, nav=(("registrations.index", "Registrations"),))
MAX_COMMENT = 2000


class BadFilter(ValueError):
    pass


def _day_range(text: str) -> tuple[int, int]:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise BadFilter(_("A day is written YYYY-MM-DD.")) from None
    start = dt.datetime.combine(day, dt.time(), SITE_TZ)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), SITE_TZ)
    return int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9


def _cursor(text: str) -> tuple[int, str, int]:
    wall, _sep, rest = text.partition(":")
    terminal, _sep2, seq = rest.rpartition(":")
    if (
        not (wall.lstrip("-").isdigit() and terminal and seq.isdigit())
        or max(abs(int(wall)), int(seq)) >= 2**63
    ):  # SQLite integers are 64-bit
        raise BadFilter("before: expected WALL_NS:TERMINAL:SEQ")
    return int(wall), terminal, int(seq)


def read_filter(args: Any) -> RegistrationFilter:
    """The page's query arguments as a filter, within the user's worksites."""
    worker = (args.get("worker") or "").strip() or None
    if worker and WRITTEN_INSS_RE.search(worker):
        raise BadFilter(_("Search a worker by name reference or badge, never by INSS."))
    state = args.get("state") or None
    if state is not None and state not in {s.value for s in State}:
        raise BadFilter(_("Unknown state."))
    since = until = None
    if args.get("day"):
        since, until = _day_range(args["day"])
    employer = re.sub(r"[\s.\-]", "", args.get("employer") or "").upper() or None
    if employer is not None and not re.fullmatch(r"[A-Z0-9]{4,20}", employer):
        raise BadFilter(_("An employer is an enterprise number or a VAT number."))
    return RegistrationFilter(
        scope=scoped_workplaces(), workplace=args.get("worksite") or None, worker=worker,
        employer=employer_texts(employer) if employer else None, state=state,
        since_ns=since, until_ns=until,
        before=_cursor(args["before"]) if args.get("before") else None,
    )  # fmt: skip


def employer_texts(number: str) -> tuple[str, ...]:
    """How the relay stores an employer it sent: the JSON text of the item's ``employer``
    object (``gateway.relay_mapping.employer_json``), an enterprise or a foreign VAT number."""
    return tuple(json.dumps({key: number}) for key in ("enterpriseNumber", "foreignVatNumber"))


def employer_number(sent: str | None) -> str | None:
    """The number in the employer object sent to CIaO (``{"enterpriseNumber": "…"}``)."""
    if not sent:
        return None
    try:
        return str(next(iter(json.loads(sent).values())))
    except (ValueError, StopIteration, AttributeError):
        return sent


def present(row: Any) -> dict[str, Any]:
    """One registration as the page and the JSON show it (INSS masked, JSON fields parsed)."""
    label = people().label(row["worker_ref"])
    remarks = json.loads(row["remarks"] or "[]")
    problem = json.loads(row["problem"]) if row["problem"] else None
    return {
        "id": f"{row['terminal']}:{row['seq']}",
        "terminal": row["terminal"], "seq": row["seq"], "worksite": row["workplace"],
        "badge": row["badge"], "kind": row["kind"], "ciao_type": row["ciao_type"],
        "worker_ref": row["worker_ref"], "worker_name": label.name if label else None,
        "inss": label.masked_inss if label else None,
        "employer": employer_number(row["employer"]) or (label.employer if label else None),
        "terminal_time_ns": row["terminal_wall_ns"] or row["wall_ns"],
        "corrected_time_ns": row["corrected_wall_ns"], "clock_note": row["clock_note"],
        "flags": json.loads(row["flags"] or "[]"), "state": row["state"],
        "nsso_id": row["ciao_id"], "validity": row["validity"], "remarks": remarks,
        "problem": problem, "last_error": row["last_error"],
        "resolution": row["resolution"], "resolved_by": row["resolved_by"],
        "resolved_ns": row["resolved_ns"],
        "cursor": f"{row['wall_ns']}:{row['terminal']}:{row['seq']}",
    }  # fmt: skip


def _page() -> tuple[list[dict[str, Any]], str | None, str | None]:
    """(rows, cursor of the next page or None, error message or None)."""
    try:
        wanted = read_filter(request.args)
    except BadFilter as exc:
        return [], None, str(exc)
    size = console().config.page_size
    rows = console().db.registrations_page(wanted, size + 1)
    shown = [present(r) for r in rows[:size]]
    return shown, (shown[-1]["cursor"] if len(rows) > size else None), None


@blueprint.get("/registrations/")
def index() -> Any:
    rows, next_cursor, error = _page()
    scope = scoped_workplaces()
    worksites = list(scope) if scope is not None else console().db.known_workplaces()
    return render_template(
        "registrations.html", rows=rows, next_cursor=next_cursor, error=error,
        worksites=worksites, states=[s.value for s in State], args=request.args,
    ), (400 if error else 200)  # fmt: skip


@blueprint.get("/api/registrations")
def api_index() -> Any:
    rows, next_cursor, error = _page()
    if error:
        return jsonify(error="bad_filter", detail=error), 400
    return jsonify(registrations=rows, next=next_cursor)


def _visible(terminal: str, seq: int) -> Any:
    """The registration, or 404 when there is none or the user may not see its worksite."""
    row = console().db.registration_detail(terminal, seq)
    if row is None or not current_user().can_see(row["workplace"]):
        abort(404)
    return row


@blueprint.get("/registrations/<terminal>/<int:seq>")
def detail(terminal: str, seq: int) -> Any:
    row = present(_visible(terminal, seq))
    requeueable = State(row["state"]) in REQUEUE_TARGET
    return render_template("registration.html", r=row, requeueable=requeueable)


@blueprint.get("/api/registrations/<terminal>/<int:seq>")
def api_detail(terminal: str, seq: int) -> Any:
    return jsonify(present(_visible(terminal, seq)))


@blueprint.post("/registrations/<terminal>/<int:seq>/requeue")
def requeue(terminal: str, seq: int) -> Any:
    row = _visible(terminal, seq)
    state = console()
    store = RelayStore(state.db)
    selected = store.select(keys=[(terminal, seq)])
    moved = store.requeue(selected, f"console:{current_user().username}", state.clock_ns())
    audit("registration.requeue", {"id": f"{terminal}:{seq}", "from": row["state"],
                                   "moved": moved})  # fmt: skip
    if moved:
        flash(_("Put back on its way to the NSSO."), "ok")
    else:
        flash(_("This registration cannot be requeued in its state."), "error")
    return redirect(url_for(".detail", terminal=terminal, seq=seq))


@blueprint.post("/registrations/<terminal>/<int:seq>/resolve")
def resolve(terminal: str, seq: int) -> Any:
    _visible(terminal, seq)
    comment = request.form.get("comment", "").strip()
    if not comment:
        flash(_("Say what was done: a comment is required."), "error")
        return redirect(url_for(".detail", terminal=terminal, seq=seq))
    comment = comment[:MAX_COMMENT]
    state = console()
    state.db.resolve_registration(terminal, seq, current_user().username, comment, state.clock_ns())
    audit("registration.resolve", {"id": f"{terminal}:{seq}", "comment": comment})
    flash(_("Marked resolved."), "ok")
    return redirect(url_for(".detail", terminal=terminal, seq=seq))


@blueprint.post("/registrations/<terminal>/<int:seq>/link")
def link_badge(terminal: str, seq: int) -> Any:
    """Link the unknown badge of this tap to a worker: the relay then sends every tap of it
    that waited (it retries held rows whenever the registry changes). The worker must be on
    one of the user's worksites, and the badge must not belong to anyone meanwhile."""
    row = _visible(terminal, seq)
    worker = request.form.get("worker", "").strip()
    registry = people().registry
    if registry is None:
        abort(503)
    try:
        check_badge(row["badge"])
        if not worker or WRITTEN_INSS_RE.search(worker) or not _may_link_to(worker):
            raise RegistryError(_("Choose a worker of your worksites by reference."))
        owner = registry.resolve(row["badge"])
        if owner is not None and owner.worker_ref != worker:
            raise RegistryError(_("This badge is linked to another worker already."))
        registry.enrol_badge(row["badge"], worker)
    except (RegistryError, ValueError) as exc:
        flash(str(exc), "error")
        return redirect(url_for(".detail", terminal=terminal, seq=seq))
    audit("badge.link", {"badge": row["badge"], "worker": worker, "from": f"{terminal}:{seq}"})
    flash(_("Badge linked: its waiting taps will be sent."), "ok")
    return redirect(url_for(".detail", terminal=terminal, seq=seq))


def _may_link_to(worker: str) -> bool:
    registry = people().registry
    assert registry is not None
    scope = scoped_workplaces()
    if scope is None:
        return registry.worker(worker) is not None
    return any(worker in {w.ref for w in registry.listing(place)} for place in scope)
