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
(:mod:`gateway.store`); a gap that lasts :data:`GAP_GRACE_S` becomes a security alert.

Example::

    intake = Intake(cfg.mqtt, inbox=Inbox(db), registry=TerminalRegistry(db), roster_signer=key)
    intake.start()
    intake.counters          # Counter({'bad_signature': 3, 'duplicate': 12})
    intake.send_verdicts("t-hall-01", [Verdict(7, Outcome.REGISTERED)])
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from siteclock.gateway.config import MqttConfig
from siteclock.gateway.ratelimit import TerminalBudget
from siteclock.gateway.roster import RosterPublisher
from siteclock.gateway.store import SEQ_GAP, Gap, Inbox, PutStatus
from siteclock.gateway.terminals import ACTIVE, TerminalRecord, TerminalRegistry
from siteclock.log import fields
from siteclock.protocol import (
    MAX_EVENT_BODY_BYTES,
    MAX_PAYLOAD_BYTES,
    Ack,
    Channel,
    ClockProof,
    Event,
    ProtocolError,
    Roster,
    RosterEntry,
    SignedEvent,
    Signer,
    Verdict,
    decode_batch,
    decode_status,
    parse_topic,
    subscription,
    topic,
    verify_clock_proof,
)

log = logging.getLogger(__name__)

GROUP_MAX = 256  # messages per group commit
HANDOFF_MAX = 4 * GROUP_MAX
"""Most received, not yet stored messages held in memory. When full, paho's network thread
waits: TCP pushes back and the broker keeps the rest queued. Without a bound, a gateway coming
back to a large backlog reads it all into memory, and Python's garbage collector then spends
a quarter of the time walking those objects (measured in the intake benchmark)."""
VERIFY_SPLIT_MIN = 8
"""With fewer signatures than this in a group, the worker checks them all itself: waking the
helper thread costs tens of microseconds, and at such low rates nothing needs the speed."""
REGISTRY_TTL_S = 5.0
KEY_REFRESH_S = 1.0
"""A key id the cached entry does not know makes the intake reread the registry, at most this
often per terminal: a key added by a rotation is accepted within a second, and a terminal
sending made-up key ids cannot turn every message into a registry query."""
LOG_FIRST_PER_REASON = 20  # then one line per 1000, so a flood cannot fill the disk
REFUSED_PER_S = 20.0
REFUSED_BURST = 100.0
"""A terminal's budget of refused or unreadable events: this many per second after a burst.
Only refusals are charged (and a duplicate a tenth, :data:`DUPLICATE_COST`): an honest
terminal's good events cost nothing, so its backlog drain (4,500 events/s measured) is never
slowed, and a resend of a whole in-flight window (4 x 200 duplicates) costs 80. Signatures are
checked last, after the cheap checks, and a terminal's failed checks in one group stop at its
remaining budget, so junk signatures cost at most this many checks per second per terminal."""
DUPLICATE_COST = 0.1
ADMIT_PER_GROUP = 4 * 500
"""Most events of one terminal in good standing (a full budget) looked at in one group: an
honest in-flight window, 4 batches of up to 500. A terminal that has spent part of its budget
gets only as many events looked at as it has tokens left; its further messages in that group
are dropped as ``rate_limited``, unread when their size alone shows they would not fit."""
MAX_ENVELOPE_BYTES = MAX_EVENT_BODY_BYTES + 256
"""The most bytes one event can take in a batch: a message of N bytes holds at least
N / MAX_ENVELOPE_BYTES events, which is known before it is decoded."""
RATE_LIMITED = "rate_limited"
HEARTBEATS_PER_S = 0.5
HEARTBEAT_BURST = 5.0
"""A terminal heartbeats every 30 s; more than this is a flood (each one is a write)."""
RATE_ALERT_EVERY_S = 60.0
"""At most one ``rate_limited`` security alert per terminal per this many seconds."""
GAP_GRACE_S = 300.0
"""A missing seq is reported as a security alert when still missing this long after a later
one arrived: a terminal resends what is not acked within seconds, so a gap that lasts means
events that will never come (a wiped outbox, a terminal swapped or tampered with)."""
GAP_CHECK_S = 1.0
MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 4096
"""The MQTT maximum packet size the gateway announces: the largest events payload plus room
for the topic and headers. Smaller messages that break their kind's own limit (a status over
4 KiB) are counted and refused by the intake."""


