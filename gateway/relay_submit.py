"""Relay submission: one batch of ``queued`` rows after another, in (terminal, seq) order, up
to the profile's limit, each mapped to a CIaO item (:mod:`gateway.relay_mapping`), committed as
``submitted`` *before* its POST leaves, and its answer or failure recorded
(:mod:`gateway.relay_failures`).

The POST runs on a one-thread executor; meanwhile this thread reads, resolves, maps and commits
the next batch (with the previous results, in one transaction). Both batches are "submitted"
in the database before their POST leaves, so a crash at any point leaves nothing that a restart
would not search for first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from siteclock.gateway.ciao.client import BadResponse, ItemResult, Permanent, describe_problem
from siteclock.gateway.registry import Resolved, Workplace
from siteclock.gateway.relay_failures import (
    Action,
    Key,
    Update,
    ambiguous_columns,
    classify,
    describe,
    refusal_updates,
    requeue_updates,
)
from siteclock.gateway.relay_gaps import TerminalOrder, predecessors
from siteclock.gateway.relay_mapping import (
    ClockDecision,
    ciao_item,
    employer_json,
    not_after_arrival,
    registration_date,
    terminal_time,
    unreadable_body,
    unresolved,
    unsynced_tap,
)
from siteclock.gateway.relay_store import FINAL, State
from siteclock.log import fields
from siteclock.protocol import Event, ProtocolError

if TYPE_CHECKING:
    from siteclock.gateway.relay import Relay

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """One registerInBulk call: its rows, their items and their attempt counts."""

    keys: list[Key] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[Key, int] = field(default_factory=dict)
    unresolved: int = 0


class Submitter:
    """Maps, marks and sends queued rows, and records each POST's outcome."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        # One thread for the POST in flight, so the next batch is prepared meanwhile.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ciao-post")
        self._registry_version = -1
        self._cache: dict[str, Resolved | None] = {}
        self._places: dict[str, Workplace | None] = {}
        self._employers: dict[Any, tuple[dict[str, str], str]] = {}

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ registry lookups

    def _refresh_cache(self) -> None:
        """Forget cached lookups when the registry changed (one query per batch, not per row)."""
        version = self.relay.registry.version
        if version != self._registry_version:
            self._cache.clear()
            self._places.clear()
            self._registry_version = version

    def _employer(self, worker: Resolved) -> tuple[dict[str, str], str]:
        """The employer object of an item and its JSON text, computed once per employer."""
        found = self._employers.get(worker.employer)
        if found is None:
            obj = employer_json(worker)
            found = self._employers[worker.employer] = (obj, json.dumps(obj))
        return found

    def _lookup(self, badge: str, workplace: str) -> tuple[Resolved | None, Workplace | None]:
        registry = self.relay.registry
        if badge not in self._cache:
            self._cache[badge] = registry.resolve(badge)
        if workplace not in self._places:
            self._places[workplace] = registry.workplace(workplace)
        return self._cache[badge], self._places[workplace]

    def retry_unresolved(self) -> int:
        """Rows waiting for the registry go again when the registry changed."""
        relay = self.relay
        return relay.store.retry_waiting_for_registry(relay.registry.version)

    # ------------------------------------------------------------------ submit

    def submit(self) -> int:
        """Submit queued batches, preparing the next one while the current POST is in flight."""
        relay = self.relay
        if relay.told_to_wait():
            return 0
        work = 0
        in_flight: tuple[Batch, Future[list[ItemResult]]] | None = None
        for _ in range(relay.config.batches_per_turn):
            prepared = self._prepare()
            if in_flight is not None:
                try:
                    work += self._finish(*in_flight)
                except BaseException:
                    if prepared is not None and prepared.keys:  # prepared, never sent
                        self._requeue(
                            prepared.keys, prepared.attempts, None, "not_sent", count_attempt=False
                        )
                    raise
                in_flight = None
            if prepared is None:
                break
            work += prepared.unresolved
            if not prepared.keys:
                continue
            in_flight = (prepared, self._executor.submit(relay.client.register, prepared.items))
        if in_flight is not None:
            work += self._finish(*in_flight)
        if not work and relay.carrying:  # nothing to pair the last results with: commit them
            relay.flush_carried()
            work = 1
        return work

    def _prepare(self) -> Batch | None:
        """Read the next queued rows, map them to CIaO items, commit them as submitted."""
        relay = self.relay
        now = relay.clock_ns()
        rows = relay.store.queued(now, relay.batch_limit)
        if not rows:
            return None
        # A row marked solo failed inside a batch without a named culprit: it goes alone.
        rows = rows[:1] if rows[0]["solo"] else [r for r in rows if not r["solo"]]
        # A worker's sequence is decided from every tap the gateway holds, each at its true
        # time: an event waits while an earlier event of its terminal is missing or not dated
        # yet (gateway.relay_gaps). The rows come in (terminal, seq) order, as the rule needs.
        order = TerminalOrder(
            relay.store.registration_states(predecessors(rows)),
            now_ns=now,
            hold_ns=int(relay.config.gap_hold_s * 1e9),
            recheck_ns=int(relay.config.gap_recheck_s * 1e9),
        )
        self._refresh_cache()
        batch = Batch()
        waiting: list[Update] = []
        held: list[Update] = []
        gap_held: list[Update] = []
        ready: dict[Key, tuple[Any, Resolved, Workplace, ClockDecision]] = {}
        for row in rows:
            key = (row["terminal"], row["seq"])
            columns = order.hold(row)
            if columns is not None:
                gap_held.append((key, columns))
                continue
            worker, place = self._lookup(row["badge"], row["workplace"])
            if worker is None or place is None:
                blocked = worker is None and relay.registry.badge_blocked(row["badge"])
                state, reason = unresolved(worker is not None, blocked)
                values = {
                    "state": state,
                    "last_error": reason,
                    "registry_version": self._registry_version,
                    "updated_ns": now,
                }
                waiting.append((key, values))
                continue
            clock = self._clock_of(row, now)
            if clock.wall_ns is None:  # clock_unsynced, no sync point yet: held for now
                held.append((key, clock.columns))
                order.waits(key)
                continue
            ready[key] = (row, worker, place, clock)
        if order.expired:
            relay.counters["gap_hold_expired"] += len(order.expired)
            terminal, seq = order.expired[0]
            log.warning(
                "earlier events of a terminal never arrived; deciding without them",
                extra=fields(terminal=terminal, seq=seq, events=len(order.expired),
                             held_s=relay.config.gap_hold_s),
            )  # fmt: skip
        # Each worker's taps are decided oldest first, by the time that will be submitted.
        dated = {k: c.wall_ns for k, (*_, c) in ready.items() if c.wall_ns is not None}
        columns_of: list[Update] = []
        precision = relay.profile.contract.timestamp_precision
        for row in relay.sequence.start_batch([row for row, *_ in ready.values()], dated):
            key = (row["terminal"], row["seq"])
            _, worker, place, clock = ready[key]
            assert clock.wall_ns is not None  # the undated ones were held above
            employer, employer_text = self._employer(worker)
            date = registration_date(clock.wall_ns, precision)
            kind = relay.sequence.decide(row, worker_ref=worker.worker_ref, wall_ns=clock.wall_ns)
            ciao_type = relay.profile.ciao_type(kind)
            batch.items.append(ciao_item(worker, place, employer, date, ciao_type))
            batch.keys.append(key)
            batch.attempts[key] = row["attempts"] + 1
            columns_of.append(
                (
                    key,
                    {
                        "state": State.SUBMITTED,
                        "attempts": row["attempts"] + 1,
                        "worker_ref": worker.worker_ref,
                        "employer": employer_text,
                        "workplace": place.ref,
                        "reg_date": date,
                        "ciao_type": ciao_type,
                        "submitted_ns": now,
                        "submitted_by": relay.instance.id,
                        "updated_ns": now,
                        **clock.columns,
                    },
                )
            )
        # Commit "submitted" before the POST leaves: a crash now is seen as ambiguous later.
        # Rows read as queued may have been claimed since (a badge-enrolment tap): re-check in
        # this transaction and leave those alone, so a claim always wins over the relay.
        with relay.tx() as db:
            queued = relay.store.still_queued(
                db,
                [*batch.keys, *(k for k, _ in waiting), *(k for k, _ in held),
                 *(k for k, _ in gap_held)],
            )  # fmt: skip
            if len(queued) < len(batch.keys) + len(waiting) + len(held) + len(gap_held):
                kept = [i for i, key in enumerate(batch.keys) if key in queued]
                batch.items = [batch.items[i] for i in kept]
                batch.keys = [batch.keys[i] for i in kept]
                columns_of = [columns_of[i] for i in kept]
                waiting = [(key, values) for key, values in waiting if key in queued]
                held = [(key, values) for key, values in held if key in queued]
                gap_held = [(key, values) for key, values in gap_held if key in queued]
                relay.counters["claimed_before_submit"] += 1
            relay.store.update_each(db, waiting)
            relay.store.update_each(db, held)
            relay.store.update_each(db, gap_held)
            relay.store.update_each(db, columns_of)
            relay.sequence.commit(db, batch.keys, now)
        relay.counters["unresolved"] += len(waiting)
        relay.counters["clock_held"] += len(held)
        relay.counters["gap_held"] += len(gap_held)
        batch.unresolved = len(waiting)
        return batch

    def _clock_of(self, row: Any, now: int) -> ClockDecision:
        """The time to submit for a queued row and the clock columns to record with it.

        Only ``clock_unsynced`` events carry a body in the row (see ``RelayStore.queued``);
        every other event is its terminal's own time, at the cost of one ``None`` check.
        """
        decision = self._terminal_clock(row, now)
        # Whatever the clock said, nothing goes to the NSSO later than it reached us.
        arrived = not_after_arrival(decision, row["wall_ns"], row["created_ns"])
        if arrived is not decision:
            self.relay.counters[arrived.counter or ""] += 1
        return arrived

    def _terminal_clock(self, row: Any, now: int) -> ClockDecision:
        body = row["unsynced_body"]
        terminal_ns = row["wall_ns"]
        relay = self.relay
        if body is None:
            relay.clock_holds.note(row["terminal"], held=False)
            return terminal_time(terminal_ns)
        try:
            event = Event.from_bytes(body)
        except ProtocolError:
            decision = unreadable_body(terminal_ns)
        else:
            sync = relay.terminals.sync_point(row["terminal"], event.boot_id)
            decision = unsynced_tap(
                terminal_ns=terminal_ns,
                event_boot_ns=event.boot_ns,
                sync=None if sync is None else (sync.wall_ns, sync.boot_ns),
                created_ns=row["created_ns"],
                now_ns=now,
                hold_s=relay.config.unsynced_hold_s,
                recheck_s=relay.config.unsynced_recheck_s,
            )
        if decision.counter:
            relay.counters[decision.counter] += 1
        relay.clock_holds.note(row["terminal"], held=decision.wall_ns is None)
        return decision

    # ------------------------------------------------------------------ outcomes

    def _finish(self, batch: Batch, call: Future[list[ItemResult]]) -> int:
        """Wait for one POST and record what it means for each of its items."""
        keys, attempts = batch.keys, batch.attempts
        try:
            results = call.result()
        except Exception as exc:
            failure = classify(exc)
            if failure.action is Action.REQUEUE:
                self._requeue(keys, attempts, exc, failure.counter)
            elif failure.action is Action.AMBIGUOUS:
                self._mark_ambiguous(keys, exc)
            elif failure.action is Action.REFUSED and isinstance(exc, Permanent):
                self._refused(keys, attempts, exc, failure.counter)
            elif failure.action is Action.SHUTDOWN:
                self._requeue(keys, attempts, None, failure.counter, count_attempt=False)
                raise
            else:  # a bug on our side after the request may have left: ambiguous
                self._mark_ambiguous(keys, exc)
                raise
        else:
            self.relay.alerts.answered()
            self._store_results(keys, results)
        return len(keys)

    def _store_results(self, keys: list[Key], results: list[ItemResult]) -> None:
        relay = self.relay
        now = relay.clock_ns()
        first_poll = now + int(relay.config.poll_interval_s * 1e9)
        updates: list[Update] = []
        for key, result in zip(keys, results, strict=True):
            if result.created:
                state = relay.state_for(result.validity or "")
                relay.counters["created"] += 1
                values = {
                    "state": state,
                    "ciao_id": result.id,
                    "validity": result.validity,
                    "remarks": result.remarks,
                    "last_error": "",
                    "next_try_ns": first_poll,
                    "updated_ns": now,
                    "final_ns": now if state in FINAL else None,
                }
            else:
                relay.counters["not_created"] += 1
                values = {
                    "state": State.REJECTED,
                    "remarks": result.reasons,
                    "final_ns": now,
                    "last_error": "not created",
                    "updated_ns": now,
                }
            updates.append((key, values))
        relay.carry(updates)

    def _requeue(
        self,
        keys: list[Key],
        attempts: Mapping[Key, int],
        exc: BaseException | None,
        counter: str,
        *,
        count_attempt: bool = True,
    ) -> None:
        """Back to ``queued`` with a jittered backoff (or the Retry-After), however many
        attempts it took: a failure that is not an answer about the item never ends it."""
        relay = self.relay
        now = relay.clock_ns()
        relay.counters[counter] += 1
        if exc is not None:
            relay.alerts.trouble(exc, now)
        updates = requeue_updates(
            keys,
            attempts,
            error=describe(exc) if exc else counter,
            now_ns=now,
            delay_s=relay.backoff_s,
            retry_after=getattr(exc, "retry_after", None),
            count_attempt=count_attempt,
        )
        with relay.tx() as db:
            relay.store.update_each(db, updates)
        log.warning("relay batch requeued", extra=fields(reason=counter, items=len(keys)))

    def _mark_ambiguous(self, keys: list[Key], exc: BaseException) -> None:
        relay = self.relay
        now = relay.clock_ns()
        relay.counters["ambiguous"] += 1
        if isinstance(exc, BadResponse):
            relay.counters[f"bad_response.{exc.kind}"] += 1
        relay.alerts.trouble(exc, now)
        columns = ambiguous_columns(exc, now, relay.config.ambiguous_settle_s)
        with relay.tx() as db:
            relay.store.update(db, keys, **columns)
        log.warning(
            "relay batch ambiguous",
            extra=fields(reason=getattr(exc, "reason", "bug"), items=len(keys)),
        )

    def _refused(
        self, keys: list[Key], attempts: Mapping[Key, int], exc: Permanent, counter: str
    ) -> None:
        """A 400 about the items: see :func:`gateway.relay_failures.refusal_updates`."""
        relay = self.relay
        now = relay.clock_ns()
        relay.alerts.answered()
        relay.counters[counter] += 1
        updates, refused = refusal_updates(keys, attempts, exc, now)
        if refused:
            relay.counters["refused"] += refused
        with relay.tx() as db:
            relay.store.update_each(db, updates)
        log.warning(
            "relay batch refused",
            extra=fields(reason=exc.reason, refused=refused, problem=describe_problem(exc.problem)),
        )
