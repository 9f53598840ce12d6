"""Roll call: who is on the worksite now, for an inspection visit or an evacuation.

A worker is on site when their newest attendance tap on the worksite, from any of its
terminals, leaves them at work (``in`` or the end of a break): the same site view the gateway
sends the terminals (:class:`gateway.sequence.SiteDay`), so a tap counts as soon as the gateway
stored it, whether or not the NSSO has it yet. The page prints as a plain list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, jsonify, render_template, request

from siteclock.gateway.console.people import people
from siteclock.gateway.console.web import Page, console, scoped_workplaces, visible_worksite
from siteclock.gateway.sequence import SiteDay
from siteclock.protocol import Kind

blueprint = Blueprint("rollcall", __name__)
PAGE = Page(blueprint, nav=(("rollcall.index", "Roll call"),))

STALE_NS = 16 * 3600 * 10**9
"""An ``in`` older than this is shown as doubtful: a forgotten ``out`` rather than a 16 h day."""


@dataclass(frozen=True, slots=True)
class Present:
    worker_ref: str
    name: str
    employer: str
    masked_inss: str
    kind: str
    since_ns: int
    doubtful: bool


def on_site(workplace: str, now_ns: int) -> list[Present]:
    """Who is on ``workplace`` now, longest there first."""
    state = console()
    registry = people().registry
    if registry is None:
        return []
    roster = {entry.badge: entry.worker for entry in registry.roster_for(workplace)}
    view = state.extras.get("site_day")
    if view is None:
        view = state.extras["site_day"] = SiteDay(state.db)
    found = []
    for entry in view.day(workplace, roster):
        if not Kind(entry.kind).at_work_after:
            continue
        label = people().label(entry.worker)
        found.append(Present(
            entry.worker, label.name if label else entry.worker,
            label.employer if label else "", label.masked_inss if label else "",
            str(entry.kind), entry.wall_ns, now_ns - entry.wall_ns > STALE_NS,
        ))  # fmt: skip
    return sorted(found, key=lambda p: (p.since_ns, p.name))


def _worksites() -> list[str]:
    scope = scoped_workplaces()
    return list(scope) if scope is not None else console().db.known_workplaces()


def _chosen(worksites: list[str]) -> str | None:
    asked = visible_worksite(request.args.get("worksite"))
    return asked or (worksites[0] if worksites else None)


@blueprint.get("/rollcall/")
def index() -> Any:
    worksites = _worksites()
    chosen = _chosen(worksites)
    now = console().clock_ns()
    present = on_site(chosen, now) if chosen else []
    return render_template("rollcall.html", worksites=worksites, chosen=chosen,
                           present=present, now_ns=now)  # fmt: skip


@blueprint.get("/api/rollcall")
def api_index() -> Any:
    chosen = _chosen(_worksites())
    present = on_site(chosen, console().clock_ns()) if chosen else []
    return jsonify(worksite=chosen, present=[
        {"worker_ref": p.worker_ref, "name": p.name, "employer": p.employer,
         "inss": p.masked_inss, "kind": p.kind, "since_ns": p.since_ns, "doubtful": p.doubtful}
        for p in present
    ])  # fmt: skip
