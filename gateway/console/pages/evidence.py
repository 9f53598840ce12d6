"""Evidence: export one worker's signed evidence for a worksite and period (sealed JSON for
machines, CSV for people), and check an evidence file by uploading it.

An export holds the worker's full INSS (the employer's own evidence, docs/evidence.md): it is
the one thing the console serves with it, only as a download, and every export is in the audit
trail with who asked for which worker, worksite and period. A worksite the user may not see is
answered as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, render_template, request

from siteclock.gateway.console.i18n import _
from siteclock.gateway.console.people import people
from siteclock.gateway.console.web import Page, audit, console, current_user, scoped_workplaces
from siteclock.gateway.evidence.check import verification_report
from siteclock.gateway.evidence.document import EvidenceInvalid, open_document
from siteclock.gateway.evidence.export import (
    NothingToExport,
    build_evidence,
    export_csv,
    export_json,
)
from siteclock.gateway.site_time import day_start_ns, local
from siteclock.inss_shape import WRITTEN_INSS_RE

blueprint = Blueprint("evidence", __name__)
PAGE = Page(blueprint, nav=(("evidence.index", "Evidence"),))
MAX_DAYS = 62  # two months: a correction request is about the last 30 days


class BadRequest(ValueError):
    """A selection the page refuses, with the reason in the user's language."""


def visible_worksites() -> list[str]:
    """The worksites the user may choose from (all known ones for an administrator)."""
    scope = scoped_workplaces()
    return list(scope) if scope is not None else console().db.known_workplaces()


def read_period(first_text: str, last_text: str, max_days: int) -> tuple[dt.date, dt.date]:
    """Two ``YYYY-MM-DD`` days, the second not before the first, at most ``max_days`` apart."""
    try:
        first, last = dt.date.fromisoformat(first_text), dt.date.fromisoformat(last_text)
    except ValueError:
        raise BadRequest(_("A day is written YYYY-MM-DD.")) from None
    if last < first or (last - first).days >= max_days:
        raise BadRequest(_("The period runs from a day to a later one, {n} days at most.",
                           n=max_days))  # fmt: skip
    return first, last


def _selection(args: Any) -> tuple[str, str, dt.date, dt.date]:
    worker = (args.get("worker") or "").strip()
    if not worker:
        raise BadRequest(_("Name the worker by reference."))
    if WRITTEN_INSS_RE.search(worker):
        raise BadRequest(_("Search a worker by name reference or badge, never by INSS."))
    worksite = args.get("worksite") or ""
    if not current_user().can_see(worksite):
        abort(404)
    first, last = read_period(args.get("from") or "", args.get("to") or "", MAX_DAYS)
    return worker, worksite, first, last


def _signer() -> Any:
    from siteclock.keys import load

    path = console().extras.get("signing_key_file")
    if path is None:
        raise BadRequest(_("Without the gateway's signing key, export as CSV."))
    return load(Path(path))


def _defaults() -> dict[str, str]:
    today = local(console().clock_ns()).date()
    return {"from": (today - dt.timedelta(days=30)).isoformat(), "to": today.isoformat()}


@blueprint.get("/evidence/")
def index() -> Any:
    args = {**_defaults(), **request.args.to_dict()}
    return render_template("evidence.html", worksites=visible_worksites(), args=args, checked=None)


@blueprint.get("/evidence/export")
def export() -> Any:
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        abort(400)
    try:
        worker, worksite, first, last = _selection(request.args)
        signer = _signer() if fmt == "json" else None
        state, registry = console(), people().registry  # the console's own, shared
        if registry is None:
            raise BadRequest(_("This console was started without the INSS key."))
        evidence = build_evidence(
            state.db, registry, worker_ref=worker, workplace=worksite,
            from_ns=day_start_ns(first), to_ns=day_start_ns(last + dt.timedelta(days=1)),
            now_ns=state.clock_ns(),
        )  # fmt: skip
    except (BadRequest, NothingToExport) as exc:
        message = str(exc) if isinstance(exc, BadRequest) else _("No such worker.")
        return render_template("evidence.html", worksites=visible_worksites(),
                               args=request.args.to_dict(), checked=None,
                               error=message), 400  # fmt: skip
    audit("evidence_export", {"worker": worker, "worksite": worksite, "from": str(first),
                              "to": str(last), "format": fmt,
                              "events": len(evidence["events"])})  # fmt: skip
    name = f"evidence-{worker}-{worksite}-{first}-{last}.{fmt}"
    if fmt == "json":
        body, mimetype = export_json(evidence, signer), "application/json"
    else:
        body, mimetype = export_csv(evidence).encode(), "text/csv"
    return Response(body, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


@blueprint.post("/evidence/verify")
def verify() -> Any:
    """Check an uploaded evidence file as ``siteclock evidence verify`` would (the file is
    read, checked and forgotten; only the result is shown, never the INSS it holds)."""
    upload = request.files.get("file")
    data = upload.read() if upload is not None else b""
    try:
        opened = open_document(data)
        report = verification_report(opened.evidence)
        if report != opened.evidence.get("report"):
            report["problems"].append(_("The report in the file is not what its events give."))
            report["result"] = "FAILED"
        evidence = opened.evidence
        checked = {"ok": report["result"] == "intact", "report": report, "seal": opened.seal_kid,
                   "worker": evidence["worker"]["ref"], "worksite": evidence["workplace"],
                   "period": evidence["period"]}  # fmt: skip
    except EvidenceInvalid as exc:
        checked = {"ok": False, "error": str(exc)}
    audit("evidence_verify", {"result": "intact" if checked["ok"] else "FAILED"})
    return render_template("evidence.html", worksites=visible_worksites(), args=_defaults(),
                           checked=checked), (200 if checked["ok"] else 422)  # fmt: skip
