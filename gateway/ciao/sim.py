"""A local simulator of the NSSO CIaO REST service (``siteclock ciao-sim``).

It speaks the contract as ``profile.toml`` describes it, strictly, so the client is tested
against the same rules the real service is believed to apply:

* ``POST {token}``: OAuth2 client credentials with an RS256 JWT client assertion. It checks the
  signature against the client's registered public key, ``iss`` = ``sub`` = client id, ``aud`` =
  this endpoint's URL, ``exp`` present and not too far ahead, and a ``jti`` never seen before.
  Tokens are Bearer with an expiry; a missing/unknown/expired one gets a Belgif 401.
* ``POST {register}``: schema validation (RFC 9457 problem+json with ``issues[]``), the batch
  limit, then one result per item: ``createdPresenceRegistration{id, validity: pending,
  remarks}`` or ``notCreatedPresenceRegistration{reasons}``.
* ``GET {lookup}`` and ``GET {search}`` (worker, employer, workplace, period; paged).
* Asynchronous validation: a registration stays pending for ``validation_delay_s``, then becomes
  valid, or invalid with SOAP-style remarks derived from reference data the test sets up
  (unknown Declaration of Works, employer not on it, unknown INSS, duplicate, Dimona not OK).
* Faults (:class:`Faults`): latency, 5xx bursts, 429 storms with Retry-After, dropped
  connections, a commit followed by a hang past the client's timeout (or a drop), bad bodies,
  an outage for a given time (:meth:`Sim.outage`: 5xx on every endpoint, the token endpoint
  included, optionally with Retry-After), a token endpoint answering 503 with Retry-After, a
  refused client credential (401 ``invalid_client``) and refused search parameters (400 with a
  Belgif problem naming the parameter). Strictness that the profile sets: the casing of
  ``type`` and the fields a ``placeOfWork`` address needs; the search refuses any query
  parameter it does not know.

It also keeps its own record - every registration, every answer that carried a Retry-After
(429, 503, token endpoint included) with the moment it allowed a retry, every request's arrival
- so a test can prove "exactly once" and "Retry-After honoured" from the server's side.
Its time is ``clock`` (monotonic seconds by default): a benchmark injects a compressed clock.
:class:`SimServer` runs it in-process on loopback with real HTTP.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server

from siteclock.gateway.ciao.profile import load as load_profile
from siteclock.gateway.ciao.sim_app import Sim
from siteclock.gateway.ciao.sim_faults import BAD_BODIES, Faults, Outage, Throttle
from siteclock.gateway.ciao.sim_state import (
    REMARK_DIMONA,
    REMARK_DOW_UNKNOWN,
    REMARK_DUPLICATE,
    REMARK_EMPLOYER_NOT_ON_DOW,
    REMARK_INSS_UNKNOWN,
    SimRegistration,
    SimState,
)

# The simulator is split by job (sim_app: routes; sim_faults: fault controls; sim_state: state
# and validation; sim_http: answers); these names stay importable from here.
__all__ = [
    "BAD_BODIES",
    "REMARK_DIMONA",
    "REMARK_DOW_UNKNOWN",
    "REMARK_DUPLICATE",
    "REMARK_EMPLOYER_NOT_ON_DOW",
    "REMARK_INSS_UNKNOWN",
    "Faults",
    "Outage",
    "Sim",
    "SimRegistration",
    "SimServer",
    "SimState",
    "Throttle",
    "cli",
    "parse_rejections",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- server


class _QuietHandler(WSGIRequestHandler):
    """No access log: a search URL carries an INSS, which must never reach a log line."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None

    def log(self, type: str, message: str, *args: Any) -> None:
        if type == "error":
            log.debug("sim server: %s", message % args)