@dataclass
class Handled:
    """What one message produced: its terminal, verified events to store, seqs to ack."""

    terminal: str | None = None
    ack_seqs: list[int] = field(default_factory=list)
    stored: int = 0
    good: list[tuple[SignedEvent, Event]] = field(default_factory=list)


Received = tuple[str, bytes, int, int]
"""One message as the worker needs it: topic, payload, mid, qos (not paho's MQTTMessage,
which holds a lock, a condition and MQTT 5 properties per message)."""


@dataclass(frozen=True, slots=True)
class _Verifier:
    """What checking one terminal's events needs, taken from its registry record once per
    cache period instead of once per message."""

    record: TerminalRecord
    keys: dict[str, bytes]
    revoked: frozenset[str]


class _Handoff:
    """Messages from paho's network thread to the worker: in arrival order, bounded.

    The worker takes everything waiting (up to a group) in one call, so a hundred messages cost
    one lock round trip, not a hundred as with :class:`queue.Queue`."""

    def __init__(self, limit: int) -> None:
        self._items: deque[Received] = deque()
        self._limit = limit
        self._cond = threading.Condition()

    def put(self, item: Received, stopping: threading.Event) -> bool:
        """Append, waiting while full; False if the intake stopped first (the message is then
        not acknowledged, so the broker delivers it again)."""
        with self._cond:
            while len(self._items) >= self._limit:
                if stopping.is_set():
                    return False
                self._cond.wait(0.2)
            self._items.append(item)
            if len(self._items) == 1:
                self._cond.notify()  # the worker may be waiting for the first one
        return True

    def take(self, most: int, timeout: float) -> list[Received]:
        """Up to ``most`` messages, oldest first; waits up to ``timeout`` for the first."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            items = self._items
            group = [items.popleft() for _ in range(min(most, len(items)))]
            if group:
                self._cond.notify()  # the network thread may be waiting for room
        return group

    def __len__(self) -> int:
        return len(self._items)


SignatureJob = tuple[SignedEvent, dict[str, bytes], str]
"""An event to check, its terminal's usable keys, and the terminal's id."""


def _signature_failures(jobs: list[SignatureJob], caps: dict[str, int]) -> list[str | None]:
    """For each job: None if its signature verifies with the key its envelope names, else the
    refusal reason. Once a terminal has had ``caps[terminal]`` failures here, its remaining
    events are not checked at all (``rate_limited``): what bounds a junk-signature flood
    within one group. Runs on any thread; touches no shared state."""
    reasons: list[str | None] = []
    failures: Counter[str] = Counter()
    for signed, keys, terminal in jobs:
        if failures[terminal] >= caps[terminal]:
            reasons.append(RATE_LIMITED)
            continue
        try:
            signed.envelope.verify(keys)
            reasons.append(None)
            continue
        except ProtocolError as exc:
            reasons.append(exc.reason)
        except Exception:  # noqa: BLE001 - a crypto library surprise refuses one event only
            reasons.append("bad_signature")
        failures[terminal] += 1
    return reasons


def make_client(cfg: MqttConfig, *, manual_ack: bool) -> mqtt.Client:
    """A paho MQTT 5 client with the gateway's TLS trust and credentials."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=cfg.client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if cfg.tls:
        client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None)
    password = cfg.password_file.read_text().strip() if cfg.password_file else None
    client.username_pw_set(cfg.username, password)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


