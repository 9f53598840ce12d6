"""``intake_hostile``: honest events per second while stolen terminals flood the intake.

100 honest terminals send live, chained, single-event messages round-robin (as in ``intake``),
while 5 compromised terminals (each with its real broker credentials; 3 also hold their real
signing key, 2 sign with a key of their own) publish poison of every kind the issue found, as
fast as the broker takes them for as long as the honest terminals publish: garbage, CBOR
tags (regular expression, big number, a tag inside a signed body), deep CBOR nesting,
indefinite lengths, an oversized events payload, batches of 400 junk signatures, forged
signatures, unknown key ids, signed events with out-of-range integers, a wrong workplace, forks
of stored events, and on the status topic deep JSON, 5,000-digit numbers, 2^64 timestamps,
oversized heartbeats and heartbeats with forged clock proofs.

As in ``intake``, the gateway's persistent session is offline while everyone publishes (so the
senders are off the 2 cores while the gateway is measured) and then works through the queue,
where honest and hostile messages are interleaved as they arrived. ``good_events_per_s`` is the
honest events over the time until the last one is stored and acknowledged. Each round runs a
*clean* run (the same honest traffic, no hostile senders) and a *hostile* run, in alternating
order (:mod:`bench.rounds`); the figures are medians over :data:`ROUNDS` rounds, with their
spread, and ``ratio_to_clean`` is the ratio of the medians.

``good_lost``: honest events not stored. ``hostile_accepted``: inbox rows and clock sync points
the hostile terminals obtained (beyond the history they had before being compromised).
Goal: ratio_to_clean >= 0.8, good_lost 0, hostile_accepted 0.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import statistics
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import cbor2

from bench import rounds
from bench.bench_intake import CLOCK, WORKPLACE, Chain, connect, send
from siteclock import protocol as p
from siteclock.gateway.intake import MAX_PACKET_BYTES, Intake
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from tests.support.mosquitto import gateway_config, running_broker

HONEST = 100
HOSTILE = 5
HOSTILE_WITH_KEYS = 3
EVENTS_PER_TERMINAL = 60  # per run: 6,000 honest events
POISON_PER_TERMINAL = 20_000  # a cap per run, to bound the broker's memory
POISON_IN_FLIGHT = 2000
ROUNDS = rounds.ROUNDS
SENDERS = 4
HISTORY = 10  # events each hostile terminal stored before it was compromised
S = 10**9


def honest_ids() -> list[str]:
    return [f"t-good-{i:03d}" for i in range(HONEST)]


def hostile_ids() -> list[str]:
    return [f"t-evil-{i}" for i in range(HOSTILE)]


def _event(tid: str, seq: int, **overrides: Any) -> p.Event:
    values: dict[str, Any] = {
        "terminal_id": tid, "workplace": WORKPLACE, "seq": seq, "prev_hash": p.GENESIS_HASH,
        "event_id": f"{tid}-x{seq}", "kind": p.Kind.IN, "badge": "nfc-a:04A1B2C3",
        "wall_ns": time.time_ns(), "boot_id": "boot", "boot_ns": seq, "clock": CLOCK,
    }  # fmt: skip
    values.update(overrides)
    return p.Event(**values)


def poison(tid: str, own: Ed25519Signer, registered_kid: str, holds_key: bool) -> list[bytes]:
    """Every kind of poison one compromised terminal sends, as ``b"e"``/``b"s"`` + payload
    (events or status topic). ``own`` signs: the registered key when ``holds_key``."""
    mallory = Ed25519Signer.generate()
    body = p.sign_event(_event(tid, HISTORY + 1), own).envelope.body

    def batch(*events: p.SignedEvent) -> bytes:
        return b"e" + p.encode_batch(list(events))

    def junk(n: int) -> bytes:
        return batch(*(p.SignedEvent(p.Envelope(body, "ed25519", registered_kid,
                                                os.urandom(64))) for _ in range(n)))  # fmt: skip

    def status(value: dict[str, Any] | bytes) -> bytes:
        return b"s" + (value if isinstance(value, bytes) else json.dumps(value).encode())

    beat = {"state": "online", "boot_id": "b", "boot_ns": S, "wall_ns": time.time_ns(),
            "clock": CLOCK.to_map()}  # fmt: skip
    tagged = cbor2.loads(body)
    tagged["wall_ns"] = cbor2.CBORTag(1, 1_700_000_000)
    kinds = [
        b"e" + os.urandom(300),
        b"e" + cbor2.dumps({"v": 1, "events": [re.compile("(a|aa)*b" * 40)]}),
        b"e" + cbor2.dumps({"v": 1, "events": [2**80]}),
        b"e" + b"\x81" * 2000 + b"\x00",
        b"e" + b"\xbf\x61v\x01\xff",
        # Nothing over the broker's max_packet_size (1 MiB): Mosquitto closes the connection of
        # a client that sends one (tests/integration/test_hostile_broker.py), so such a packet
        # costs the gateway nothing and would only end this sender's stream of poison.
        b"e" + b"\xa0" * 2**19,  # over the gateway's limit per events message, under the broker's
        junk(400),
        junk(1),
        batch(p.sign_event(_event(tid, HISTORY + 2), mallory)),  # unknown key id
        batch(p.sign_event(_event(tid, 2**64 - 1), own)),
        batch(p.sign_event(_event(tid, HISTORY + 3, wall_ns=2**63), own)),
        batch(p.sign_event(_event(tid, HISTORY + 4, workplace="2B2003SQ5VSSZ"), own)),
        batch(p.sign_event(_event(tid, 3, event_id="fork"), own)),  # a stored seq, changed
        batch(p.SignedEvent(p.seal(cbor2.dumps(tagged, canonical=True), own))),
        status(b'{"state":"online","x":' + b"[" * 1990 + b"]" * 1990 + b"}"),
        status(b'{"state":"online","n":' + b"9" * 5000 + b"}"),
        status({**beat, "wall_ns": 2**64, "boot_ns": 2**64}),
        status({**beat, "pad": "x" * 65536}),
        status(p.attach_clock_proof(beat, tid, mallory)),
    ]
    return kinds


def send_poison(
    broker: dict[str, Any],
    hostile: list[tuple[str, str, list[bytes]]],
    stop: Any,
    ready: Barrier,
    results: Any,
) -> None:
    """The compromised terminals' process: from "go" until ``stop`` is set (the honest senders
    are done), publish poison round-robin through the kinds as fast as the broker takes it
    (QoS 1, up to :data:`POISON_IN_FLIGHT` unacknowledged), at most
    :data:`POISON_PER_TERMINAL` per terminal; then wait for the PUBACKs."""
    clients = [(connect(broker, tid, pw), tid, kinds) for tid, pw, kinds in hostile]
    ready.wait()
    ready.wait()
    infos: list[Any] = []
    acked = 0
    for n in range(POISON_PER_TERMINAL):
        if stop.is_set():
            break
        while len(infos) - acked > POISON_IN_FLIGHT:
            acked = sum(1 for i, _ in infos if i.is_published())
            time.sleep(0.001)
        for client, tid, kinds in clients:
            item = kinds[n % len(kinds)]
            channel = p.Channel.EVENTS if item[:1] == b"e" else p.Channel.STATUS
            name = p.topic(tid, channel)
            infos.append((client.publish(name, item[1:], qos=1), len(item) + len(name)))
    for info, _ in infos:
        info.wait_for_publish(120)
    for client, _, _ in clients:
        client.disconnect()
        client.loop_stop()
    # What the gateway will receive: the broker drops what exceeds its maximum packet size.
    results.put(sum(1 for i, size in infos if i.is_published() and size <= MAX_PACKET_BYTES))


class Bench:
    """One broker and gateway database for every run; runs differ in their gateway session."""

    def __init__(self, root: Path, broker: Any) -> None:
        self.broker = broker
        self.where = {"host": broker.host, "port": broker.port, "ca_file": str(broker.ca_file)}
        self.db = root / "gateway.db"
        self.registry, self.inbox = TerminalRegistry(self.db), Inbox(self.db)
        self.ctx = multiprocessing.get_context("spawn")
        self.chains = []
        for tid in honest_ids():
            signer = Ed25519Signer.generate()
            self.registry.register(tid, WORKPLACE, public_key=signer.public_key_bytes())
            self.chains.append(Chain(tid, signer))
        self.hostile = []
        for i, tid in enumerate(hostile_ids()):
            registered = Ed25519Signer.generate()
            self.registry.register(tid, WORKPLACE, public_key=registered.public_key_bytes())
            history = Chain(tid, registered)
            self.inbox.put(
                tid, [(s, s.event) for s in map(_decode_one, history.payloads(HISTORY))],
                received_ns=time.time_ns(),
            )  # fmt: skip
            holds_key = i < HOSTILE_WITH_KEYS
            own = registered if holds_key else Ed25519Signer.generate()
            kinds = poison(tid, own, registered.kid, holds_key)
            self.hostile.append((tid, broker.credentials(tid).password, kinds))
        self.runs = 0

    def honest_count(self) -> int:
        return sum(self.inbox.count(tid) for tid in honest_ids())

    def hostile_held(self) -> int:
        rows = sum(self.inbox.count(tid) for tid in hostile_ids()) - HOSTILE * HISTORY
        points = sum(1 for tid in hostile_ids() if self.registry.sync_point(tid, "b") is not None)
        return rows + points

    def run(self, *, hostile: bool) -> dict[str, float]:
        self.runs += 1
        cfg = gateway_config(self.broker, client_id=f"siteclock_gateway-hostile-bench-{self.runs}")
        first = Intake(cfg, inbox=self.inbox, registry=self.registry)
        first.start()  # the persistent session and its subscriptions
        first.stop()
        terminals = [
            (c.tid, self.broker.credentials(c.tid).password, c.payloads(EVENTS_PER_TERMINAL))
            for c in self.chains
        ]
        parties = SENDERS + 1 + (1 if hostile else 0)
        ready, results, poisoned = self.ctx.Barrier(parties), self.ctx.Queue(), self.ctx.Queue()
        stop = self.ctx.Event()
        procs = [
            self.ctx.Process(target=send, args=(self.where, terminals[i::SENDERS], ready, results))
            for i in range(SENDERS)
        ]
        if hostile:
            procs.append(self.ctx.Process(
                target=send_poison,
                args=(self.where, self.hostile, stop, ready, poisoned),
            ))  # fmt: skip
        for proc in procs:
            proc.start()
        ready.wait(180)
        ready.wait(180)
        published = sum(n for _, _, n in (results.get(timeout=300) for _ in range(SENDERS)))
        stop.set()
        hostile_sent = poisoned.get(timeout=300) if hostile else 0
        for proc in procs:
            proc.join(30)
        expected = HONEST * EVENTS_PER_TERMINAL
        if published != expected:
            raise RuntimeError(f"honest senders published {published} of {expected}")
        before = self.honest_count()
        intake = Intake(cfg, inbox=self.inbox, registry=self.registry)
        started = time.perf_counter()
        intake.start()
        deadline = started + 120
        while intake.stats["acked_events"] < expected and time.perf_counter() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        # Let it finish the hostile rest before the next run, so runs do not overlap.
        total = published + hostile_sent
        while intake.stats["messages"] < total and time.perf_counter() < deadline:
            time.sleep(0.05)
        intake.stop()
        stored = self.honest_count() - before
        return {
            "events_per_s": stored / elapsed,
            "lost": expected - stored,
            "hostile_messages": hostile_sent,
            "refused": sum(n for r, n in intake.counters.items() if r != "duplicate"),
            "rate_limited": intake.counters["rate_limited"],
        }


def _decode_one(payload: bytes) -> p.SignedEvent:
    [signed] = p.decode_batch(payload)
    return signed


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        everyone = honest_ids() + hostile_ids()
        with running_broker(root / "broker", terminals=everyone) as broker:
            bench = Bench(root, broker)
            runs = rounds.interleaved({
                "clean": lambda: bench.run(hostile=False),
                "hostile": lambda: bench.run(hostile=True),
            }, rounds=ROUNDS)  # fmt: skip
            clean, hostile = runs["clean"], runs["hostile"]
            accepted = bench.hostile_held()
    good_rates = [r["events_per_s"] for r in hostile]
    clean_rates = [r["events_per_s"] for r in clean]
    ratio = rounds.median(good_rates) / rounds.median(clean_rates)
    lost = sum(r["lost"] for r in hostile + clean)
    return {
        "honest_terminals": HONEST,
        "hostile_terminals": HOSTILE,
        "hostile_with_valid_keys": HOSTILE_WITH_KEYS,
        "honest_events_per_run": HONEST * EVENTS_PER_TERMINAL,
        "hostile_messages_per_run": round(
            statistics.median(r["hostile_messages"] for r in hostile)
        ),
        "rounds": ROUNDS,
        **rounds.figure("good_events_per_s", good_rates, digits=0),
        **rounds.figure("clean_events_per_s", clean_rates, digits=0),
        **rounds.ratio_of_medians("ratio_to_clean", good_rates, clean_rates, digits=3),
        "good_lost": lost,
        "hostile_accepted": accepted,
        "hostile_refused_per_run": round(statistics.median(r["refused"] for r in hostile)),
        "rate_limited_per_run": round(statistics.median(r["rate_limited"] for r in hostile)),
        "goal": "ratio_to_clean >= 0.8, good_lost 0, hostile_accepted 0",
        "goal_met": ratio >= 0.8 and lost == 0 and accepted == 0,
    }