class SimServer:
    """The simulator on 127.0.0.1, real HTTP, in a background thread (werkzeug, threaded).

    Example::

        with SimServer() as sim:
            sim.register_client("self_service_chaman_1_x", public_pem)
            sim.set_faults(latency_s=0.05, rate_limit_burst=3)
            ... CiaoClient(for_local_sim(sim.url), ...) ...
            assert len(sim.registrations()) == n
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **sim_options: Any) -> None:
        self.sim = Sim(**sim_options)
        self._server = make_server(
            host, port, self.sim.app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="ciao-sim", daemon=True
        )
        self.url = f"http://{host}:{self._server.server_port}"

    def start(self) -> SimServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        # register_client, set_faults, registrations, throttles, ... live on the Sim.
        return getattr(self.sim, name)


# --------------------------------------------------------------------------- CLI


def cli(argv: list[str]) -> int:
    """``siteclock ciao-sim``: serve the simulator until interrupted."""
    from siteclock.log import setup

    parser = argparse.ArgumentParser(prog="siteclock ciao-sim", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="CLIENT_ID=PUBLIC_KEY.pem",
        help="register a client and its public key (repeatable)",
    )
    parser.add_argument("--profile", type=Path, help="contract profile (default: packaged)")
    parser.add_argument("--validation-delay", type=float, default=5.0, help="seconds pending")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--token-ttl", type=int, help="token lifetime in seconds")
    parser.add_argument(
        "--reject", action="append", default=[], metavar="INSS=REASON",
        help="validate this worker's registrations invalid; REASON: unknown (INSS not in the "
        "National Register), dimona, employer, or a remark's own text (repeatable; test INSS "
        "numbers only: real ones go in --reject-file)",
    )  # fmt: skip
    parser.add_argument(
        "--reject-file", type=Path, help="INSS=REASON lines, as --reject (# starts a comment)"
    )
    args = parser.parse_args(argv)
    try:
        rejections = parse_rejections(
            [*args.reject, *(_lines(args.reject_file) if args.reject_file else [])]
        )
    except ValueError as exc:
        print(f"siteclock ciao-sim: {exc}", file=sys.stderr)
        return 2
    setup()
    server = SimServer(
        args.host,
        args.port,
        profile=load_profile(args.profile),
        validation_delay_s=args.validation_delay,
    )
    for spec in args.client:
        client_id, _, pem = spec.partition("=")
        if not pem:
            parser.error(f"--client {spec!r}: expected CLIENT_ID=PUBLIC_KEY.pem")
        server.register_client(client_id, Path(pem).read_bytes())
    server.set_faults(latency_s=args.latency, token_ttl_s=args.token_ttl)
    for inss, remark in rejections.items():
        server.reject(inss, remark)
    if rejections:
        log.info("ciao simulator rejects workers", extra={"fields": {"count": len(rejections)}})
    log.info("ciao simulator listening", extra={"fields": {"url": server.url}})
    try:
        server._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._server.server_close()
    return 0


REJECT_REASONS = {
    "unknown": REMARK_INSS_UNKNOWN,
    "dimona": REMARK_DIMONA,
    "employer": REMARK_EMPLOYER_NOT_ON_DOW,
}
"""``--reject`` reasons by name; any other text is used as the remark itself."""


def _lines(path: Path) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"--reject-file {path}: {exc.strerror or exc}") from None
    kept = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in kept if line]


def parse_rejections(specs: list[str]) -> dict[str, str]:
    """``["85073003328=dimona", ...]`` -> ``{INSS: remark}``; a bad spec is a ValueError that
    never repeats the number (it may be a real one typed by mistake)."""
    from siteclock.gateway.identifiers import InvalidIdentifier, normalize_inss

    found: dict[str, str] = {}
    for number, spec in enumerate(specs, 1):
        who, sep, reason = spec.partition("=")
        if not sep or not reason.strip():
            raise ValueError(f"--reject #{number}: expected INSS=REASON (e.g. ...=dimona)")
        try:
            inss = normalize_inss(who)
        except InvalidIdentifier as exc:
            raise ValueError(f"--reject #{number}: {exc}") from None
        reason = reason.strip()
        found[inss] = REJECT_REASONS.get(reason.lower(), reason)
    return found
