"""Relay stage 3: reconciliation. An *ambiguous* row (its POST may have reached CIaO) is never
sent again blind: CIaO is searched for each (worker, employer, workplace, date range) and a
registration found there is adopted; only the rows not found go back to ``queued``.

A search parameter CIaO refuses is dropped and the answers filtered here instead
(:class:`CiaoSearch`, shared with polling); a row whose search stays refused for
``review_after_s`` goes to ``needs_review`` for a person.

The decisions (which hit is whose, which parameters to drop, what a refused search does to its
rows) are pure functions, tested alone in tests/unit/test_relay_reconcile.py.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from siteclock.gateway.ciao.client import (
    CiaoClient,
    CiaoError,
    Permanent,
    Registration,
    ShuttingDown,
    describe_problem,
)
from siteclock.gateway.relay_failures import NOT_ANSWERED, UNRECONCILED, Update, describe
from siteclock.gateway.relay_mapping import instant
from siteclock.gateway.relay_queries import anyone_awaits_review, due_ambiguous
from siteclock.gateway.relay_stage import DueRowsStage
from siteclock.gateway.relay_store import FINAL, State
from siteclock.log import fields

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# Query parameters the relay can do without, by filtering the answers itself.
DROPPABLE_SEARCH = ("ssin", "date_from", "date_to", "page", "page_size")


def parameters_to_drop(
    exc: Permanent, droppable: Collection[str], omitted: Collection[str]
) -> set[str]:
    """The query parameters a refused search names that we can do without and still send;
    empty when the refusal is about anything else (then it stands)."""
    refused = {
        str(i.get("name"))
        for i in exc.issues
        if i.get("in") == "query" and str(i.get("name")) in droppable
    }
    if exc.status != 400 or not refused or refused <= set(omitted):
        return set()
    return refused


def match_registrations(
    members: Sequence[Any], hits: Sequence[Registration], taken: set[str]
) -> tuple[list[tuple[Any, Registration]], list[Any]]:
    """Pair each ambiguous row with a registration CIaO holds of the same type at the same
    instant and not already some other row's (``taken``, updated). Returns the pairs and the
    rows left without one."""
    matched, missing = [], []
    for row in members:
        want = instant(row["reg_date"])
        match = next(
            (
                h
                for h in hits
                if h.id not in taken
                and h.type.lower() == row["ciao_type"].lower()
                and instant(h.registration_date) == want
            ),
            None,
        )
        if match is None:
            missing.append(row)
            continue
        taken.add(match.id)
        matched.append((row, match))
    return matched, missing


def adopted_columns(match: Registration, state: State, now_ns: int) -> dict[str, Any]:
    """A row that found its registration at CIaO takes it over as if its POST had answered."""
    return {
        "state": state,
        "ciao_id": match.id,
        "validity": match.validity,
        "remarks": match.remarks,
        "last_error": "",
        "updated_ns": now_ns,
        "next_try_ns": now_ns,
        "final_ns": now_ns if state in FINAL else None,
        "search_refused_ns": None,
    }


def search_refused_updates(
    members: Iterable[Any], exc: Permanent, now_ns: int, *, review_after_s: float, retry_ns: int
) -> tuple[list[Update], int]:
    """The search itself is refused and no fallback is left: the rows wait (never resubmitted
    blind) until ``retry_ns`` and, once refused for ``review_after_s``, go to a person.
    Returns the updates and how many rows now need review."""
    error = describe(exc)
    review_after = int(review_after_s * 1e9)
    updates: list[Update] = []
    reviewed = 0
    for row in members:
        first = row["search_refused_ns"] or now_ns
        values: dict[str, Any] = {
            "search_refused_ns": first,
            "last_error": f"search refused: {error}",
            "problem": json.dumps(exc.problem),
            "updated_ns": now_ns,
        }
        if now_ns - first >= review_after:
            values.update(state=State.NEEDS_REVIEW, final_ns=None)
            reviewed += 1
        else:
            values["next_try_ns"] = retry_ns
        updates.append(((row["terminal"], row["seq"]), values))
    return updates, reviewed


class CiaoSearch:
    """Searches CIaO, leaving out the parameters it refused before (kept for the process)."""

    def __init__(self, client: CiaoClient, counters: Counter[str]) -> None:
        self.client = client
        self.counters = counters
        self.omitted: frozenset[str] = frozenset()  # parameters CIaO refused

    def __call__(
        self, employer: dict[str, str], workplace: str, dates: list[str], ssin: str | None
    ) -> list[Registration]:
        """A 400 naming a query parameter we can do without drops it (we filter the answers
        ourselves) and asks again; a refusal of anything else is raised."""
        names = self.client.profile.search
        droppable = {getattr(names, n) for n in DROPPABLE_SEARCH}
        while True:
            try:
                return self.client.search(
                    employer=employer,
                    workplace=workplace,
                    date_from=dates[0],
                    date_to=dates[-1],
                    ssin=ssin,
                    omit=self.omitted,
                )
            except Permanent as exc:
                refused = parameters_to_drop(exc, droppable, self.omitted)
                if not refused:
                    raise
                self.omitted |= refused
                self.counters["search_parameter_dropped"] += len(refused)
                log.warning(
                    "CIaO refused search parameters: searching without them",
                    extra=fields(parameters=",".join(sorted(refused))),
                )


class Reconciler(DueRowsStage):
    """Searches for the ambiguous rows that are due and adopts or requeues them."""

    def due(self, now: int) -> Sequence[Any]:
        return due_ambiguous(self.relay.store, now)

    def handle(self, rows: Sequence[Any], now: int) -> int:
        relay = self.relay
        groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
        for row in rows:
            groups[(row["worker_ref"], row["employer"], row["workplace"])].append(row)
        found = 0
        for (worker_ref, employer, workplace), members in groups.items():
            worker = relay.registry.worker(worker_ref) if worker_ref else None
            keys = [(r["terminal"], r["seq"]) for r in members]
            if worker is None or not employer:
                # Nothing was recorded as submitted (or the worker is gone): cannot search.
                self._requeue(keys, "worker unknown at reconcile")
                continue
            dates = sorted(r["reg_date"] for r in members)
            ssin = worker.inss.reveal()
            try:
                hits = relay.search(json.loads(employer), workplace, dates, ssin)
            except ShuttingDown:
                raise
            except Permanent as exc:
                self._search_refused(members, exc, now)
                continue
            except CiaoError as exc:
                relay.counters[f"search_failed.{exc.reason}"] += 1
                relay.alerts.trouble(exc, now)
                retry = now + int(relay.backoff_s(2) * 1e9)
                with relay.tx() as db:
                    relay.store.update(db, keys, next_try_ns=retry, last_error=describe(exc))
                continue
            relay.alerts.answered(*NOT_ANSWERED)
            # Refused filters were dropped: keep only this worker's registrations.
            hits = [h for h in hits if not h.ssin or h.ssin == ssin]
            found += self._adopt(members, hits)
        if UNRECONCILED in relay.alerts and not anyone_awaits_review(relay.store):
            relay.alerts.answered(UNRECONCILED)  # searches work again, nobody waits for a person
        return len(rows) + found

    def _search_refused(self, members: list[Any], exc: Permanent, now: int) -> None:
        relay = self.relay
        relay.counters[f"search_refused.{exc.reason}"] += 1
        retry = now + int(relay.backoff_s(3) * 1e9)
        updates, reviewed = search_refused_updates(
            members, exc, now, review_after_s=relay.config.review_after_s, retry_ns=retry
        )
        if reviewed:
            relay.counters["needs_review"] += reviewed
        with relay.tx() as db:
            relay.store.update_each(db, updates)
        relay.alerts.raise_(UNRECONCILED, now, describe(exc))
        if reviewed:
            log.error(
                "events need a person: CIaO refuses the search that would reconcile them",
                extra=fields(events=reviewed, problem=describe_problem(exc.problem)),
            )

    def _adopt(self, members: list[Any], hits: list[Registration]) -> int:
        """Match ambiguous rows to registrations CIaO already has; requeue the rest."""
        relay = self.relay
        now = relay.clock_ns()
        taken = relay.store.claimed_ids(h.id for h in hits)
        matched, missing = match_registrations(members, hits, taken)
        adopted = [
            (
                (row["terminal"], row["seq"]),
                adopted_columns(hit, relay.state_for(hit.validity), now),
            )
            for row, hit in matched
        ]
        with relay.tx() as db:
            relay.store.update_each(db, adopted)
        relay.counters["reconciled_found"] += len(adopted)
        if missing:
            keys = [(r["terminal"], r["seq"]) for r in missing]
            self._requeue(keys, "not found after ambiguous submit")
        return len(adopted)

    def _requeue(self, keys: list[tuple[str, int]], why: str) -> None:
        relay = self.relay
        relay.counters["reconciled_missing"] += len(keys)
        now = relay.clock_ns()
        with relay.tx() as db:
            relay.store.update(
                db,
                keys,
                state=State.QUEUED,
                next_try_ns=now,
                updated_ns=now,
                last_error=why,
                search_refused_ns=None,
            )
