"""The terminal's uplink: drains the outbox to the gateway over MQTT 5 and applies its answers.

The outbox, not the broker and not paho, is the system of record (DESIGN decision 1). paho
keeps in-flight messages in memory only, Mosquitto may drop queued messages, and a broker
PUBACK says nothing about the gateway. So:

* an event becomes *delivered* only when the gateway's application ack (``Ack.stored``) names
  it; paho's return codes and ``on_publish`` are ignored as truth;
* events leave in sequence order, packed into batches when a backlog exists (one message of up
  to ``max_batch`` events) with at most ``max_inflight_batches`` unacknowledged batches;
* after any (re)connect, and when acks are overdue (``resend_after_s``, backing off while no
  ack arrives), everything still pending is sent again from the oldest ("go back N"). The
  gateway answers a resent event from its inbox, so a resend costs bandwidth, never a
  duplicate;
* delivered events are kept for the evidence window and pruned in small batches.

It also publishes the retained status (heartbeat, and ``offline`` as Last Will and on a clean
stop), and applies the gateway-signed roster from the retained ``config`` topic after checking
its signature against the gateway's public keys (a bad one is logged, counted, never applied).

Threads: paho's network thread only puts what arrives on a queue; one sender thread does all
outbox work, so acks, resends and pruning never race each other.

Example::

    uplink = Uplink(cfg.uplink, terminal_id="t-hall-01", outbox=box,
                    status=health.snapshot, on_roster=capture.set_roster)
    uplink.start()
    ...  box.append(...); uplink.wake()
    uplink.stop()
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from siteclock.log import fields
from siteclock.protocol import (
    MAX_PAYLOAD_BYTES,
    Ack,
    Channel,
    ProtocolError,
    Roster,
    SignedEvent,
    attach_clock_proof,
    decode_roster,
    encode_batch,
    encode_status,
    parse_topic,
    topic,
)

if TYPE_CHECKING:
    from siteclock.terminal.config import UplinkConfig
from siteclock.terminal.outbox import Outbox
from siteclock.waits import Wait

log = logging.getLogger(__name__)

EVIDENCE_WINDOW_S = 45 * 86400.0
"""Delivered events stay this long (NSSO corrections are accepted within 30 days)."""
MAX_RESEND_BACKOFF_S = 300.0


NO_ROSTER_KEYS = Wait(
    "no roster keys ([uplink] gateway_keys_file unset or empty): every roster is refused, "
    "workers are not greeted by name and blocked badges are not flagged",
    "copy the gateway's gateway-keys.json to the terminal and set [uplink] gateway_keys_file "
    "(siteclock provision run does both)",
)
STALE_ROSTER_KEYS = (
    "the gateway signs with a key this terminal does not hold: refresh [uplink] "
    "gateway_keys_file from the gateway's gateway-keys.json (siteclock provision rebind or "
    "run writes it), then restart the terminal"
)


def load_gateway_keys(path: Path | None) -> dict[str, bytes]:
    """The gateway's roster-signing public keys: a JSON file ``{"<kid>": "<hex>"}``."""
    if path is None:
        return {}
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of kid -> hex public key")
    return {str(kid): bytes.fromhex(str(hexkey)) for kid, hexkey in raw.items()}


@dataclass
class _Batch:
    seqs: set[int]
    sent_at: float


@dataclass
class _Window:
    """The unacknowledged batches, oldest first, and the highest seq handed to paho."""

    batches: list[_Batch] = field(default_factory=list)
    sent_up_to: int = 0

    def reset(self) -> None:
        self.batches.clear()
        self.sent_up_to = 0

    def acked(self, seqs: Sequence[int]) -> None:
        done = set(seqs)
        for batch in self.batches:
            batch.seqs -= done
        self.batches = [b for b in self.batches if b.seqs]


