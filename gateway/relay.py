"""The relay: stored events -> CIaO registrations -> verdicts back to terminals.

One loop, one thread, one SQLite connection (see :mod:`gateway.relay_store` for the states).
:class:`Relay` is only the scheduler; each stage lives in its own module and is tested alone.
Each turn of :meth:`Relay.run_once`:

1. takes new inbox rows in as ``queued``;
2. reconciles ``ambiguous`` rows (:mod:`gateway.relay_reconcile`): searches CIaO for each
   (worker, employer, workplace, date) and adopts a registration found there; only the ones
   not found go back to ``queued``; a row whose search stays refused for ``review_after_s``
   goes to ``needs_review`` for a person;
3. submits one batch of ``queued`` rows after another (:mod:`gateway.relay_submit`), each
   mapped by the pure functions of :mod:`gateway.relay_mapping`: badge -> worker and employer
   through the registry, kind -> CIaO type, ``wall_ns`` -> ``registrationDate`` (RFC 3339,
   UTC, ``Z``), an unsynced tap dated from a later sync point of the same boot or held up to
   ``unsynced_hold_s`` for one (DESIGN decision 4); a failed POST is classified by
   :mod:`gateway.relay_failures`;
4. retries rows waiting for the registry (unknown or blocked badge, unknown workplace) when
   the registry changed;
5. polls ``pending`` registrations (:mod:`gateway.relay_poll`), at most
   ``poll_calls_per_turn`` calls a turn so polling never holds up submission;
6. hands each final verdict to ``on_verdict(terminal, Verdict)`` and raises an alert for any
   event still without a verdict after ``verdict_timeout_s`` (:mod:`gateway.relay_notify`).

A POST is never repeated blindly: anything that may have reached CIaO is searched for first.
Nothing that could still succeed is given up: outages, 429s and refused credentials keep rows
queued with a capped, jittered backoff and open an alert naming the cause (``relay_alerts``),
closed when CIaO answers again. Only a 400 naming an item ends it (``refused``). Every
Retry-After is persisted, so a restart honours it. Failures are counted in
:attr:`Relay.counters`; no row is ever deleted. The SQL the stages need is named in
:mod:`gateway.relay_queries`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from siteclock.gateway.ciao.client import CiaoClient, ShuttingDown
from siteclock.gateway.ciao.policy import delay_for_attempt, requeue_wait
from siteclock.gateway.db import GatewayDB
from siteclock.gateway.registry import Registry
from siteclock.gateway.relay_config import RelayConfig
from siteclock.gateway.relay_failures import (
    ALERT_TEXT,
    CREDENTIALS,
    REFUSING,
    THROTTLED,
    UNREACHABLE,
    UNRECONCILED,
    Alerts,
    Update,
)
from siteclock.gateway.relay_instances import RelayInstance
from siteclock.gateway.relay_mapping import (
    BADGE_BLOCKED,
    BADGE_UNKNOWN,
    NEVER_SYNCED,
    WAITING_FOR_SYNC,
    WORKPLACE_UNKNOWN,
    ciao_item,
    corrected_wall_ns,
    item_problem,
    registration_date,
)
from siteclock.gateway.relay_notify import Notifier
from siteclock.gateway.relay_poll import Poller
from siteclock.gateway.relay_reconcile import DROPPABLE_SEARCH, CiaoSearch, Reconciler
from siteclock.gateway.relay_store import RelayStore, State
from siteclock.gateway.relay_submit import Submitter
from siteclock.gateway.sequence import SequenceCheck
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.gateway.waits import ClockHolds
from siteclock.protocol import Verdict
from siteclock.shift import ShiftRule

__all__ = [
    "ALERT_TEXT",
    "BADGE_BLOCKED",
    "BADGE_UNKNOWN",
    "CREDENTIALS",
    "DROPPABLE_SEARCH",
    "NEVER_SYNCED",
    "REFUSING",
    "THROTTLED",
    "UNREACHABLE",
    "UNRECONCILED",
    "WAITING_FOR_SYNC",
    "WORKPLACE_UNKNOWN",
    "Relay",
    "RelayConfig",
    "ciao_item",
    "corrected_wall_ns",
    "item_problem",
    "registration_date",
]

log = logging.getLogger(__name__)
VERDICTS_LEASE = "siteclock.relay.verdicts"
"""The lease (``GatewayDB.hold_lease``) of the relay stages one gateway of several runs at a
time: the search for ambiguous rows, verdict polling, notifying terminals, overdue alerts."""


class Relay:
    """Relays a gateway's stored events to CIaO. ``start()``/``stop()`` or ``run_once()``.

    The scheduler: it owns the loop, the store connection and the transaction that carries
    the last POST's results, and runs the stages in order; the stages reach the shared parts
    (store, clock, counters, alerts, client, search) through it."""

    def __init__(
        self,
        db_path: Path | str,
        client: CiaoClient,
        registry: Registry,
        *,
        on_verdict: Callable[[str, Verdict], None],
        config: RelayConfig | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        shift: ShiftRule | None = None,
    ) -> None:
        self.client = client
        self.registry = registry
        self.config = config or RelayConfig()
        self.profile = client.profile
        self.batch_limit = self.config.batch_limit or self.profile.contract.batch_limit
        self.clock_ns = clock_ns
        self.store = RelayStore(db_path)
        # Sync points live with the terminals (written from heartbeats); read them there.
        self.terminals = TerminalRegistry(db_path)
        self.counters: Counter[str] = Counter()
        self.clock_holds = ClockHolds(
            self.config.unsynced_hold_s, clock=lambda: self.clock_ns() / 1e9
        )
        """Said loudly while a terminal's taps wait for its clock (gateway.waits)."""
        # docs/direction.md; ``shift`` is the gateway config's [sequence] rule
        self.sequence = SequenceCheck(
            self.store.db, counters=self.counters, rule=shift or ShiftRule()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_scan_ns = 0
        self._carry: list[Update] = []
        self._wait = requeue_wait(self.config.backoff)
        self.alerts = Alerts(self.store, self.counters, clock_ns)
        self.search = CiaoSearch(client, self.counters)
        self.submitter = Submitter(self)
        self.reconciler = Reconciler(self)
        self.poller = Poller(self)
        self.notifier = Notifier(self, on_verdict)
        # A Retry-After outlives the process: honour the one a previous run was given, and
        # persist each new one the moment the client learns it.
        saved = self.store.not_before_ns()
        if saved:
            client.honour_not_before(saved / 1e9)
        client.on_not_before = lambda instant: self.store.save_not_before(int(instant * 1e9))
        # Rows left submitted by relays that are gone (this gateway's last run, or another
        # gateway on the shared database), never those of a live one (gateway.relay_instances).
        self.instance = RelayInstance(self.store, self.counters, clock_ns)
        self.instance.recover(starting=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Relay:
        self._thread = threading.Thread(target=self._loop, name="ciao-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop; a backoff or Retry-After wait in the client is cut short."""
        self._stop.set()
        self.client.shutdown.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.submitter.shutdown()
        self.flush_carried()
        self.instance.close()
        self.store.close()
        self.terminals.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except ShuttingDown:
                return
            except Exception:  # the loop must outlive one bad turn
                self.counters["loop_error"] += 1
                log.exception("relay turn failed")
                busy = 0
            if not busy:
                self._stop.wait(self.config.idle_s)

    # ------------------------------------------------------------------ shared by the stages

    @contextmanager
    def tx(self) -> Iterator[GatewayDB]:
        """A write transaction that also commits the carried results of the last POST.

        Results are carried rather than committed on their own so that one fsync covers them
        and the next batch's "submitted" mark. If the process dies in between, those rows are
        still "submitted": the restart treats them as ambiguous and finds them by search.
        """
        with self.store.tx() as db:
            if self._carry:
                self.store.update_each(db, self._carry)
            yield db
        self._carry = []

    def carry(self, updates: list[Update]) -> None:
        """Results to commit with the next write transaction (see :meth:`tx`)."""
        self._carry.extend(updates)

    @property
    def carrying(self) -> bool:
        return bool(self._carry)

    def flush_carried(self) -> None:
        """Commit the carried results now, when no other write comes to take them along."""
        if self._carry:
            self.store.flush(self._carry)
            self._carry = []

    def told_to_wait(self) -> bool:
        """CIaO's last Retry-After has not passed: no call would leave, so prepare none (the
        turn stays free for verdicts and alerts, and no batch is marked submitted in vain)."""
        return self.client.not_before > self.client.clock()

    def backoff_s(self, attempts: int) -> float:
        return delay_for_attempt(self._wait, attempts)

    def state_for(self, validity: str) -> State:
        """A CIaO validity as a row state: final when valid or invalid, else pending."""
        if validity == self.profile.validity.valid:
            return State.REGISTERED
        if validity == self.profile.validity.invalid:
            return State.REJECTED
        return State.PENDING

    # ------------------------------------------------------------------ one turn

    def run_once(self) -> int:
        """One turn of the loop; returns how much work it did (0 = idle)."""
        now = self.clock_ns()
        full = now - self._last_scan_ns >= self.config.rescan_s * 1e9
        if full:
            self._last_scan_ns = now
        work = self.store.take_new(now, full=full)
        self.instance.renew()
        work += self.instance.recover()
        # Submitting is shared by every gateway's relay (claims skip each other's rows);
        # searching for ambiguous rows, polling verdicts, notifying and alerting are done by
        # the one holding the lease, so no row is searched, resubmitted or announced twice.
        leading = self.store.db.hold_lease(VERDICTS_LEASE)
        if leading:
            work += self.reconciler.run()
        work += self.submitter.submit()
        work += self.submitter.retry_unresolved()
        if leading:
            work += self.poller.run()
            work += self.notifier.notify()
            self.notifier.alert_overdue()
        return work