class Intake:
    """The gateway's MQTT consumer. Thread model: paho's network thread only hands messages
    over (a bounded :class:`_Handoff`); one worker thread verifies and stores them in groups
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
        roster_signer: Signer | None = None,
        clock: Callable[[], float] = time.monotonic,
        gap_grace_s: float = GAP_GRACE_S,
    ) -> None:
        self.cfg = cfg
        self._clock = clock
        self.gap_grace_s = gap_grace_s
        self.budget = TerminalBudget(rate=REFUSED_PER_S, burst=REFUSED_BURST, clock=clock)
        self.heartbeat_budget = TerminalBudget(
            rate=HEARTBEATS_PER_S, burst=HEARTBEAT_BURST, clock=clock
        )
        self._rate_alerted: dict[str, float] = {}
        self._pending_gaps: list[tuple[float, Gap]] = []
        self._gaps_checked = clock()
        self.inbox = inbox
        self.registry = registry
        self.counters: Counter[str] = Counter()
        """Every event or message that did not become a new inbox row, by reason."""
        self.stats: Counter[str] = Counter()
        """messages, stored, acks_sent, acked_events, gaps_detected, gaps_alerted,
        chain_breaks, heartbeats, unsigned_clock (a synced heartbeat without a clock proof)."""
        self._max_seq: dict[str, int] = {}
        self._verifiers: dict[str, tuple[float, _Verifier | None]] = {}
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._handoff = _Handoff(HANDOFF_MAX)
        self._verify_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake-verify")
        self._worker = threading.Thread(target=self._work, name="intake-worker", daemon=True)
        self._client = make_client(cfg, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self.roster = RosterPublisher(self._client, roster_signer) if roster_signer else None

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, wait_s: float | None = 10.0) -> None:
        """Connect in the background; with ``wait_s``, wait until the subscriptions hold."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s  # keep queued events while away
        # The broker drops, unsent, anything larger than the largest message of the protocol:
        # an oversized payload then costs the gateway nothing, not even reading it.
        props.MaximumPacketSize = MAX_PACKET_BYTES
        self._client.connect_async(
            self.cfg.host,
            self.cfg.port,
            keepalive=self.cfg.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._seed_gaps()
        self._client.loop_start()
        self._worker.start()
        if wait_s is not None and not self._subscribed.wait(wait_s):
            self.stop()
            raise ConnectionError(f"intake: not subscribed to {self.cfg.host}:{self.cfg.port}")

    def stop(self) -> None:
        """Stop; messages not yet stored are not acknowledged, so they come again."""
        self._stopping.set()
        if self._worker.is_alive():
            self._worker.join(5)
        self._verify_pool.shutdown(wait=False)
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def pending_gaps(self) -> int:
        """Gaps seen and not yet either filled or alerted (see :data:`GAP_GRACE_S`)."""
        return len(self._pending_gaps)

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused the gateway", extra=fields(reason=str(rc)))
            return
        group = self.cfg.share_group
        client.subscribe(
            [
                (subscription(Channel.EVENTS, share_group=group), 1),
                (subscription(Channel.STATUS), 1),
            ]
        )
        log.info("intake connected", extra=fields(host=self.cfg.host, share_group=group or "-"))

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, codes: Any, _p: Any) -> None:
        if all(not c.is_failure for c in codes):
            self._subscribed.set()
        else:
            log.error("subscription refused", extra=fields(codes=[str(c) for c in codes]))

    # ------------------------------------------------------------------ messages

    def _on_message(self, _client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        # Network thread: hand over only, so the socket keeps flowing while we verify and store.
        try:
            name = msg.topic
        except UnicodeDecodeError:
            name = ""  # refused as bad_topic by the worker, and PUBACKed like any bad message
        self._handoff.put((name, msg.payload, msg.mid, msg.qos), self._stopping)

    def _work(self) -> None:
        """Take every message waiting (up to :data:`GROUP_MAX`), verify, store them in one
        transaction, then PUBACK and acknowledge each: a group commit."""
        while not self._stopping.is_set():
            group = self._handoff.take(GROUP_MAX, timeout=0.2)
            self._check_gaps()
            if not group:
                continue
            try:
                results = self.handle_many([(name, payload) for name, payload, _, _ in group])
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
                self._client.publish(
                    topic(terminal, Channel.ACK), Ack(stored=tuple(seqs)).encode(), 1
                )
                self.stats["acks_sent"] += 1
                self.stats["acked_events"] += len(seqs)
            for _, _, mid, qos in group:
                if qos > 0:
                    self._client.ack(mid, qos)

    def _refuse(self, reason: str, terminal: str | None, seq: int | None = None) -> None:
        """Count a refused event or events message and charge it to the terminal's budget."""
        self._reject(reason, terminal, seq)
        if terminal:
            self.budget.charge(terminal, 1)

    def _reject(self, reason: str, terminal: str | None, seq: int | None = None) -> None:
        self.counters[reason] += 1
        n = self.counters[reason]
        if n <= LOG_FIRST_PER_REASON or n % 1000 == 0:
            log.warning(
                "event refused",
                extra=fields(reason=reason, terminal=terminal or "-", seq=seq or "-", count=n),
            )

    def handle(self, topic_name: str, payload: bytes) -> Handled:
        """Process one message; commits before returning. Never raises on bad input."""
        return self.handle_many([(topic_name, payload)])[0]

    def handle_many(self, messages: list[tuple[str, bytes]]) -> list[Handled]:
        """Verify every message, store all their good events in one transaction, and say
        what to acknowledge for each. Committed before returning."""
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
        reasons = iter(self._check_signatures(jobs))  # consumed in order, message by message
        prepared = []
        for (handled, _, _), events in zip(parsed, candidates, strict=True):
            for signed, event in events:
                reason = next(reasons)
                if reason is None:
                    handled.good.append((signed, event))
                elif reason == RATE_LIMITED:
                    self._reject(RATE_LIMITED, handled.terminal, event.seq)
                else:
                    self._refuse(reason, handled.terminal, event.seq)
            prepared.append(handled)
        if any(h.good for h in prepared):
            self._store(prepared)
        return prepared

    def _store(self, prepared: list[Handled]) -> None:
        """Store the good events of every message in one transaction. Should one message hold
        an event SQLite refuses, store message by message so that only that one is refused:
        no message can hold up the others. A failing database (OperationalError: disk, lock)
        is not the input's fault and is raised: nothing is acked, the terminals resend."""
        try:
            self._store_group([h for h in prepared if h.good])
        except sqlite3.OperationalError:
            raise
        except Exception:
            log.exception("a group could not be stored; storing its messages one by one")
            for handled in prepared:
                if not handled.good:
                    continue
                try:
                    self._store_group([handled])
                except sqlite3.OperationalError:
                    raise
                except Exception:  # noqa: BLE001 - that message alone is refused
                    for _, event in handled.good:
                        self._refuse("unstorable", handled.terminal, event.seq)
                    handled.good = []

    def _store_group(self, handled_list: list[Handled]) -> None:
        items = [(h.terminal or "", s, e) for h in handled_list for s, e in h.good]
        for terminal in {t for t, _, _ in items} - set(self._max_seq):
            self._max_seq[terminal] = self.inbox.max_seq(terminal)  # learn the high mark
        results = iter(self.inbox.put_many(items, received_ns=time.time_ns()))
        for handled in handled_list:
            stored_seqs = []
            for _ in handled.good:
                result = next(results)
                if result.status is PutStatus.CONFLICT:
                    self._refuse("replay", handled.terminal, result.seq)
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
                self._note_gaps(handled.terminal, stored_seqs)

    def _parse_alone(
        self, topic_name: str, payload: bytes, admitted: Counter[str]
    ) -> tuple[Handled, _Verifier | None, list[SignedEvent]]:
        """:meth:`_parse`, with whatever it raises kept to this one message: counted as
        ``unprocessable``, logged with its cause, and the message dropped (PUBACKed)."""
        try:
            return self._parse(topic_name, payload, admitted)
        except sqlite3.OperationalError:
            raise
        except Exception:
            log.exception("message could not be processed; dropped, counted as unprocessable")
            self._reject("unprocessable", None)
            return Handled(), None, []

    def _parse(
        self, topic_name: str, payload: bytes, admitted: Counter[str]
    ) -> tuple[Handled, _Verifier | None, list[SignedEvent]]:
        """Check one message's topic, its terminal and that terminal's budget, and decode its
        batch; events signed with a revoked key are refused here. Returns the events to check
        further, with the terminal's verifier (None when there are none). ``admitted`` counts
        each terminal's events admitted so far in this group (see :data:`ADMIT_PER_GROUP`)."""
        self.stats["messages"] += 1
        try:
            terminal, channel = parse_topic(topic_name)
        except ProtocolError:
            self._reject("bad_topic", None)
            return Handled(), None, []
        if channel is Channel.STATUS:
            self._heartbeat(terminal, payload)
            return Handled(terminal), None, []
        if channel is not Channel.EVENTS:
            self._reject("bad_topic", terminal)
            return Handled(terminal), None, []
        verifier = self._active_verifier(terminal)
        if verifier is None:
            return Handled(terminal), None, []
        tokens = self.budget.tokens(terminal)
        if tokens < 1:
            self._rate_limited(terminal, "refused events")
            return Handled(terminal), None, []
        limit = ADMIT_PER_GROUP if tokens >= self.budget.burst - 1 else int(tokens)
        room = limit - admitted[terminal]
        if len(payload) // MAX_ENVELOPE_BYTES >= room:  # too many events, known unread
            self._rate_limited(terminal, "events per group")
            return Handled(terminal), None, []
        try:
            batch = decode_batch(payload)
        except ProtocolError as exc:
            self._refuse(exc.reason, terminal)
            return Handled(terminal), None, []
        if len(batch) > room:
            self._rate_limited(terminal, "events per group")
            return Handled(terminal), None, []
        admitted[terminal] += len(batch)
        if any(s.envelope.kid not in verifier.keys for s in batch):
            verifier = self._active_verifier(terminal, max_age_s=KEY_REFRESH_S)
            if verifier is None:
                return Handled(terminal), None, []
        kept = []
        for signed in batch:
            if signed.envelope.kid in verifier.revoked:
                self._refuse("revoked_key", terminal)
            else:
                kept.append(signed)
        return Handled(terminal), verifier, kept

    def _check_signatures(self, jobs: list[SignatureJob]) -> list[str | None]:
        """The refusal reason of each signature (None: valid), in the order of ``jobs``.

        cryptography releases the GIL while it checks an Ed25519 signature, so a group is split
        in two and a helper thread checks one half while this thread checks the other: on two
        cores verification takes half the wall time, and paho's thread keeps reading meanwhile.
        Each half may fail at most half of a terminal's remaining budget (at least one).
        """
        budget = {t: self.budget.tokens(t) for _, _, t in jobs}
        if len(jobs) < VERIFY_SPLIT_MIN:
            return _signature_failures(jobs, {t: max(1, int(n)) for t, n in budget.items()})
        caps = {t: max(1, int(n + 1) // 2) for t, n in budget.items()}
        half = len(jobs) // 2
        try:
            first = self._verify_pool.submit(_signature_failures, jobs[:half], caps)
        except RuntimeError:  # the pool is shut down (stopped intake): check them all here
            return _signature_failures(jobs, {t: max(1, int(n)) for t, n in budget.items()})
        second = _signature_failures(jobs[half:], caps)
        return first.result() + second

    def _precheck(
        self, handled: Handled, verifier: _Verifier | None, batch: list[SignedEvent]
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
                self._refuse(exc.reason, terminal)
                continue
            except Exception:  # one event's surprise refuses that event only
                log.exception("event could not be decoded; refused")
                self._refuse("unprocessable", terminal)
                continue
            if event.terminal_id != terminal:
                self._refuse("wrong_terminal", terminal, event.seq)
            elif event.workplace != workplace:
                self._refuse("wrong_workplace", terminal, event.seq)
            else:
                passed.append((signed, event))
        return passed

    def _active_verifier(
        self, terminal: str, *, max_age_s: float = REGISTRY_TTL_S
    ) -> _Verifier | None:
        """The verifier of a registered, active terminal; otherwise the refusal is counted
        and None returned."""
        verifier = self._verifier(terminal, max_age_s=max_age_s)
        if verifier is None:
            self._reject("unknown_terminal", terminal)
        elif verifier.record.status != ACTIVE:
            self._reject("terminal_disabled", terminal)
        else:
            return verifier
        return None

    def _verifier(self, terminal: str, *, max_age_s: float = REGISTRY_TTL_S) -> _Verifier | None:
        """The registry entry and its usable keys, cached for :data:`REGISTRY_TTL_S`: a
        revocation or rebinding takes effect within that time without a query per message.
        ``max_age_s`` asks for a fresher entry (a key id the cache does not know)."""
        now = time.monotonic()
        cached = self._verifiers.get(terminal)
        if cached is not None and now - cached[0] < max_age_s:
            return cached[1]
        record = self.registry.get(terminal)
        verifier = None if record is None else _Verifier(record, record.keys, record.revoked_kids)
        self._verifiers[terminal] = (now, verifier)
        return verifier

    def _note_gaps(self, terminal: str, stored: Iterable[int]) -> None:
        """Report a jump in a terminal's sequence as it happens; :meth:`gaps` lists them all."""
        high = self._max_seq[terminal]
        for seq in sorted(stored):
            if seq > high + 1:
                self.stats["gaps_detected"] += 1
                self._pending_gaps.append((self._clock(), Gap(terminal, high + 1, seq - 1)))
                log.warning(
                    "gap in a terminal's sequence",
                    extra=fields(terminal=terminal, missing_from=high + 1, missing_to=seq - 1),
                )
            high = max(high, seq)
        self._max_seq[terminal] = high

    def _seed_gaps(self) -> None:
        """Gaps already in the inbox when the intake starts, not yet alerted: watched again, so
        a restart neither forgets nor repeats an alert."""
        alerted = self.inbox.alerted_gaps()
        now = self._clock()
        for gap in self.inbox.gaps():
            if (gap.terminal, gap.first) not in alerted:
                self._pending_gaps.append((now, gap))

    def _check_gaps(self) -> None:
        """Turn gaps that lasted :attr:`gap_grace_s` into ``seq_gap`` security alerts."""
        now = self._clock()
        if not self._pending_gaps or now - self._gaps_checked < GAP_CHECK_S:
            return
        self._gaps_checked = now
        due = [g for at, g in self._pending_gaps if now - at >= self.gap_grace_s]
        self._pending_gaps = [
            (at, g) for at, g in self._pending_gaps if now - at < self.gap_grace_s
        ]
        for watched in due:
            try:
                for gap in self.inbox.missing(watched.terminal, watched.first, watched.last):
                    detail = f"seqs {gap.first}..{gap.last} never arrived"
                    self.inbox.record_alert(
                        gap.terminal, gap.first, SEQ_GAP, detail, at_ns=time.time_ns()
                    )
                    self.stats["gaps_alerted"] += 1
                    log.error(
                        "SECURITY: events missing from a terminal's chain",
                        extra=fields(terminal=gap.terminal, first=gap.first, last=gap.last),
                    )
            except sqlite3.Error:
                log.exception("gap check failed; will retry")
                self._pending_gaps.append((now, watched))

    def _rate_limited(self, terminal: str, what: str) -> None:
        """Count a message dropped for a terminal over its budget; alert at most once a minute."""
        self._reject(RATE_LIMITED, terminal)
        now = self._clock()
        last = self._rate_alerted.get(terminal)
        if last is not None and now - last < RATE_ALERT_EVERY_S:
            return
        self._rate_alerted[terminal] = now
        log.error(
            "SECURITY: terminal over its intake budget; its messages are dropped unread",
            extra=fields(terminal=terminal, budget=what),
        )
        self.inbox.record_alert(terminal, 0, RATE_LIMITED, what, at_ns=time.time_ns())

    def _heartbeat(self, terminal: str, payload: bytes) -> None:
        if not self.heartbeat_budget.allow(terminal):
            self._rate_limited(terminal, "heartbeats")
            return
        self.heartbeat_budget.charge(terminal, 1)
        try:
            status = decode_status(payload)
        except ProtocolError as exc:
            self._reject(
                "status_too_large" if exc.reason == "too_large" else "bad_status", terminal
            )
            return
        verifier = self._verifier(terminal)
        if verifier is None:
            self._reject("unknown_terminal", terminal)
            return
        proof: ClockProof | None = None
        try:
            proof = verify_clock_proof(status, terminal, verifier.keys)
        except ProtocolError as exc:
            self._reject("bad_clock_proof", terminal)
            log.warning(
                "SECURITY: heartbeat clock proof refused; no clock correction from it",
                extra=fields(terminal=terminal, reason=exc.reason),
            )
        clock = status.get("clock")
        if proof is None and isinstance(clock, dict) and clock.get("synced") is True:
            self.stats["unsigned_clock"] += 1  # a terminal from before clock proofs
        self.registry.record_heartbeat(terminal, status, proof=proof)
        self.stats["heartbeats"] += 1

    # ------------------------------------------------------------------ towards terminals

    def send_verdicts(self, terminal_id: str, verdicts: list[Verdict]) -> None:
        """Tell a terminal the NSSO's verdicts (QoS 1; the terminal records them idempotently)."""
        if verdicts:
            payload = Ack(verdicts=tuple(verdicts)).encode()
            self._client.publish(topic(terminal_id, Channel.ACK), payload, qos=1)

    def publish_roster(self, terminal_id: str, entries: list[RosterEntry]) -> Roster:
        if self.roster is None:
            raise RuntimeError("intake was built without a roster signer")
        return self.roster.publish_roster(terminal_id, entries)

    def gaps(self, terminal: str | None = None) -> list[Gap]:
        return self.inbox.gaps(terminal)
