"""``/healthz``: the probe a supervisor or load balancer asks, without login. It says only
whether the console can read its database: nothing about terminals or people."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from siteclock.gateway.console.web import Page, console, public

blueprint = Blueprint("health", __name__)
PAGE = Page(blueprint)


@blueprint.get("/healthz")
@public
def healthz() -> Any:
    try:
        console().db.schema_version()
    except Exception as exc:  # noqa: BLE001 - any failure to read means unhealthy
        return jsonify(status="unavailable", error=type(exc).__name__), 503
    return jsonify(status="ok")
