"""Link a badge by tapping it on a terminal already on the wall ("enrolment mode").

The employer names a worker and a terminal, and the worker taps their new badge there. Nothing
has to be sent to the terminal first: a terminal records every badge its roster does not know
(flagged ``unknown_badge``, answered "saved, badge not yet known") and forwards it, so the
gateway sees the tap in its inbox within a second. The next such tap at that terminal after the
command started is the badge to link.

That tap is an enrolment, not an attendance registration, and must never reach the NSSO. Its
relay row is therefore claimed as ``enrolment`` *before* the badge is linked: until the link
exists the relay cannot resolve the badge, and once the row is claimed the relay skips it
(:meth:`gateway.relay.Relay` re-checks each row's state in the transaction that marks a batch
submitted). The tap stays in the inbox as evidence of the enrolment.

Example::

    badge = link_next_tap(db, workers, worker_ref="w-ana", terminal_id="t-lobby",
                          since_ns=time.time_ns(), timeout_s=120)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from siteclock.gateway.db import GatewayDB, open_gateway_db
from siteclock.gateway.relay_store import State
from siteclock.protocol import Flag, check_terminal_id
from siteclock.provisioning.gateway.workers import WorkerError, Workers

POLL_S = 0.2


def _claim(db: GatewayDB, terminal_id: str, seq: int) -> None:
    """Mark the enrolment tap so the relay never registers it as attendance."""
    state = db.claim_tap(
        terminal_id, seq, State.ENROLMENT, "badge enrolment tap, not attendance",
        (State.QUEUED, State.UNRESOLVED), time.time_ns(),
    )  # fmt: skip
    if state != State.ENROLMENT:
        raise WorkerError(
            f"tap {terminal_id}#{seq} was already handled as attendance ({state}); "
            "tap the badge again"
        )


def link_next_tap(
    db_path: Path | GatewayDB,
    workers: Workers,
    *,
    worker_ref: str,
    terminal_id: str,
    since_ns: int,
    timeout_s: float = 120.0,
    on_waiting: Callable[[], None] | None = None,
) -> str:
    """Wait for an unknown badge tapped on ``terminal_id`` after ``since_ns``; link it to
    ``worker_ref``. Returns the badge. Raises :class:`WorkerError` on timeout or conflict."""
    check_terminal_id(terminal_id)
    if workers.registry.worker(worker_ref) is None:
        raise WorkerError(f"no worker {worker_ref!r}; add the worker first")
    db, owned = open_gateway_db(db_path)  # its tables exist from here on, relay running or not
    unknown = f'%"{Flag.UNKNOWN_BADGE}"%'
    try:
        if on_waiting is not None:
            on_waiting()
        # A poll, on purpose: the tap is written by the gateway's intake, another process, so
        # no in-process event can announce it; the database is all both share. One indexed
        # read every POLL_S while a person walks to the terminal costs nothing.
        deadline = time.monotonic() + timeout_s
        while (found := db.next_unknown_badge_tap(terminal_id, since_ns, unknown)) is None:
            if time.monotonic() > deadline:
                raise WorkerError(
                    f"no new badge was tapped on {terminal_id} within {timeout_s:.0f} s; "
                    "check that the terminal is online, then run the command again"
                )
            time.sleep(POLL_S)
        seq, badge = found
        _claim(db, terminal_id, seq)
    finally:
        if owned:
            db.close()
    return workers.link_badge(badge, worker_ref)