class Uplink:
    """Outbox -> MQTT -> gateway, and gateway acks/rosters -> outbox/capture.

    :param config: broker address, TLS, credentials, batching and timing (``UplinkConfig``).
    :param terminal_id: this terminal's id (also its MQTT client id and default username).
    :param outbox: the terminal's outbox.
    :param status: returns the heartbeat map (queue depth, clock, reader, disk, version...).
    :param on_roster: receives each verified roster addressed to this terminal.
    :param on_roster_refused: told why rosters cannot be applied (no keys configured, or a
        roster refused), then ``None`` once one is applied: the terminal's health turns it into
        the ``roster_refused`` alert and a log line repeated while it lasts.
    :param evidence_window_s: how long delivered events are kept before pruning.
    """

    def __init__(
        self,
        config: UplinkConfig,
        *,
        terminal_id: str,
        outbox: Outbox,
        status: Callable[[], dict[str, Any]],
        on_roster: Callable[[Roster], None],
        on_roster_refused: Callable[[Wait | None], None] = lambda _problem: None,
        evidence_window_s: float = EVIDENCE_WINDOW_S,
        prune_every_s: float = 3600.0,
        keepalive_s: int = 30,
        reconnect_max_s: int = 30,
    ) -> None:
        self.config = config
        self.terminal_id = terminal_id
        self.outbox = outbox
        self._status = status
        self._on_roster = on_roster
        self._on_roster_refused = on_roster_refused
        self._evidence_window_s = evidence_window_s
        self._prune_every_s = prune_every_s
        self._keepalive_s = keepalive_s
        self.counters: Counter[str] = Counter()
        self.last_refusal: str | None = None  # the reason of the last refused login
        self._gateway_keys = load_gateway_keys(config.gateway_keys_file)
        if not self._gateway_keys:
            # Every roster would be refused: say so now, not at the first roster.
            on_roster_refused(NO_ROSTER_KEYS)
        self._topics = {ch: topic(terminal_id, ch) for ch in Channel}
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._ready = threading.Event()  # connected and subscribed to ack + config
        self._window = _Window()
        self._resend_after = config.resend_after_s
        self._roster_version = -1
        self._thread: threading.Thread | None = None
        self._client = self._make_client(reconnect_max_s)

    # ------------------------------------------------------------------ MQTT plumbing

    def _make_client(self, reconnect_max_s: int) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.terminal_id, protocol=mqtt.MQTTv5
        )
        if cfg.tls:
            client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None)
        password = Path(cfg.password_file).read_text().strip() if cfg.password_file else None
        client.username_pw_set(cfg.username or self.terminal_id, password)
        client.will_set(
            self._topics[Channel.STATUS],
            encode_status({"state": "offline", "reason": "connection lost"}),
            qos=1,
            retain=True,
        )
        client.reconnect_delay_set(min_delay=1, max_delay=reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _ud: Any, _fl: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self.last_refusal = str(rc)  # read by terminal.out_of_service (its own login?)
            self.counters["connect_refused"] += 1
            log.error("broker refused the terminal", extra=fields(reason=str(rc)))
            return
        client.subscribe([(self._topics[Channel.ACK], 1), (self._topics[Channel.CONFIG], 1)])

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, codes: Any, _p: Any) -> None:
        if any(c.is_failure for c in codes):
            log.error("subscription refused", extra=fields(codes=[str(c) for c in codes]))
            return
        self._ready.set()
        self._events.put(("connected", None))
        self._wake.set()

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _fl: Any, rc: Any, _p: Any) -> None:
        self._ready.clear()
        self._events.put(("disconnected", str(rc)))
        self._wake.set()

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        # Network thread: hand over only; the sender thread does all the work.
        self._events.put(("message", (msg.topic, msg.payload)))
        self._wake.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background (retrying forever) and start the sender thread."""
        self._client.connect_async(self.config.host, self.config.port, self._keepalive_s)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="uplink-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A new event was committed: send it soon."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish nothing more but an ``offline`` status, then disconnect cleanly."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._ready.is_set():
            info = self._client.publish(
                self._topics[Channel.STATUS],
                encode_status({"state": "offline", "reason": "stopped"}),
                qos=1,
                retain=True,
            )
            # Not connected after all (paho raises): the Last Will says offline instead.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        next_heartbeat = time.monotonic()
        next_prune = time.monotonic() + min(60.0, self._prune_every_s)
        while not self._stopping.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                self._drain_events()
                if self._stopping.is_set():
                    break
                now = time.monotonic()
                if self._ready.is_set():
                    self._check_overdue(now)
                    self._fill_window(now)
                    if now >= next_heartbeat:
                        self._heartbeat()
                        next_heartbeat = now + self.config.heartbeat_s
                if now >= next_prune:
                    self._prune()
                    next_prune = now + self._prune_every_s
            except Exception:  # the uplink must outlive any one failure; the outbox is safe
                self.counters["sender_error"] += 1
                log.exception("uplink sender step failed; retrying")
                # A pause before the retry so a persistent failure does not spin, cut short by
                # stop() so shutting down never waits for it.
                self._stopping.wait(1.0)

    def _drain_events(self) -> None:
        while True:
            try:
                kind, value = self._events.get_nowait()
            except queue.Empty:
                return
            if kind == "connected":
                # Whatever paho or the broker held is gone or unknowable: go back to the oldest
                # pending event. The gateway re-acks what it already has.
                self._window.reset()
                self._resend_after = self.config.resend_after_s
                self.counters["connects"] += 1
                self._heartbeat()
                log.info("uplink connected", extra=fields(terminal=self.terminal_id))
            elif kind == "disconnected":
                self.counters["disconnects"] += 1
                log.warning("uplink disconnected", extra=fields(reason=value))
            elif kind == "message":
                self._handle_message(*value)

    def _handle_message(self, topic_name: str, payload: bytes) -> None:
        try:
            terminal, channel = parse_topic(topic_name)
        except ProtocolError:
            self.counters["bad_message"] += 1
            return
        if terminal != self.terminal_id:
            self.counters["bad_message"] += 1
            return
        if channel is Channel.ACK:
            self._handle_ack(payload)
        elif channel is Channel.CONFIG:
            self._handle_roster(payload)

    def _handle_ack(self, payload: bytes) -> None:
        try:
            ack = Ack.decode(payload)
        except ProtocolError:
            self.counters["bad_ack"] += 1
            log.warning("malformed ack from the gateway ignored")
            return
        if ack.stored:
            changed = self.outbox.mark_delivered(ack.stored)
            self.counters["delivered"] += changed
            self._window.acked(ack.stored)
            self._resend_after = self.config.resend_after_s  # progress: no backoff
        for verdict in ack.verdicts:
            self.outbox.record_verdict(verdict.seq, verdict.outcome, verdict.reason)
            self.counters["verdicts"] += 1

    def _handle_roster(self, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        try:
            roster = decode_roster(payload, self._gateway_keys)
        except ProtocolError as exc:
            self.counters["roster_rejected"] += 1
            log.error("roster refused: not applied", extra=fields(reason=exc.reason))
            self._on_roster_refused(
                NO_ROSTER_KEYS
                if not self._gateway_keys
                else Wait(f"roster refused ({exc.reason})", STALE_ROSTER_KEYS)
            )
            return
        if roster.terminal_id != self.terminal_id:
            self.counters["roster_rejected"] += 1
            log.error("roster for another terminal refused", extra=fields(reason="wrong_terminal"))
            return
        if roster.version <= self._roster_version:
            return  # an older roster replayed: keep the newer one
        self._roster_version = roster.version
        self._on_roster(roster)
        self._on_roster_refused(None)
        self.counters["roster_applied"] += 1
        log.info(
            "roster applied", extra=fields(version=roster.version, entries=len(roster.entries))
        )

    def _check_overdue(self, now: float) -> None:
        batches = self._window.batches
        if batches and now - batches[0].sent_at >= self._resend_after:
            self.counters["resends"] += 1
            log.info(
                "acks overdue; resending from the oldest pending event",
                extra=fields(after_s=round(self._resend_after, 1)),
            )
            self._window.reset()
            self._resend_after = min(self._resend_after * 2, MAX_RESEND_BACKOFF_S)

    def _fill_window(self, now: float) -> None:
        cfg = self.config
        while len(self._window.batches) < cfg.max_inflight_batches and self._ready.is_set():
            events = self.outbox.unsent(after_seq=self._window.sent_up_to, limit=cfg.max_batch)
            if not events:
                return
            for part, payload in _split_to_fit(events):
                self._publish_batch(part, payload, now)
            self._window.sent_up_to = _seq(events[-1])

    def _publish_batch(self, events: list[SignedEvent], payload: bytes, now: float) -> None:
        info = self._client.publish(self._topics[Channel.EVENTS], payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # A hint only: paho may still deliver it, and the window resends it if not acked.
            self.counters["publish_rc_not_success"] += 1
        self._window.batches.append(_Batch({_seq(e) for e in events}, now))
        self.counters["batches_sent"] += 1
        self.counters["events_sent"] += len(events)

    def _heartbeat(self) -> None:
        try:
            status = dict(self._status())
        except Exception:  # a broken probe must not stop delivery
            log.exception("status probe failed; sending a minimal heartbeat")
            status = {}
        if "queue_depth" not in status:
            stats = self.outbox.stats()
            status["queue_depth"] = stats.depth
        status["state"] = "online"
        status["heartbeat_s"] = self.config.heartbeat_s  # the gateway's deadline for the next
        # Signed, so the gateway may use this reading to date the boot's unsynced taps.
        status = attach_clock_proof(status, self.terminal_id, self.outbox.signer)
        self._client.publish(self._topics[Channel.STATUS], encode_status(status), 1, retain=True)
        self.counters["heartbeats"] += 1

    def _prune(self) -> None:
        older_than = time.time_ns() - int(self._evidence_window_s * 1e9)
        pruned = self.outbox.prune_delivered(older_than_ns=older_than, batch=500)
        if pruned:
            self.counters["pruned"] += pruned
            log.info("pruned delivered events past the evidence window", extra=fields(n=pruned))


def _seq(signed: SignedEvent) -> int:
    """An event's seq without validating the whole event (the outbox wrote it; the gateway
    validates): a drain of 100,000 events should not spend its CPU re-checking its own data."""
    seq = cbor2.loads(signed.envelope.body)["seq"]
    if type(seq) is not int:
        raise ValueError("event body without an integer seq")
    return seq


def _split_to_fit(events: list[SignedEvent]) -> list[tuple[list[SignedEvent], bytes]]:
    """Encode a batch, halving it until each part's payload fits the protocol's size limit."""
    payload = encode_batch(events)
    if len(events) == 1 or len(payload) <= MAX_PAYLOAD_BYTES:
        return [(events, payload)]
    mid = len(events) // 2
    return _split_to_fit(events[:mid]) + _split_to_fit(events[mid:])
