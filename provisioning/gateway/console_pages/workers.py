"""Workers and badges in the console: add one, import a CSV (``,`` or ``;``), link, block,
unblock, remove; the same rules as ``siteclock workers`` (:mod:`.workers_csv`, :class:`Workers`).

A site manager sees and changes the workers on their worksites only: a worker they add or
import lands on one of them (the form's worksite when a row names none; a row naming another
worksite is refused). Each change is audited; the gateway's roster loop sends the worksite's
terminals their new roster.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from siteclock.gateway.console.i18n import _
from siteclock.gateway.console.people import people
from siteclock.gateway.console.web import (
    Page,
    audit,
    console,
    current_user,
    local_path,
    scoped_workplaces,
    visible_worksite,
)
from siteclock.gateway.registry import Registry, RegistryError
from siteclock.provisioning.gateway.workers import Workers, load_or_create_ref_key
from siteclock.provisioning.gateway.workers_csv import (
    CAPACITIES,
    Rejection,
    WorkerError,
    parse_workers_csv,
    validate_row,
)

blueprint = Blueprint("workers", __name__)
PAGE = Page(blueprint, nav=(("workers.index", "Workers"),))
MAX_CSV = 2 * 1024 * 1024
REF_KEY_NAME = "worker-ref.key"
"""Beside the INSS key, as ``siteclock workers`` finds it by default."""


def _registry() -> Registry:
    registry = people().registry
    if registry is None:
        abort(503)
    return registry


def _workers() -> Workers:
    state = console()
    found = state.extras.get("workers")
    if found is None:
        assert state.inss_key_file is not None  # _registry() checked it
        key = load_or_create_ref_key(state.inss_key_file.with_name(REF_KEY_NAME))
        found = state.extras["workers"] = Workers(_registry(), key)
    return found  # type: ignore[no-any-return]


def _worksites() -> list[str]:
    scope = scoped_workplaces()
    return list(scope) if scope is not None else console().db.known_workplaces()


def _visible_worker(ref: str) -> None:
    """404 unless the worker exists and is on one of the user's worksites."""
    registry = _registry()
    scope = scoped_workplaces()
    if scope is None:
        if registry.worker(ref) is None:
            abort(404)
        return
    if not any(ref in {w.ref for w in registry.listing(place)} for place in scope):
        abort(404)


def _owner_of(badge: str) -> str:
    for worker in _registry().listing(None):
        if any(b == badge for b, _active in worker.badges):
            return worker.ref
    abort(404)


@blueprint.get("/workers/")
def index() -> Any:
    worksites = _worksites()
    chosen = visible_worksite(request.args.get("worksite"))
    if chosen is None and not current_user().is_admin:
        chosen = worksites[0] if worksites else None
    listing = _registry().listing(chosen) if (chosen or current_user().is_admin) else []
    rows = [(w, people().label(w.ref)) for w in sorted(listing, key=lambda w: w.name.lower())]
    return render_template("workers.html", rows=rows, worksites=worksites, chosen=chosen,
                           capacities=CAPACITIES)  # fmt: skip


def _back() -> Any:
    return redirect(local_path(request.form.get("back"), url_for(".index")))


def _target_worksite(named: str | None) -> str | None:
    """The worksite a new worker lands on: the one named, which the user must see; a site
    manager must name one."""
    if named:
        if not current_user().can_see(named):
            raise WorkerError(_("workplace: {ref} is not one of your worksites", ref=named))
        return named
    if not current_user().is_admin:
        raise WorkerError(_("workplace: choose one of your worksites"))
    return None


@blueprint.post("/workers/add")
def add() -> Any:
    form = {k: request.form.get(k, "") for k in ("inss", "name", "employer", "capacity", "badge")}
    try:
        form["workplace"] = _target_worksite(request.form.get("workplace")) or ""
        ref = _workers().add(validate_row(form))
    except WorkerError as exc:
        flash(str(exc), "error")
        return _back()
    audit("worker.add", {"worker": ref, "workplace": form["workplace"], "badge": form["badge"]})
    flash(_("Worker {ref} saved.", ref=ref), "ok")
    return _back()


@blueprint.post("/workers/import")
def import_csv() -> Any:
    upload = request.files.get("file")
    raw = upload.read(MAX_CSV + 1) if upload is not None else b""
    if not raw or len(raw) > MAX_CSV:
        flash(_("Choose a CSV file of at most 2 MiB."), "error")
        return _back()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")  # what older Excel saves
    try:
        default = _target_worksite(request.form.get("workplace"))
    except WorkerError as exc:
        flash(str(exc), "error")
        return _back()
    rows, rejected = parse_workers_csv(text)
    rejected = list(rejected)
    accepted = 0
    for item in rows:
        row = item.row
        try:
            if row.workplace is None and default is not None:
                row = dataclasses.replace(row, workplace=default)
            _target_worksite(row.workplace)
            _workers().add(row)
        except WorkerError as exc:
            rejected.append(Rejection(item.line, str(exc)))
            continue
        accepted += 1
    rejected.sort(key=lambda r: r.line)
    audit("workers.import", {"accepted": accepted, "rejected": len(rejected)})
    flash(_("{accepted} worker(s) imported, {rejected} row(s) rejected.", accepted=accepted,
            rejected=len(rejected)), "ok" if not rejected else "error")  # fmt: skip
    for rejection in rejected[:50]:
        flash(str(rejection), "error")
    return _back()


@blueprint.post("/workers/<ref>/link")
def link(ref: str) -> Any:
    _visible_worker(ref)
    try:
        badge = _workers().link_badge(request.form.get("badge", ""), ref)
    except WorkerError as exc:
        flash(str(exc), "error")
        return _back()
    audit("badge.link", {"badge": badge, "worker": ref})
    flash(_("Badge {badge} linked.", badge=badge), "ok")
    return _back()


@blueprint.post("/workers/badges/<badge>/<action>")
def badge_action(badge: str, action: str) -> Any:
    if action not in ("block", "unblock"):
        abort(404)
    _visible_worker(_owner_of(badge))
    try:
        if action == "block":
            _workers().block_badge(badge)
        else:
            _registry().unblock_badge(badge)
    except (WorkerError, RegistryError) as exc:
        flash(str(exc), "error")
        return _back()
    audit(f"badge.{action}", {"badge": badge})
    flash(_("Badge {badge} blocked.", badge=badge) if action == "block"
          else _("Badge {badge} unblocked.", badge=badge), "ok")  # fmt: skip
    return _back()


@blueprint.post("/workers/<ref>/remove")
def remove(ref: str) -> Any:
    _visible_worker(ref)
    try:
        _registry().remove_worker(ref)
    except RegistryError as exc:
        flash(str(exc), "error")
        return _back()
    audit("worker.remove", {"worker": ref})
    flash(_("Worker {ref} removed.", ref=ref), "ok")
    return _back()
