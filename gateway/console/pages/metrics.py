"""``/metrics`` for Prometheus: not behind the console's login but behind its own bearer token
(``[console] metrics_token_file``, a 0600 file created on first use). Without that setting
the console serves no metrics. See docs/metrics.md."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, request

from siteclock.gateway.console.web import Page, console, public
from siteclock.gateway.metrics import MetricsEndpoint

blueprint = Blueprint("metrics", __name__)
PAGE = Page(blueprint)


def endpoint() -> MetricsEndpoint:
    app = console()
    found = app.extras.get("metrics")
    if found is None:
        if app.config.metrics_token_file is None:
            abort(404, "metrics are off: set [console] metrics_token_file (docs/metrics.md)")
        found = app.extras["metrics"] = MetricsEndpoint(
            app.db, app.config.metrics_token_file, clock_ns=app.clock_ns
        )
    return found  # type: ignore[no-any-return]


@blueprint.get("/metrics")
@public
def metrics() -> Any:
    status, body, content_type = endpoint().answer(request.headers.get("Authorization"))
    response = Response(body, status=status, content_type=content_type)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="siteclock metrics"'
    return response
