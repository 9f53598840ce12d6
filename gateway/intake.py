"""Gateway intake: verify, store, then acknowledge every event a terminal sends.

For each MQTT message on ``siteclock/v1/<terminal>/events`` (optionally through a shared
subscription, so several gateway processes can share the load):

1. the terminal named by the topic must be registered and active (the broker ACL already
   guarantees only that terminal could publish there);
2. each event's signature is checked with that terminal's registered, unrevoked key, the
   event must name that terminal, and its workplace must be the terminal's binding;
3. valid events are committed to the inbox (unique on terminal+seq);
4. only then: the MQTT PUBACK (paho ``manual_ack``) and an application ``Ack(stored=...)`` on
   the terminal's own ack topic. A resent event already held is acknowledged again.

Every refusal is counted by reason in :attr:`Intake.counters` and logged with the terminal id,
sequence number and reason only (no badge, no payload: no personal data). Nothing a terminal
sends can stop the intake: every message is judged alone, a bad one is counted and PUBACKed (so
the broker does not redeliver garbage forever), whatever it raises, and a message whose events
cannot be stored is found by storing the group message by message; only a failure of the
*storage itself* (disk, lock) withholds the PUBACK and the ack, and the terminal resends.

Limits (figures in docs/limits.md): sizes per message kind are checked before anything is
parsed; each terminal has a budget (:class:`gateway.ratelimit.TerminalBudget`) of refused or
repeated events per second and of heartbeats, so one stolen terminal cannot saturate the intake
with junk signatures; a terminal over budget has its messages dropped unread (counted,
``rate_limited``, a security alert at most once a minute) and its honest events simply come
again, since a refused event is never acked. The hash chain is checked as events are stored
(:mod:`gateway.store`); a gap that lasts :data:`GAP_GRACE_S` becomes a security alert
(:mod:`gateway.intake_gaps`).

The intake listens on the gateway's one MQTT connection (:class:`gateway.link.MqttLink`); the
verdicts and rosters it does not publish itself (:mod:`gateway.verdicts`, :mod:`gateway.roster`)
go out on the same link. The pieces: limits in :mod:`gateway.intake_limits`, the hand-over
from paho's thread in :mod:`gateway.intake_handoff`, signature checks in
:mod:`gateway.intake_checks`, gap alerts in :mod:`gateway.intake_gaps`.

Example::

    link = MqttLink(cfg.mqtt)
    intake = Intake(cfg.mqtt, inbox=Inbox(db), registry=TerminalRegistry(db), link=link)
    intake.start()
    intake.counters          # Counter({'bad_signature': 3, 'duplicate': 12})
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from siteclock.gateway.config import MqttConfig
from siteclock.gateway.db import OperationalError
from siteclock.gateway.intake_checks import SignatureChecker, Verifier, VerifierCache
from siteclock.gateway.intake_gaps import GapWatch
from siteclock.gateway.intake_handoff import Handoff
from siteclock.gateway.intake_limits import (
    ADMIT_PER_GROUP,
    DUPLICATE_COST,
    GAP_GRACE_S,
    GROUP_MAX,
    HANDOFF_MAX,
    HEARTBEAT_HOLD_MAX,
    KEY_REFRESH_S,
    MAX_ENVELOPE_BYTES,
    RATE_LIMITED,
    REFUSED_BURST,
    REFUSED_PER_S,
)
from siteclock.gateway.intake_refusals import Refusals
from siteclock.gateway.intake_status import Heartbeats
from siteclock.gateway.link import MAX_PACKET_BYTES, MqttLink
from siteclock.gateway.ratelimit import TerminalBudget
from siteclock.gateway.store import Gap, Inbox, PutStatus
from siteclock.gateway.terminal_health import TerminalHealth
from siteclock.gateway.terminals import ACTIVE, TerminalRegistry
from siteclock.log import fields
from siteclock.protocol import (
    Ack,
    Channel,
    Event,
    ProtocolError,
    SignedEvent,
    decode_batch,
    parse_topic,
    subscription,
    topic,
)

__all__ = [  # the limits are re-exported: tests and benchmarks read them here
    "ADMIT_PER_GROUP",
    "GAP_GRACE_S",
    "HANDOFF_MAX",
    "HEARTBEAT_HOLD_MAX",
    "KEY_REFRESH_S",
    "MAX_PACKET_BYTES",
    "REFUSED_BURST",
    "REFUSED_PER_S",
    "Handled",
    "Intake",
]

log = logging.getLogger(__name__)


@dataclass
class Handled:
    """What one message produced: its terminal, verified events to store, seqs to ack."""

    terminal: str | None = None
    ack_seqs: list[int] = field(default_factory=list)
    stored: int = 0
    good: list[tuple[SignedEvent, Event]] = field(default_factory=list)
    heartbeat: bool = False
    """A heartbeat (checked and held, or refused): PUBACKed once the heartbeats are written."""


class Intake:
    """The gateway's MQTT consumer. Thread model: paho's network thread only hands messages
    over (a bounded :class:`Handoff`); one worker thread verifies and stores them in groups
    (one commit for many messages) and then acknowledges each, with a helper thread checking
    half of each group's signatures. :meth:`handle` is also callable directly (tests,
    benchmarks).

    Where the time goes (``python -m bench intake``, 2 cores, 100 terminals): Ed25519 checks
    ~180 us per event outside the GIL; paho needs ~110 us of Python per message on its
    network thread, decoding an event and storing it ~120 us on the worker. Hence the split
    signature checks, and the bound on messages held in memory (see :data:`HANDOFF_MAX`)."""

    def __init__(
        self,
        cfg: MqttConfig,
        *,
        inbox: Inbox,
        registry: TerminalRegistry,
        link: MqttLink | None = None,
        clock: Callable[[], float] = time.monotonic,
        gap_grace_s: float = GAP_GRACE_S,
        health: TerminalHealth | None = None,
    ) -> None:
        self.cfg = cfg
        self._clock = clock
        self.budget = TerminalBudget(rate=REFUSED_PER_S, burst=REFUSED_BURST, clock=clock)
        self.inbox = inbox
        self.registry = registry
        self.refusals = Refusals(self.budget, inbox, clock)
        if health is not None:
            self.refusals.on_refusal = health.on_refusal
        self.counters = self.refusals.counters
        """Every event or message that did not become a new inbox row, by reason."""
        self.stats: Counter[str] = Counter()
        """messages, stored, acks_sent, acked_events, gaps_detected, gaps_alerted,
        chain_breaks, heartbeats, unsigned_clock (a synced heartbeat without a clock proof)."""
        self.gaps_watch = GapWatch(
            inbox, self.stats, clock=clock, grace_s=gap_grace_s, shared=bool(cfg.share_group)
        )
        self.verifiers = VerifierCache(registry)
        self.signatures = SignatureChecker()
        self.heartbeats = Heartbeats(
            registry, self.verifiers, self.refusals, self.stats, clock, health=health
        )
        self._stopping = threading.Event()
        self._handoff = Handoff(HANDOFF_MAX)
        self._worker = threading.Thread(target=self._work, name="intake-worker", daemon=True)
        # The gateway's one MQTT connection; the intake's own when none is given (tests).
        self.link = link or MqttLink(cfg)
        subscriptions = [
            (subscription(Channel.EVENTS, share_group=cfg.share_group), 1),
            # Shared too: each heartbeat is recorded by one gateway, not by every one.
            (subscription(Channel.STATUS, share_group=cfg.share_group), 1),
        ]
        self.link.listen(subscriptions, self._on_message)

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, wait_s: float | None = 10.0) -> None:
        """Connect the link in the background; with ``wait_s``, wait until the subscriptions
        hold. The intake drives the link's connection: its subscriptions and persistent session
        are why the link exists; the publishers only publish on it."""
        self.gaps_watch.seed()
        self._worker.start()
        self.link.start()
        if wait_s is not None and not self.link.subscribed.wait(wait_s):
            self.stop()
            raise ConnectionError(f"intake: not subscribed to {self.cfg.host}:{self.cfg.port}")

    def stop(self) -> None:
        """Stop; messages not yet stored are not acknowledged, so they come again."""
        self._stopping.set()
        if self._worker.is_alive():
            self._worker.join(5)
        self.signatures.shutdown()
        self.link.stop()

    @property
    def pending_gaps(self) -> int:
        """Gaps seen and not yet either filled or alerted (see :data:`GAP_GRACE_S`)."""
        return len(self.gaps_watch)

    @property
    def connected(self) -> bool:
        return self.link.connected

    # ------------------------------------------------------------------ messages

    def _on_message(self, name: str, payload: bytes, mid: int, qos: int) -> None:
        # Network thread: hand over only, so the socket keeps flowing while we verify and store.
        self._handoff.put((name, payload, mid, qos), self._stopping)

    def _work(self) -> None:
        """Take every message waiting (up to :data:`GROUP_MAX`), verify, store them in one
        transaction, then PUBACK and acknowledge each: a group commit."""
        held: list[tuple[int, int]] = []  # PUBACKs of heartbeats not yet written
        while not self._stopping.is_set():
            group = self._handoff.take(GROUP_MAX, timeout=self.heartbeats.wait_s(0.2))
            self.gaps_watch.check()
            if not group and not len(self.heartbeats):
                continue
            try:
                # an empty take: a quiet moment (HEARTBEAT_IDLE_S) or the hold ran out
                results = self.handle_many(
                    [(name, payload) for name, payload, _, _ in group], hold_heartbeats=bool(group)
                )
            except Exception:  # storage failed (disk, lock): the intake keeps going
                log.exception("intake failed to store; no ack, the terminals will resend")
                self.counters["internal_error"] += len(group)
                continue
            # One ack per terminal per group: a hundred terminals, a hundred small publishes.
            acks: dict[str, list[int]] = {}
            for handled in results:
                if handled.ack_seqs and handled.terminal:
                    acks.setdefault(handled.terminal, []).extend(handled.ack_seqs)
            for terminal, seqs in acks.items():
                self.link.publish(topic(terminal, Channel.ACK), Ack(stored=tuple(seqs)).encode(), 1)
                self.stats["acks_sent"] += 1
                self.stats["acked_events"] += len(seqs)
            for (_, _, mid, qos), handled in zip(group, results, strict=True):
                if qos == 0:
                    continue
                if handled.heartbeat:
                    held.append((mid, qos))
                else:
                    self.link.ack(mid, qos)
            if not len(self.heartbeats):  # written: their PUBACKs go
                for mid, qos in held:
                    self.link.ack(mid, qos)
                held.clear()
        self._write_held(held)

    def _write_held(self, held: list[tuple[int, int]]) -> None:
        """At a stop: write the heartbeats still held and PUBACK them (should that fail, the
        broker delivers them again after the restart)."""
        try:
            self.heartbeats.flush()
        except Exception:  # noqa: BLE001 - stopping: the broker keeps them
            log.warning("heartbeats held at stop not written; the broker delivers them again")
            return
        for mid, qos in held:
            self.link.ack(mid, qos)

    def handle(self, topic_name: str, payload: bytes) -> Handled:
        """Process one message; commits before returning. Never raises on bad input."""
        return self.handle_many([(topic_name, payload)])[0]

    def handle_many(
        self, messages: list[tuple[str, bytes]], *, hold_heartbeats: bool = False
    ) -> list[Handled]:
        """Verify every message, store all their good events in one transaction, and say
        what to acknowledge for each. Committed before returning; ``hold_heartbeats`` (the
        worker) lets checked heartbeats wait for later groups until :meth:`Heartbeats.due`
        or until events are stored (see :data:`HEARTBEAT_HOLD_MAX`)."""
        admitted: Counter[str] = Counter()
        parsed = [self._parse_alone(t, p, admitted) for t, p in messages]
        # Cheap checks first; only events that pass them cost a signature check.
        candidates = [self._precheck(h, v, batch) for h, v, batch in parsed]
        jobs = [
            (signed, v.keys, h.terminal or "")
            for (h, v, _), events in zip(parsed, candidates, strict=True)
            if v is not None
            for signed, _ in events
        ]
        budget = {t: self.budget.tokens(t) for _, _, t in jobs}
        reasons = iter(self.signatures.check(jobs, budget))  # in order, message by message
        prepared = []
        for (handled, _, _), events in zip(parsed, candidates, strict=True):
            for signed, event in events:
                reason = next(reasons)
                if reason is None:
                    handled.good.append((signed, event))
                elif reason == RATE_LIMITED:
                    self.refusals.reject(RATE_LIMITED, handled.terminal, event.seq)
                else:
                    self.refusals.refuse(reason, handled.terminal, event.seq)
            prepared.append(handled)
        storing = any(h.good for h in prepared)
        if storing and self.inbox.db is self.registry.db:
            # the events and the heartbeats held: one transaction, one commit
            with self.heartbeats.flushing():
                self._store(prepared)
        else:
            if storing:
                self._store(prepared)
            if not hold_heartbeats or self.heartbeats.due():
                self.heartbeats.flush()
        return prepared

    def _store(self, prepared: list[Handled]) -> None:
        """Store the good events of every message in one transaction. Should one message hold
        an event SQLite refuses, store message by message so that only that one is refused:
        no message can hold up the others. A failing database (OperationalError: disk, lock)
        is not the input's fault and is raised: nothing is acked, the terminals resend."""
        try:
            self._store_group([h for h in prepared if h.good])
        except OperationalError:
            raise
        except Exception:
            log.exception("a group could not be stored; storing its messages one by one")
            for handled in prepared:
                if not handled.good:
                    continue
                try:
                    self._store_group([handled])
                except OperationalError:
                    raise
                except Exception:  # noqa: BLE001 - that message alone is refused
                    for _, event in handled.good:
                        self.refusals.refuse("unstorable", handled.terminal, event.seq)
                    handled.good = []

    def _store_group(self, handled_list: list[Handled]) -> None:
        items = [(h.terminal or "", s, e) for h in handled_list for s, e in h.good]
        self.gaps_watch.learn(t for t, _, _ in items)  # each terminal's high mark, once
        results = iter(self.inbox.put_many(items, received_ns=time.time_ns()))
        for handled in handled_list:
            stored_seqs = []
            for _ in handled.good:
                result = next(results)
                if result.status is PutStatus.CONFLICT:
                    self.refusals.refuse("replay", handled.terminal, result.seq)
                    log.error(
                        "SECURITY: same sequence number, different event",
                        extra=fields(terminal=handled.terminal, seq=result.seq),
                    )
                    continue
                handled.ack_seqs.append(result.seq)
                if result.status is PutStatus.DUPLICATE:
                    self.counters["duplicate"] += 1
                    if handled.terminal:
                        self.budget.charge(handled.terminal, DUPLICATE_COST)
                else:
                    stored_seqs.append(result.seq)
                if result.chain_break:
                    self.stats["chain_breaks"] += 1
                    log.error(
                        "SECURITY: hash chain broken; event stored as evidence, alert recorded",
                        extra=fields(terminal=handled.terminal, seq=result.seq),
                    )
            handled.stored = len(stored_seqs)
            handled.good = []
            self.stats["stored"] += handled.stored
            if stored_seqs and handled.terminal:
                self.gaps_watch.note(handled.terminal, stored_seqs)

    def _parse_alone(
        self, topic_name: str, payload: bytes, admitted: Counter[str]
    ) -> tuple[Handled, Verifier | None, list[SignedEvent]]:
        """:meth:`_parse`, with whatever it raises kept to this one message: counted as
        ``unprocessable``, logged with its cause, and the message dropped (PUBACKed)."""
        try:
            return self._parse(topic_name, payload, admitted)
        except OperationalError:
            raise
        except Exception:
            log.exception("message could not be processed; dropped, counted as unprocessable")
            self.refusals.reject("unprocessable", None)
            return Handled(), None, []

    def _parse(
        self, topic_name: str, payload: bytes, admitted: Counter[str]
    ) -> tuple[Handled, Verifier | None, list[SignedEvent]]:
        """Check one message's topic, its terminal and that terminal's budget, and decode its
        batch; events signed with a revoked key are refused here. Returns the events to check
        further, with the terminal's verifier (None when there are none). ``admitted`` counts
        each terminal's events admitted so far in this group (see :data:`ADMIT_PER_GROUP`)."""
        self.stats["messages"] += 1
        try:
            terminal, channel = parse_topic(topic_name)
        except ProtocolError:
            self.refusals.reject("bad_topic", None)
            return Handled(), None, []
        if channel is Channel.STATUS:
            self.heartbeats.handle(terminal, payload)
            return Handled(terminal, heartbeat=True), None, []
        if channel is not Channel.EVENTS:
            self.refusals.reject("bad_topic", terminal)
            return Handled(terminal), None, []
        verifier = self._active_verifier(terminal)
        if verifier is None:
            return Handled(terminal), None, []
        tokens = self.budget.tokens(terminal)
        if tokens < 1:
            self.refusals.rate_limited(terminal, "refused events")
            return Handled(terminal), None, []
        limit = ADMIT_PER_GROUP if tokens >= self.budget.burst - 1 else int(tokens)
        room = limit - admitted[terminal]
        if len(payload) // MAX_ENVELOPE_BYTES >= room:  # too many events, known unread
            self.refusals.rate_limited(terminal, "events per group")
            return Handled(terminal), None, []
        try:
            batch = decode_batch(payload)
        except ProtocolError as exc:
            self.refusals.refuse(exc.reason, terminal)
            return Handled(terminal), None, []
        if len(batch) > room:
            self.refusals.rate_limited(terminal, "events per group")
            return Handled(terminal), None, []
        admitted[terminal] += len(batch)
        if any(s.envelope.kid not in verifier.keys for s in batch):
            verifier = self._active_verifier(terminal, unknown_key=True)
            if verifier is None:
                return Handled(terminal), None, []
        kept = []
        for signed in batch:
            if signed.envelope.kid in verifier.revoked:
                self.refusals.refuse("revoked_key", terminal)
            else:
                kept.append(signed)
        return Handled(terminal), verifier, kept

    def _precheck(
        self, handled: Handled, verifier: Verifier | None, batch: list[SignedEvent]
    ) -> list[tuple[SignedEvent, Event]]:
        """Decode each event of ``batch`` and check it names this terminal and its workplace:
        cheap checks that refuse most junk before its signature costs anything. Decoding before
        verifying is safe because the body decoder accepts only this protocol's CBOR subset
        (:func:`siteclock.protocol.check_cbor`). Refusals are counted and charged."""
        if verifier is None:
            return []
        terminal, workplace = handled.terminal, verifier.record.workplace
        passed = []
        for signed in batch:
            try:
                event = signed.event
            except ProtocolError as exc:
                self.refusals.refuse(exc.reason, terminal)
                continue
            except Exception:  # one event's surprise refuses that event only
                log.exception("event could not be decoded; refused")
                self.refusals.refuse("unprocessable", terminal)
                continue
            if event.terminal_id != terminal:
                self.refusals.refuse("wrong_terminal", terminal, event.seq)
            elif event.workplace != workplace:
                self.refusals.refuse("wrong_workplace", terminal, event.seq)
            else:
                passed.append((signed, event))
        return passed

    def _active_verifier(self, terminal: str, *, unknown_key: bool = False) -> Verifier | None:
        """The verifier of a registered, active terminal; otherwise the refusal is counted
        and None returned. ``unknown_key``: the cached entry lacks a key id the batch names
        (see :meth:`VerifierCache.for_unknown_key`)."""
        cache = self.verifiers
        verifier = cache.for_unknown_key(terminal) if unknown_key else cache.get(terminal)
        if verifier is None:
            self.refusals.reject("unknown_terminal", terminal)
        elif verifier.record.status != ACTIVE:
            self.refusals.reject("terminal_disabled", terminal)
        else:
            return verifier
        return None

    def gaps(self, terminal: str | None = None) -> list[Gap]:
        return self.inbox.gaps(terminal)
