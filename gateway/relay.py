"""The relay: stored events -> CIaO registrations -> verdicts back to terminals.

One loop, one thread, one SQLite connection (see :mod:`gateway.relay_store` for the states).
Each turn of :meth:`Relay.run_once`:

1. takes new inbox rows in as ``queued``;
2. reconciles ``ambiguous`` rows: searches CIaO for each (worker, employer, workplace, date)
   and adopts a registration found there; only the ones not found go back to ``queued``. A
   search parameter the service refuses is dropped and filtered here instead; a row whose
   search stays refused for ``review_after_s`` goes to ``needs_review`` for a person;
3. submits one batch of ``queued`` rows in (terminal, seq) order, up to the profile's limit:
   badge -> worker and employer through the registry, kind -> CIaO type (a break starts with
   ``out`` and ends with ``in``), ``wall_ns`` -> ``registrationDate`` (RFC 3339, UTC, ``Z``);
   an event tapped before the terminal's clock was synced is dated from a later sync point of
   the same boot, or held up to ``unsynced_hold_s`` for one (DESIGN decision 4);
4. retries rows waiting for the registry (unknown or blocked badge, unknown workplace) when
   the registry changed;
5. polls ``pending`` registrations by search (employer, workplace, date range), at most
   ``poll_calls_per_turn`` calls a turn so polling never holds up submission;
6. hands each final verdict to ``on_verdict(terminal, Verdict)`` (the gateway publishes it to
   the terminal), and raises an alert for any event still without a verdict after
   ``verdict_timeout_s``.

A POST is never repeated blindly: anything that may have reached CIaO (timeout after sending,
dropped connection, a 5xx, a garbled 200, a relay killed mid-request) is searched for first.
Nothing that could still succeed is given up: outages, 429s and refused credentials keep rows
queued with a capped, jittered backoff and open an alert naming the cause (``relay_alerts``),
closed when CIaO answers again. Only a 400 naming an item ends it (``refused``, with the whole
problem details kept on the row). Every Retry-After is persisted, so a restart honours it.
Failures are counted in :attr:`Relay.counters`; no row is ever deleted.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from siteclock.gateway.ciao.client import (
    Ambiguous,
    AuthError,
    BadResponse,
    CiaoClient,
    CiaoError,
    ItemResult,
    Permanent,
    Registration,
    ShuttingDown,
    describe_problem,
)
from siteclock.gateway.ciao.policy import PolicyConfig, delay_for_attempt, requeue_wait
from siteclock.gateway.registry import EmployerKind, Registry, Resolved, Workplace
from siteclock.gateway.relay_store import FINAL, RelayStore, State
from siteclock.gateway.sequence import SequenceCheck
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.log import fields, redact
from siteclock.protocol import Event, Outcome, ProtocolError, Verdict
from siteclock.shift import ShiftRule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayConfig:
    """Timing of the relay loop (seconds). Defaults suit production; tests shrink them."""

    idle_s: float = 1.0  # pause when a turn found nothing to do
    poll_interval_s: float = 10.0  # between two lookups of a pending registration
    poll_batch: int = 500  # pending rows looked at per turn
    poll_calls_per_turn: int = 4  # searches (or lookups) per turn: submission goes first
    ambiguous_settle_s: float = 30.0  # wait before searching: let a slow commit land first
    # An ambiguous row whose search CIaO keeps refusing goes to a person after this long.
    review_after_s: float = 3600.0
    verdict_timeout_s: float = 4 * 3600.0  # alert when an event has no final verdict by then
    rescan_s: float = 60.0  # full inbox rescan period
    batch_limit: int | None = None  # default: the profile's
    batches_per_turn: int = 10  # then polls, verdicts and alerts get their turn
    # Requeue backoff: full-jitter exponential from initial_wait_s, capped at max_wait_s. Also
    # the client's retry policy (gateway.service). There is no attempt limit on purpose.
    backoff: PolicyConfig = field(default_factory=lambda: PolicyConfig(max_wait_s=300.0))
    # A clock_unsynced event waits this long (from its arrival) for a sync point of its boot,
    # then goes with the terminal's own time and a note for the employer to review.
    unsynced_hold_s: float = 600.0
    unsynced_recheck_s: float = 10.0  # how often a held event looks for a sync point again


WAITING_FOR_SYNC = "waiting for a clock sync"
NEVER_SYNCED = "clock never synced in this boot: terminal time used"
BADGE_UNKNOWN = "badge unknown: no worker is linked to it"
BADGE_BLOCKED = "badge blocked by the employer"
WORKPLACE_UNKNOWN = "workplace unknown: the Declaration of Works is not in the registry"

# Alert causes (relay_alerts.cause) and how each one reads.
UNREACHABLE = "unreachable"
CREDENTIALS = "credentials"
THROTTLED = "throttled"
REFUSING = "refusing"
UNRECONCILED = "unreconciled"
ALERT_TEXT = {
    UNREACHABLE: "CIaO unreachable since {since}",
    CREDENTIALS: "credentials refused by {where} since {since}",
    THROTTLED: "CIaO rate-limiting us (429) since {since}",
    REFUSING: "CIaO refuses our requests since {since}",
    UNRECONCILED: "search refused by CIaO since {since}: events wait for a person",
}
# Query parameters the relay can do without, by filtering the answers itself.
DROPPABLE_SEARCH = ("ssin", "date_from", "date_to", "page", "page_size")


@dataclass
class _Batch:
    """One registerInBulk call: its rows, their items and their attempt counts."""

    keys: list[tuple[str, int]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[tuple[str, int], int] = field(default_factory=dict)
    unresolved: int = 0


def corrected_wall_ns(event_boot_ns: int, sync_wall_ns: int, sync_boot_ns: int) -> int:
    """The true time of a tap from a synced reading of the same boot (docs/protocol.md).

    The boot-time clock runs steadily through an NTP step, so the distance between the tap and
    the sync point on it is the distance in real time.
    """
    return sync_wall_ns - (sync_boot_ns - event_boot_ns)


def registration_date(wall_ns: int, precision: str = "seconds") -> str:
    """Nanoseconds since the epoch -> RFC 3339 UTC with ``Z`` (the tap's moment)."""
    seconds, rest = divmod(wall_ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if precision == "milliseconds":
        text += f".{rest // 1_000_000:03d}"
    return text + "Z"


def _instant(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


def _since(now_ns: int) -> str:
    return datetime.fromtimestamp(now_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ciao_item(
    worker: Resolved, place: Workplace, employer: dict[str, str], date: str, ciao_type: str
) -> dict[str, Any]:
    """One stored event as a CIaO registerInBulk item (the only place an item is built)."""
    return {
        "registrationDate": date,
        "ssin": worker.inss.reveal(),
        "type": ciao_type,
        "employer": employer,
        "placeOfWork": _place(place),
        "contractualRelationshipReference": place.ref,
    }


def item_problem(problem: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The problem details as they concern item ``index`` of a batch: the issues naming it
    (renamed ``items[0]...`` -> the item's own fields) and the ones naming no item."""
    prefix = f"items[{index}]"
    issues = []
    for issue in problem.get("issues") or ():
        name = str(issue.get("name", ""))
        if name.startswith(prefix):
            issues.append({**issue, "name": "item" + name[len(prefix) :]})
        elif not name.startswith("items["):
            issues.append(dict(issue))
    return {**problem, "issues": issues}


def _employer_json(resolved: Resolved) -> dict[str, str]:
    if resolved.employer.kind is EmployerKind.ENTERPRISE:
        return {"enterpriseNumber": resolved.employer.id}
    return {"foreignVatNumber": resolved.employer.id}


def _place(workplace: Workplace) -> dict[str, Any]:
    if workplace.latitude is not None and workplace.longitude is not None:
        return {"coordinates": {"latitude": workplace.latitude, "longitude": workplace.longitude}}
    return {"address": dict(workplace.address or {})}


class Relay:
    """Relays a gateway's stored events to CIaO. ``start()``/``stop()`` or ``run_once()``."""

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
        self.on_verdict = on_verdict
        self.config = config or RelayConfig()
        self.profile = client.profile
        self.batch_limit = self.config.batch_limit or self.profile.contract.batch_limit
        self.clock_ns = clock_ns
        self.store = RelayStore(db_path)
        # Sync points live with the terminals (written from heartbeats); read them there.
        self.terminals = TerminalRegistry(db_path)
        self.counters: Counter[str] = Counter()
        # docs/direction.md; ``shift`` is the gateway config's [sequence] rule
        self.sequence = SequenceCheck(
            self.store.db, counters=self.counters, rule=shift or ShiftRule()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_scan_ns = 0
        self._last_alert_ns = 0
        self._carry: list[tuple[tuple[str, int], dict[str, Any]]] = []
        self._employers: dict[Any, tuple[dict[str, str], str]] = {}
        # One thread for the POST in flight, so the next batch is prepared meanwhile.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ciao-post")
        self._registry_version = -1
        self._cache: dict[str, Resolved | None] = {}
        self._places: dict[str, Workplace | None] = {}
        self._wait = requeue_wait(self.config.backoff)
        self._search_omit: frozenset[str] = frozenset()  # parameters CIaO refused
        self._alerts = self.store.open_alerts()
        # A Retry-After outlives the process: honour the one a previous run was given, and
        # persist each new one the moment the client learns it.
        saved = self.store.not_before_ns()
        if saved:
            client.honour_not_before(saved / 1e9)
        client.on_not_before = lambda instant: self.store.save_not_before(int(instant * 1e9))
        recovered = self.store.recover_submitted(self.clock_ns())
        if recovered:
            self.counters["recovered_submitted"] += recovered
            log.warning("relay recovered in-flight events", extra=fields(count=recovered))

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
        self._executor.shutdown(wait=True)
        if self._carry:
            self.store.flush(self._carry)
            self._carry = []
        self.store.close()
        self.terminals.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
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

    # ------------------------------------------------------------------ one turn

    def run_once(self) -> int:
        """One turn of the loop; returns how much work it did (0 = idle)."""
        now = self.clock_ns()
        full = now - self._last_scan_ns >= self.config.rescan_s * 1e9
        if full:
            self._last_scan_ns = now
        work = self.store.take_new(now, full=full)
        work += self._reconcile()
        work += self._submit()
        work += self._retry_unresolved()
        work += self._poll()
        work += self._notify()
        self._alert()
        return work

    # ------------------------------------------------------------------ submit

    def _refresh_cache(self) -> None:
        """Forget cached lookups when the registry changed (one query per batch, not per row)."""
        version = self.registry.version
        if version != self._registry_version:
            self._cache.clear()
            self._places.clear()
            self._registry_version = version

    def _employer(self, worker: Resolved) -> tuple[dict[str, str], str]:
        """The employer object of an item and its JSON text, computed once per employer."""
        found = self._employers.get(worker.employer)
        if found is None:
            obj = _employer_json(worker)
            found = self._employers[worker.employer] = (obj, json.dumps(obj))
        return found

    def _lookup(self, badge: str, workplace: str) -> tuple[Resolved | None, Workplace | None]:
        if badge not in self._cache:
            self._cache[badge] = self.registry.resolve(badge)
        if workplace not in self._places:
            self._places[workplace] = self.registry.workplace(workplace)
        return self._cache[badge], self._places[workplace]

    def _submit(self) -> int:
        """Submit queued batches, preparing the next one while the current POST is in flight.

        The POST runs on a one-thread executor; meanwhile this thread reads, resolves, maps and
        commits the next batch as "submitted" (with the previous results, in one transaction).
        Both batches are "submitted" in the database before their POST leaves, so a crash at
        any point leaves nothing that a restart would not search for first.
        """
        if self._told_to_wait():
            return 0
        work = 0
        in_flight: tuple[_Batch, Future[list[ItemResult]]] | None = None
        for _ in range(self.config.batches_per_turn):
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
            in_flight = (prepared, self._executor.submit(self.client.register, prepared.items))
        if in_flight is not None:
            work += self._finish(*in_flight)
        if not work and self._carry:  # nothing to pair the last results with: commit them
            self.store.flush(self._carry)
            self._carry = []
            work = 1
        return work

    def _prepare(self) -> _Batch | None:
        """Read the next queued rows, map them to CIaO items, commit them as submitted."""
        now = self.clock_ns()
        rows = self.store.queued(now, self.batch_limit)
        if not rows:
            return None
        # A row marked solo failed inside a batch without a named culprit: it goes alone.
        rows = rows[:1] if rows[0]["solo"] else [r for r in rows if not r["solo"]]
        rows = self.sequence.start_batch(rows)  # each worker's taps in time order
        self._refresh_cache()
        batch = _Batch()
        unresolved: list[tuple[tuple[str, int], dict[str, Any]]] = []
        held: list[tuple[tuple[str, int], dict[str, Any]]] = []
        columns_of: list[tuple[tuple[str, int], dict[str, Any]]] = []
        precision = self.profile.contract.timestamp_precision
        for row in rows:
            key = (row["terminal"], row["seq"])
            worker, place = self._lookup(row["badge"], row["workplace"])
            if worker is None or place is None:
                state, reason = self._why_unresolved(row["badge"], worker)
                unresolved.append(
                    (
                        key,
                        {
                            "state": state,
                            "last_error": reason,
                            "registry_version": self._registry_version,
                            "updated_ns": now,
                        },
                    )
                )
                continue
            wall_ns, clock_columns = self._clock_of(row, now)
            if wall_ns is None:  # clock_unsynced, no sync point yet: held for now
                held.append((key, clock_columns))
                continue
            employer, employer_text = self._employer(worker)
            date = registration_date(wall_ns, precision)
            kind = self.sequence.decide(row, worker_ref=worker.worker_ref, wall_ns=wall_ns)
            ciao_type = self.profile.ciao_type(kind)
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
                        "updated_ns": now,
                        **clock_columns,
                    },
                )
            )
        # Commit "submitted" before the POST leaves: a crash now is seen as ambiguous later.
        # Rows read as queued may have been claimed since (a badge-enrolment tap): re-check in
        # this transaction and leave those alone, so a claim always wins over the relay.
        with self._tx() as db:
            queued = self.store.still_queued(
                db, [*batch.keys, *(k for k, _ in unresolved), *(k for k, _ in held)]
            )
            if len(queued) < len(batch.keys) + len(unresolved) + len(held):
                kept = [i for i, key in enumerate(batch.keys) if key in queued]
                batch.items = [batch.items[i] for i in kept]
                batch.keys = [batch.keys[i] for i in kept]
                columns_of = [columns_of[i] for i in kept]
                unresolved = [(key, values) for key, values in unresolved if key in queued]
                held = [(key, values) for key, values in held if key in queued]
                self.counters["claimed_before_submit"] += 1
            self.store.update_each(db, unresolved)
            self.store.update_each(db, held)
            self.store.update_each(db, columns_of)
            self.sequence.commit(db, batch.keys, now)
        self.counters["unresolved"] += len(unresolved)
        self.counters["clock_held"] += len(held)
        batch.unresolved = len(unresolved)
        return batch

    def _why_unresolved(self, badge: str, worker: Resolved | None) -> tuple[State, str]:
        """Which registry gap holds a row: each has its own state and reason."""
        if worker is not None:
            return State.UNKNOWN_WORKPLACE, WORKPLACE_UNKNOWN
        if self.registry.badge_blocked(badge):
            return State.BLOCKED_BADGE, BADGE_BLOCKED
        return State.UNKNOWN_BADGE, BADGE_UNKNOWN

    def _clock_of(self, row: Any, now: int) -> tuple[int | None, dict[str, Any]]:
        """The time to submit for a queued row and the clock columns to record with it.

        Only ``clock_unsynced`` events carry a body in the row (see ``RelayStore.queued``);
        every other event is its terminal's own time, at the cost of one ``None`` check.
        ``(None, columns)`` means "hold it": the columns keep the row queued a little longer.
        """
        body = row["unsynced_body"]
        terminal_ns = row["wall_ns"]
        if body is None:
            return terminal_ns, {}
        try:
            event = Event.from_bytes(body)
        except ProtocolError:
            # The intake verified this body, so this is a bug or a damaged file; holding it
            # would not help, and the employer should still see the tap.
            self.counters["clock_body_unreadable"] += 1
            note = "event body unreadable: terminal time used"
            return terminal_ns, {"terminal_wall_ns": terminal_ns, "clock_note": note}
        sync = self.terminals.sync_point(row["terminal"], event.boot_id)
        if sync is not None:
            corrected = corrected_wall_ns(event.boot_ns, sync.wall_ns, sync.boot_ns)
            if corrected > 0:  # a nonsense point (e.g. a bad boot_ns) is no sync point
                self.counters["clock_corrected"] += 1
                shift = (corrected - terminal_ns) / 1e9
                return corrected, {
                    "terminal_wall_ns": terminal_ns,
                    "corrected_wall_ns": corrected,
                    "clock_note": f"corrected by {shift:+.3f} s from a clock sync in the same boot",
                }
        hold_until = row["created_ns"] + int(self.config.unsynced_hold_s * 1e9)
        if now < hold_until:
            recheck = now + int(self.config.unsynced_recheck_s * 1e9)
            return None, {
                "state": State.AWAITING_CLOCK_SYNC,
                "next_try_ns": min(recheck, hold_until),
                "last_error": WAITING_FOR_SYNC,
                "updated_ns": now,
            }
        self.counters["clock_never_synced"] += 1
        return terminal_ns, {
            "terminal_wall_ns": terminal_ns,
            "corrected_wall_ns": None,
            "clock_note": NEVER_SYNCED,
        }

    def _finish(self, batch: _Batch, call: Future[list[ItemResult]]) -> int:
        """Wait for one POST and record what it means for each of its items."""
        keys, attempts = batch.keys, batch.attempts
        try:
            results = call.result()
        except AuthError as exc:
            self._requeue(keys, attempts, exc, f"auth.{exc.reason}")
        except (Ambiguous, BadResponse) as exc:
            if isinstance(exc, BadResponse) and not exc.after_send:
                self._requeue(keys, attempts, exc, f"bad_response.{exc.kind}")
            else:
                self._mark_ambiguous(keys, exc)
        except Permanent as exc:
            self._refused(keys, attempts, exc)
        except ShuttingDown:
            self._requeue(keys, attempts, None, "shutdown", count_attempt=False)
            raise
        except CiaoError as exc:  # Transient (after the client's own retries)
            self._requeue(keys, attempts, exc, f"transient.{exc.reason}")
        except Exception as exc:
            # A bug on our side after the request may have left: treat it as ambiguous.
            self._mark_ambiguous(keys, exc)
            raise
        else:
            self._answered()
            self._store_results(keys, results)
        return len(keys)

    def _store_results(self, keys: list[tuple[str, int]], results: list[ItemResult]) -> None:
        now = self.clock_ns()
        first_poll = now + int(self.config.poll_interval_s * 1e9)
        updates = []
        for key, result in zip(keys, results, strict=True):
            if result.created:
                state = self._state_for(result.validity or "")
                self.counters["created"] += 1
                updates.append(
                    (
                        key,
                        {
                            "state": state,
                            "ciao_id": result.id,
                            "validity": result.validity,
                            "remarks": result.remarks,
                            "last_error": "",
                            "next_try_ns": first_poll,
                            "updated_ns": now,
                            "final_ns": now if state in FINAL else None,
                        },
                    )
                )
            else:
                self.counters["not_created"] += 1
                updates.append(
                    (
                        key,
                        {
                            "state": State.REJECTED,
                            "remarks": result.reasons,
                            "final_ns": now,
                            "last_error": "not created",
                            "updated_ns": now,
                        },
                    )
                )
        self._carry.extend(updates)

    def _state_for(self, validity: str) -> State:
        if validity == self.profile.validity.valid:
            return State.REGISTERED
        if validity == self.profile.validity.invalid:
            return State.REJECTED
        return State.PENDING

    def _requeue(
        self,
        keys: list[tuple[str, int]],
        attempts: Mapping[tuple[str, int], int],
        exc: BaseException | None,
        counter: str,
        *,
        count_attempt: bool = True,
    ) -> None:
        """Back to ``queued`` with a jittered backoff (or the Retry-After), however many
        attempts it took: a failure that is not an answer about the item never ends it."""
        now = self.clock_ns()
        self.counters[counter] += 1
        error = _describe(exc) if exc else counter
        if exc is not None:
            self._trouble(exc, now)
        retry_after = getattr(exc, "retry_after", None)
        updates = []
        for key in keys:
            tries = attempts[key]
            delay = self._backoff_s(tries)
            if retry_after is not None:
                delay = max(delay, float(retry_after))
            updates.append(
                (
                    key,
                    {
                        "state": State.QUEUED,
                        "last_error": error,
                        "updated_ns": now,
                        "next_try_ns": now + int(delay * 1e9),
                        **({} if count_attempt else {"attempts": max(0, tries - 1)}),
                    },
                )
            )
        with self._tx() as db:
            self.store.update_each(db, updates)
        log.warning("relay batch requeued", extra=fields(reason=counter, items=len(keys)))

    def _backoff_s(self, attempts: int) -> float:
        return delay_for_attempt(self._wait, attempts)

    # ------------------------------------------------------------------ alerts by cause

    def _trouble(self, exc: BaseException, now: int) -> None:
        """Open the alert that names why CIaO did not answer (once, until it recovers)."""
        if isinstance(exc, ShuttingDown):
            return
        reason = str(getattr(exc, "reason", ""))
        where = "the token endpoint" if reason.startswith("auth_") else "the API"
        if isinstance(exc, AuthError) or reason == "token_rejected":
            cause = CREDENTIALS
        elif reason == "rate_limited":
            cause = THROTTLED
        elif isinstance(exc, Permanent):
            cause = REFUSING
        else:
            cause = UNREACHABLE
        self._raise(cause, now, _describe(exc), where=where)

    def _raise(self, cause: str, now: int, error: str, **words: str) -> None:
        if cause in self._alerts:
            return
        message = ALERT_TEXT[cause].format(since=_since(now), **words) + f" ({error})"
        if self.store.raise_alert(cause, message, now):
            self.counters[f"alert.{cause}"] += 1
            log.error("relay alert", extra=fields(cause=cause, alert=message))
        self._alerts[cause] = message

    def _answered(self, *causes: str) -> None:
        """CIaO answered: close the alerts about not being answered."""
        for cause in causes or (UNREACHABLE, CREDENTIALS, THROTTLED, REFUSING):
            if cause not in self._alerts:
                continue
            message = self._alerts.pop(cause)
            self.store.clear_alert(cause, self.clock_ns())
            log.warning("relay alert cleared", extra=fields(cause=cause, was=message))

    def _mark_ambiguous(self, keys: list[tuple[str, int]], exc: BaseException) -> None:
        now = self.clock_ns()
        self.counters["ambiguous"] += 1
        if isinstance(exc, BadResponse):
            self.counters[f"bad_response.{exc.kind}"] += 1
        self._trouble(exc, now)
        settle = now + int(self.config.ambiguous_settle_s * 1e9)
        with self._tx() as db:
            self.store.update(
                db,
                keys,
                state=State.AMBIGUOUS,
                last_error=_describe(exc),
                next_try_ns=settle,
                ambiguous_ns=now,
                updated_ns=now,
            )
        log.warning(
            "relay batch ambiguous",
            extra=fields(reason=getattr(exc, "reason", "bug"), items=len(keys)),
        )

    def _refused(
        self, keys: list[tuple[str, int]], attempts: Mapping[tuple[str, int], int], exc: Permanent
    ) -> None:
        """A 400 ends the items it names (``refused``, with their part of the problem); the
        others go again (one by one when it names none, so one bad item cannot sink its
        neighbours). Any other refusal (404, 413...) is about the request, not the items:
        they stay queued and an alert says CIaO refuses us."""
        if exc.status != 400:
            self._requeue(keys, attempts, exc, f"refused.{exc.reason}")
            return
        now = self.clock_ns()
        self._answered()
        self.counters[f"permanent.{exc.reason}"] += 1
        named = {keys[i]: i for i in exc.item_indexes if i < len(keys)}
        if not named and len(keys) == 1:
            named = {keys[0]: 0}
        updates = []
        for key in keys:
            if key in named:
                problem = item_problem(exc.problem, named[key])
                self.counters["refused"] += 1
                updates.append(
                    (
                        key,
                        {
                            "state": State.REFUSED,
                            "last_error": redact(describe_problem(problem))[:500],
                            "problem": json.dumps(problem),
                            "final_ns": now,
                            "updated_ns": now,
                        },
                    )
                )
            elif named:
                updates.append(
                    (
                        key,
                        {
                            "state": State.QUEUED,
                            "updated_ns": now,
                            "attempts": max(0, attempts[key] - 1),
                        },
                    )
                )
            else:
                updates.append(
                    (
                        key,
                        {
                            "state": State.QUEUED,
                            "solo": 1,
                            "updated_ns": now,
                            "last_error": _describe(exc),
                        },
                    )
                )
        with self._tx() as db:
            self.store.update_each(db, updates)
        log.warning(
            "relay batch refused",
            extra=fields(
                reason=exc.reason, refused=len(named), problem=describe_problem(exc.problem)
            ),
        )

    # ------------------------------------------------------------------ reconcile

    def _told_to_wait(self) -> bool:
        """CIaO's last Retry-After has not passed: no call would leave, so prepare none (the
        turn stays free for verdicts and alerts, and no batch is marked submitted in vain)."""
        return self.client.not_before > self.client.clock()

    def _reconcile(self) -> int:
        if self._told_to_wait():
            return 0
        now = self.clock_ns()
        rows = self.store.rows("state='ambiguous' AND next_try_ns<=?", (now,), 500)
        if not rows:
            return 0
        groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
        for row in rows:
            groups[(row["worker_ref"], row["employer"], row["workplace"])].append(row)
        found = 0
        for (worker_ref, employer, workplace), members in groups.items():
            worker = self.registry.worker(worker_ref) if worker_ref else None
            keys = [(r["terminal"], r["seq"]) for r in members]
            if worker is None or not employer:
                # Nothing was recorded as submitted (or the worker is gone): cannot search.
                self._requeue_after_search(keys, "worker unknown at reconcile")
                continue
            dates = sorted(r["reg_date"] for r in members)
            try:
                hits = self._search(json.loads(employer), workplace, dates, worker.inss.reveal())
            except ShuttingDown:
                raise
            except Permanent as exc:
                self._search_refused(members, exc, now)
                continue
            except CiaoError as exc:
                self.counters[f"search_failed.{exc.reason}"] += 1
                self._trouble(exc, now)
                retry = now + int(self._backoff_s(2) * 1e9)
                with self._tx() as db:
                    self.store.update(db, keys, next_try_ns=retry, last_error=_describe(exc))
                continue
            self._answered(UNREACHABLE, CREDENTIALS, THROTTLED)
            # Refused filters were dropped: keep only this worker's registrations.
            ssin = worker.inss.reveal()
            hits = [h for h in hits if not h.ssin or h.ssin == ssin]
            found += self._adopt(members, hits)
        if UNRECONCILED in self._alerts and not self.store.rows(
            "state='needs_review' OR search_refused_ns IS NOT NULL", (), 1
        ):
            self._answered(UNRECONCILED)  # searches work again and nobody waits for a person
        return len(rows) + found

    def _search(
        self, employer: dict[str, str], workplace: str, dates: list[str], ssin: str | None
    ) -> list[Registration]:
        """Search CIaO, leaving out parameters it refused before. A 400 naming a query
        parameter we can do without drops it (we filter the answers ourselves) and asks
        again; a refusal of anything else is raised."""
        names = self.profile.search
        droppable = {getattr(names, n) for n in DROPPABLE_SEARCH}
        while True:
            try:
                return self.client.search(
                    employer=employer,
                    workplace=workplace,
                    date_from=dates[0],
                    date_to=dates[-1],
                    ssin=ssin,
                    omit=self._search_omit,
                )
            except Permanent as exc:
                refused = {
                    str(i.get("name"))
                    for i in exc.issues
                    if i.get("in") == "query" and str(i.get("name")) in droppable
                }
                if exc.status != 400 or not refused or refused <= self._search_omit:
                    raise
                self._search_omit |= refused
                self.counters["search_parameter_dropped"] += len(refused)
                log.warning(
                    "CIaO refused search parameters: searching without them",
                    extra=fields(parameters=",".join(sorted(refused))),
                )

    def _search_refused(self, members: list[Any], exc: Permanent, now: int) -> None:
        """The search itself is refused and no fallback is left: the rows wait (never
        resubmitted blind) and, after ``review_after_s``, go to a person."""
        self.counters[f"search_refused.{exc.reason}"] += 1
        error = _describe(exc)
        review_after = int(self.config.review_after_s * 1e9)
        retry = now + int(self._backoff_s(3) * 1e9)
        updates = []
        for row in members:
            since = row["search_refused_ns"] or now
            values: dict[str, Any] = {
                "search_refused_ns": since,
                "last_error": f"search refused: {error}",
                "problem": json.dumps(exc.problem),
                "updated_ns": now,
            }
            if now - since >= review_after:
                values.update(state=State.NEEDS_REVIEW, final_ns=None)
                self.counters["needs_review"] += 1
            else:
                values["next_try_ns"] = retry
            updates.append(((row["terminal"], row["seq"]), values))
        with self._tx() as db:
            self.store.update_each(db, updates)
        self._raise(UNRECONCILED, now, error)
        reviewed = sum(1 for _, v in updates if v.get("state") == State.NEEDS_REVIEW)
        if reviewed:
            log.error(
                "events need a person: CIaO refuses the search that would reconcile them",
                extra=fields(events=reviewed, problem=describe_problem(exc.problem)),
            )

    def _adopt(self, members: list[Any], hits: list[Any]) -> int:
        """Match ambiguous rows to registrations CIaO already has; requeue the rest."""
        now = self.clock_ns()
        taken = self.store.claimed_ids(h.id for h in hits)
        adopted, missing = [], []
        for row in members:
            key = (row["terminal"], row["seq"])
            want = _instant(row["reg_date"])
            match = next(
                (
                    h
                    for h in hits
                    if h.id not in taken
                    and h.type.lower() == row["ciao_type"].lower()
                    and _instant(h.registration_date) == want
                ),
                None,
            )
            if match is None:
                missing.append(row)
                continue
            taken.add(match.id)
            state = self._state_for(match.validity)
            adopted.append(
                (
                    key,
                    {
                        "state": state,
                        "ciao_id": match.id,
                        "validity": match.validity,
                        "remarks": match.remarks,
                        "last_error": "",
                        "updated_ns": now,
                        "next_try_ns": now,
                        "final_ns": now if state in FINAL else None,
                        "search_refused_ns": None,
                    },
                )
            )
        with self._tx() as db:
            self.store.update_each(db, adopted)
        self.counters["reconciled_found"] += len(adopted)
        if missing:
            keys = [(r["terminal"], r["seq"]) for r in missing]
            self._requeue_after_search(keys, "not found after ambiguous submit")
        return len(adopted)

    def _requeue_after_search(self, keys: list[tuple[str, int]], why: str) -> None:
        self.counters["reconciled_missing"] += len(keys)
        now = self.clock_ns()
        with self._tx() as db:
            self.store.update(
                db,
                keys,
                state=State.QUEUED,
                next_try_ns=now,
                updated_ns=now,
                last_error=why,
                search_refused_ns=None,
            )

    # ------------------------------------------------------------------ unresolved

    def _retry_unresolved(self) -> int:
        return self.store.retry_waiting_for_registry(self.registry.version)

    # ------------------------------------------------------------------ poll

    def _poll(self) -> int:
        """Look up due pending registrations: one search per (employer, workplace) and date
        range, at most ``poll_calls_per_turn`` calls; by id when the search is refused."""
        if self._told_to_wait():
            return 0
        now = self.clock_ns()
        rows = self.store.rows(
            "state='pending' AND next_try_ns<=? ORDER BY next_try_ns",
            (now,),
            self.config.poll_batch,
        )
        if not rows:
            return 0
        groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for row in rows:
            groups[(row["employer"] or "", row["workplace"] or "")].append(row)
        updates: list[tuple[tuple[str, int], dict[str, Any]]] = []
        later = now + int(self.config.poll_interval_s * 1e9)
        calls = self.config.poll_calls_per_turn
        looked = 0
        try:
            for (employer, workplace), members in groups.items():
                if calls <= 0:
                    break
                members.sort(key=lambda r: r["reg_date"] or "")
                found, used = self._poll_group(employer, workplace, members, calls)
                calls -= used
                for row in members:
                    key = (row["terminal"], row["seq"])
                    reg = found.get(row["ciao_id"])
                    if reg is None:
                        if row["ciao_id"] in found:  # asked, but no answer: next time
                            updates.append((key, {"next_try_ns": later, "updated_ns": now}))
                            looked += 1
                        continue
                    looked += 1
                    updates.append((key, self._polled(reg, later, now)))
        finally:
            if updates:
                with self._tx() as db:
                    self.store.update_each(db, updates)
        return looked

    def _poll_group(
        self, employer: str, workplace: str, members: list[Any], calls: int
    ) -> tuple[dict[str, Registration | None], int]:
        """Registrations of ``members`` by id (None: asked and failed) and calls used."""
        ids = {row["ciao_id"] for row in members}
        names = self.profile.search
        by_search = (
            employer and workplace and not ({names.date_from, names.date_to} & self._search_omit)
        )
        if by_search:
            try:
                dates = [members[0]["reg_date"], members[-1]["reg_date"]]
                hits = self._search(json.loads(employer), workplace, dates, None)
            except ShuttingDown:
                raise
            except CiaoError as exc:
                self.counters[f"poll_failed.{exc.reason}"] += 1
                if not isinstance(exc, Permanent):
                    self._trouble(exc, self.clock_ns())
                    return dict.fromkeys(ids), 1
            else:
                self._answered(UNREACHABLE, CREDENTIALS, THROTTLED)
                self.counters["poll_search"] += 1
                return {h.id: h for h in hits if h.id in ids} | {
                    i: None for i in ids if i not in {h.id for h in hits}
                }, 1
        # No usable search: one lookup per id, within the turn's budget.
        found: dict[str, Registration | None] = {}
        for row in members[:calls]:
            try:
                found[row["ciao_id"]] = self.client.get(row["ciao_id"])
            except ShuttingDown:
                raise
            except CiaoError as exc:
                self.counters[f"poll_failed.{exc.reason}"] += 1
                found[row["ciao_id"]] = None
        self.counters["poll_lookup"] += len(found)
        return found, max(1, len(found))

    def _polled(self, reg: Registration, later: int, now: int) -> dict[str, Any]:
        state = self._state_for(reg.validity)
        values: dict[str, Any] = {
            "validity": reg.validity,
            "remarks": reg.remarks,
            "next_try_ns": later,
            "updated_ns": now,
        }
        if state in FINAL:
            values.update(state=state, final_ns=self.clock_ns())
        return values

    # ------------------------------------------------------------------ verdicts and alerts

    def _notify(self) -> int:
        rows = self.store.rows(
            "notified=0 AND state IN ('registered','rejected','refused')", (), 500
        )
        done = []
        for row in rows:
            verdict = self._verdict(row)
            try:
                self.on_verdict(row["terminal"], verdict)
            except Exception:  # e.g. MQTT down: keep it, send it next turn
                self.counters["verdict_send_failed"] += 1
                log.exception("verdict not delivered", extra=fields(terminal=row["terminal"]))
                break
            done.append((row["terminal"], row["seq"]))
            self.counters[f"verdict.{verdict.outcome}"] += 1
        if done:
            with self._tx() as db:
                self.store.update(db, done, notified=1)
        return len(done)

    @staticmethod
    def _verdict(row: Any) -> Verdict:
        if row["state"] == State.REGISTERED:
            return Verdict(row["seq"], Outcome.REGISTERED, "")
        remarks = json.loads(row["remarks"] or "[]")
        if row["state"] == State.REFUSED:
            reason = f"refused by CIaO: {row['last_error']}"
        else:
            reason = "; ".join(remarks) or row["last_error"] or "rejected"
        return Verdict(row["seq"], Outcome.REJECTED, redact(reason)[:200])

    def _alert(self) -> None:
        now = self.clock_ns()
        if now - self._last_alert_ns < 1e9:  # a full scan: once a second is plenty
            return
        self._last_alert_ns = now
        cutoff = now - int(self.config.verdict_timeout_s * 1e9)
        rows = self.store.rows(
            "state IN ('queued','unknown_badge','blocked_badge','unknown_workplace',"
            "'awaiting_clock_sync','submitted','ambiguous','pending') "
            "AND created_ns<? AND alerted=0",
            (cutoff,),
            1000,
        )
        if not rows:
            return
        self.counters["alert.no_verdict"] += len(rows)
        for row in rows[:20]:  # a storm of alerts is one problem; log a sample
            log.warning(
                "no CIaO verdict in time",
                extra=fields(
                    terminal=row["terminal"],
                    seq=row["seq"],
                    state=row["state"],
                    error=row["last_error"],
                ),
            )
        with self._tx() as db:
            self.store.update(db, [(r["terminal"], r["seq"]) for r in rows], alerted=1)


def _describe(exc: BaseException) -> str:
    """A short, INSS-free description of a failure for the employer's view."""
    reason = getattr(exc, "reason", type(exc).__name__)
    status = getattr(exc, "status", None)
    text = f"{reason}" + (f" (HTTP {status})" if status else "") + f": {exc}"
    return redact(text)[:300]
