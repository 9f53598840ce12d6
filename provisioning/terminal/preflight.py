"""What ``provision run`` checks before it spends the enrolment token.

The token is single use. Everything the terminal can find out on its own is checked first, so
a wrong reader spec, a gateway that is down or a broker the terminal cannot reach is reported
while the token is still good and the terminal id still free:

* **reader**: the spec is understood and the device opens (its first status is OK);
* **gateway**: the enrolment endpoint answers over TLS checked against the pinned site CA;
* **broker**: the host and port the gateway names (or ``--broker-host``) accept a connection;
* **clock**: synchronised, or a WARN (taps are recorded and flagged, never refused).

A FAIL stops the run before the token is used; a WARN is printed and the run goes on.

Example::

    checks = preflight(opts, ca_file, out=print)
    if any(c.verdict is Verdict.FAIL for c in checks): ...
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siteclock.hw.base import Reader, ReaderState, ReaderStatus
from siteclock.provisioning.terminal.client import GatewayClient, GatewayError
from siteclock.provisioning.terminal.selftest import Check, Verdict, check_clock, watch_reader

READER_OPEN_TIMEOUT_S = 5.0
BROKER_CONNECT_TIMEOUT_S = 5.0


def check_reader_opens(
    spec: str,
    *,
    reader: Reader | None = None,
    timeout_s: float = READER_OPEN_TIMEOUT_S,
) -> Check:
    """Open the reader ``spec`` names and wait for its first status (no badge needed)."""
    from siteclock import hw

    if reader is None:
        try:
            reader = hw.open_reader(spec)
        except ValueError as exc:  # ReaderSpecError: the spec names no reader we know
            return Check("reader", Verdict.FAIL, str(exc))
    items, errors = watch_reader(reader, lambda i: isinstance(i, ReaderStatus), timeout_s)
    statuses = [i for i in items if isinstance(i, ReaderStatus)]
    if not statuses and not errors:
        return Check("reader", Verdict.FAIL, f"{spec}: no answer within {timeout_s:g} s")
    if statuses and statuses[0].state is ReaderState.OK:
        return Check("reader", Verdict.PASS, f"{spec}: opened")
    detail = statuses[0].detail if statuses else errors[-1]
    detail = detail.split("; retrying every")[0]  # the run stops here: it retries nothing
    return Check("reader", Verdict.FAIL, f"{spec}: {detail}")


def check_broker_reachable(
    host: str, port: int, *, timeout_s: float = BROKER_CONNECT_TIMEOUT_S
) -> Check:
    """A TCP connection to the broker's terminal listener (login is tested after enrolment)."""
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror:
        return Check("broker", Verdict.FAIL, f"{where}: the name does not resolve here")
    except TimeoutError:
        return Check(
            "broker", Verdict.FAIL, f"{where}: no answer within {timeout_s:g} s (firewall?)"
        )
    except OSError as exc:
        return Check(
            "broker",
            Verdict.FAIL,
            f"{where}: {exc.strerror or exc} (is the broker running, is the port open? "
            "--broker-host overrides the name the gateway gives)",
        )
    return Check("broker", Verdict.PASS, f"{where} reachable")


def preflight(
    opts: Any,
    ca_file: Path,
    *,
    reader: Reader | None = None,
    out: Callable[[str], None] = print,
    clock_check: Callable[[], Check] = check_clock,
) -> list[Check]:
    """Every check above for ``opts`` (a ``ProvisionOptions``), each printed as it ends."""
    checks: list[Check] = []

    def record(check: Check) -> None:
        checks.append(check)
        out(check.line())

    if reader is not None:
        record(Check("reader", Verdict.PASS, f"{opts.reader_spec}: given by the caller"))
    else:
        record(check_reader_opens(opts.reader_spec))
    client = GatewayClient(opts.gateway_url, ca_file)
    endpoint = None
    try:
        endpoint = client.broker()
    except GatewayError as exc:
        record(Check("gateway", Verdict.FAIL, str(exc)))
    else:
        record(Check("gateway", Verdict.PASS, f"{opts.gateway_url} answers with the site CA"))
    if endpoint is not None:
        host = opts.broker_host or endpoint[0]
        record(check_broker_reachable(host, endpoint[1]))
    elif not any(c.name == "gateway" and c.verdict is Verdict.FAIL for c in checks):
        record(Check("broker", Verdict.WARN, "the gateway does not say; tested after enrolment"))
    with contextlib.suppress(Exception):  # a clock that cannot be read is no reason to stop
        record(clock_check())
    return checks


__all__ = ["check_broker_reachable", "check_reader_opens", "preflight"]
