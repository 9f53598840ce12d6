"""Which relay submitted a row, and who recovers it when that relay is gone.

Several gateways' relays share one queue on one database. A row is marked ``submitted`` (with
the instance id of the relay doing it, ``submitted_by``) and committed before its POST leaves;
if that relay dies before it records the answer, the row may or may not be at CIaO and must be
searched for (``ambiguous``). But a row another, *live* relay has in flight must be left alone:
searching for it is wasted, and a search that finds nothing yet would put it back in the queue
while the live POST is still on its way.

Who is alive: each relay process start takes a random instance id (with the hostname, for the
humans reading the rows) and holds a lease named after it for as long as it runs, renewed each
turn (:meth:`GatewayDB.hold_lease`: an advisory lock on PostgreSQL, freed by the server when
the gateway's session ends; a ``flock`` on SQLite, freed by the kernel when the process dies).
A row whose submitter's lease nobody holds any more belongs to a relay that is gone. Every relay
looks at start, then every ``check_s``: a gateway SIGKILLed while others run has its in-flight
rows recovered by a survivor within that time of its lease being freed.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections import Counter
from collections.abc import Callable

from siteclock.gateway.relay_store import RelayStore
from siteclock.log import fields

log = logging.getLogger(__name__)

LEASE_PREFIX = "siteclock.relay.instance."
CHECK_S = 5.0
"""How often a relay looks for rows left ``submitted`` by relays that are gone."""


def new_instance_id() -> str:
    """``<hostname>-<12 random hex digits>``: unique per process start, never reused, so a
    lease found free can only be a relay that is gone (it never comes back under that id)."""
    return f"{socket.gethostname()}-{secrets.token_hex(6)}"


def lease_of(instance: str) -> str:
    return LEASE_PREFIX + instance


class RelayInstance:
    """This relay's identity on the shared database and the recovery of gone relays' rows."""

    def __init__(
        self,
        store: RelayStore,
        counters: Counter[str],
        clock_ns: Callable[[], int],
        *,
        check_s: float = CHECK_S,
    ) -> None:
        self.store = store
        self.counters = counters
        self.clock_ns = clock_ns
        self.check_s = check_s
        self.id = new_instance_id()
        self._next_check_ns = 0
        if not store.db.hold_lease(lease_of(self.id)):
            raise RuntimeError(f"relay instance lease {self.id} is held already")

    def renew(self) -> None:
        """Hold the instance lease again if it was lost (PostgreSQL: the lease session was cut
        and reopened): until then other relays may take our in-flight rows for a gone relay's."""
        if not self.store.db.hold_lease(lease_of(self.id)):
            self.counters["instance_lease_lost"] += 1
            log.error(
                "relay instance lease held by another process; its rows may be recovered by "
                "other gateways: restart this gateway",
                extra=fields(instance=self.id),
            )

    def recover(self, *, starting: bool = False) -> int:
        """Make the rows of gone relays ``ambiguous``; at start also rows marked before
        instances were recorded. Due every ``check_s`` (always at start). Returns how many."""
        now = self.clock_ns()
        if not starting and now < self._next_check_ns:
            return 0
        self._next_check_ns = now + int(self.check_s * 1e9)
        db = self.store.db
        gone: list[str | None] = [
            by
            for by in db.submitters()
            if by is not None and by != self.id and db.lease_abandoned(lease_of(by))
        ]
        if starting:
            gone.append(None)
        if not gone:
            return 0
        recovered = self.store.recover_submitted(now, gone)
        if recovered:
            self.counters["recovered_submitted"] += recovered
            log.warning(
                "relay recovered in-flight events of a gone relay; they are searched for at "
                "CIaO before anything is sent again",
                extra=fields(count=recovered, gone=",".join(str(g) for g in gone if g)),
            )
        return recovered

    def close(self) -> None:
        """Let go of the instance (a clean stop): rows still ``submitted`` by it (a POST cut
        short) are then recovered by the next relay to look."""
        self.store.db.drop_lease(lease_of(self.id))
