"""10,000+ hostile payloads through a real broker into the real intake, among good events.

A real terminal (Outbox + Uplink) keeps tapping while a second connection, holding the same
terminal's broker credentials (a compromised or buggy terminal), floods its events topic with
malformed, truncated, bit-flipped, forged, wrong-workplace and replayed payloads, and a broker
user the gateway never registered sends well-formed events. The intake must not crash, must
count every bad payload under a reason, and must store every good event exactly once.
The terminal's intake and heartbeat budgets and the per-group admission cap are lifted here so
every payload is judged (all three are tested in test_hostile_intake.py): on a loaded machine one
group can gather more than the cap of one terminal's messages, and a reconnect under the flood
republishes the status; the odd payload was then counted ``rate_limited``.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from siteclock.gateway import intake as intake_module
from siteclock.gateway.intake import Intake
from siteclock.gateway.ratelimit import TerminalBudget
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import (
    GENESIS_HASH,
    Channel,
    ClockState,
    Envelope,
    Event,
    Kind,
    SignedEvent,
    canonical,
    encode_batch,
    sign_event,
    topic,
)
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.uplink import Uplink
from tests.support.mosquitto import (
    MosquittoBroker,
    gateway_config,
    running_broker,
    terminal_config,
)
from tests.support.raw_client import Flooder
from tests.support.waiting import wait_until

WORKPLACE = "1Y1003SQ5VSSZ"
OTHER_WORKPLACE = "2B2003SQ5VSSZ"
CLOCK = ClockState(synced=True, maxerror_us=2000, source="test")
BAD_PER_KIND = 1200  # 9 kinds -> 10,800 hostile payloads
GOOD_BEFORE, GOOD_DURING = 50, 150


def make_event(
    tid: str, seq: int, signer: Ed25519Signer, workplace: str = WORKPLACE
) -> SignedEvent:
    event = Event(
        terminal_id=tid, workplace=workplace, seq=seq, prev_hash=GENESIS_HASH,
        event_id=f"fuzz-{seq}-{random.random()}", kind=Kind.IN, badge="nfc-a:04A1B2C3",
        wall_ns=time.time_ns(), boot_id="boot", boot_ns=1, clock=CLOCK,
    )  # fmt: skip
    return sign_event(event, signer)


def hostile_payloads(
    rng: random.Random, signer: Ed25519Signer, stored: list[SignedEvent]
) -> dict[str, list[bytes]]:
    """Payloads by kind, all for terminal t-a's events topic."""
    tid = "t-a"
    mallory = Ed25519Signer.generate()
    good = [encode_batch([make_event(tid, 10_000 + i, signer)]) for i in range(64)]

    def garbage() -> bytes:
        return rng.randbytes(rng.randint(0, 600))

    def wrong_shapes() -> bytes:
        shapes = [
            {"v": 1, "events": "x"}, {"v": 2, "events": []}, [1, 2, 3], {"v": 1},
            {"v": 1, "events": [{"body": 1, "alg": "ed25519", "kid": "k", "sig": b""}]},
            {"v": 1, "events": [{"body": b"\xa0", "alg": 5, "kid": "k", "sig": b"s"}]},
            {"v": 1, "events": [{}] * 600}, "text", 12, None, {"v": 1, "events": [None]},
        ]  # fmt: skip
        return cbor2.dumps(rng.choice(shapes))

    def truncated() -> bytes:
        payload = rng.choice(good)
        return payload[: rng.randrange(0, len(payload))]

    def bit_flipped() -> bytes:
        raw = bytearray(rng.choice(good))
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return bytes(raw)

    def forged_signature() -> bytes:
        # Mallory signs a valid event but claims the terminal's key id.
        honest = make_event(tid, rng.randint(20_000, 90_000), mallory)
        env = honest.envelope
        return encode_batch([SignedEvent(Envelope(env.body, env.alg, signer.kid, env.sig))])

    def unknown_key() -> bytes:
        return encode_batch([make_event(tid, rng.randint(20_000, 90_000), mallory)])

    def wrong_workplace() -> bytes:
        return encode_batch([make_event(tid, rng.randint(20_000, 90_000), signer, OTHER_WORKPLACE)])

    def replay_conflict() -> bytes:
        # Signed with the terminal's own key (a cloned SD card): a stored seq, different event.
        seq = rng.choice(stored).event.seq
        return encode_batch([make_event(tid, seq, signer)])

    def replay_same() -> bytes:
        return canonical({"v": 1, "events": [rng.choice(stored).envelope.to_wire()]})

    makers = {
        "garbage": garbage, "wrong_shapes": wrong_shapes, "truncated": truncated,
        "bit_flipped": bit_flipped, "forged_signature": forged_signature,
        "unknown_key": unknown_key, "wrong_workplace": wrong_workplace,
        "replay_conflict": replay_conflict, "replay_same": replay_same,
    }  # fmt: skip
    return {kind: [make() for _ in range(BAD_PER_KIND)] for kind, make in makers.items()}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with running_broker(tmp_path / "broker", terminals=["t-a", "t-ghost"]) as b:
        yield b


@pytest.mark.slow
def test_hostile_payloads_are_counted_and_every_good_event_stored(
    tmp_path: Path, broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_module, "ADMIT_PER_GROUP", 10**9)
    rng = random.Random(20260101)
    db = tmp_path / "gateway.db"
    registry, inbox = TerminalRegistry(db), Inbox(db)
    signer = Ed25519Signer.generate()
    registry.register("t-a", WORKPLACE, public_key=signer.public_key_bytes())
    intake = Intake(gateway_config(broker), inbox=inbox, registry=registry)
    intake.budget = TerminalBudget(rate=1e9, burst=1e9)
    # The honest terminal's status messages too: a reconnect under this flood republishes them.
    intake.heartbeats.budget = TerminalBudget(rate=1e9, burst=1e9)
    intake.start()
    box = Outbox(tmp_path / "t-a.db", signer=signer, terminal_id="t-a", workplace=WORKPLACE)
    uplink = Uplink(
        terminal_config(broker, "t-a", resend_after_s=5.0),
        terminal_id="t-a", outbox=box, status=dict, on_roster=lambda r: None,
    )  # fmt: skip
    uplink.start()
    flooder = Flooder(broker, "t-a", "t-a-evil-twin")
    ghost = Flooder(broker, "t-ghost", "t-ghost")
    try:
        first = [
            box.append(kind=Kind.IN, badge="nfc-a:01", clock=CLOCK) for _ in range(GOOD_BEFORE)
        ]
        uplink.wake()
        assert wait_until(lambda: box.stats().depth == 0, timeout=60)
        hostile = hostile_payloads(rng, signer, first)
        total = sum(len(v) for v in hostile.values())
        assert total >= 10_000

        tapping = threading.Thread(
            target=lambda: [
                (box.append(kind=Kind.OUT, badge="nfc-a:02", clock=CLOCK), uplink.wake(),
                 time.sleep(0.01))
                for _ in range(GOOD_DURING)
            ]
        )  # fmt: skip
        tapping.start()
        mixed = [p for payloads in hostile.values() for p in payloads]
        rng.shuffle(mixed)
        flooder.send(topic("t-a", Channel.EVENTS), mixed)
        ghost_payloads = [encode_batch([make_event("t-ghost", i + 1, signer)]) for i in range(100)]
        ghost.send(topic("t-ghost", Channel.EVENTS), ghost_payloads)
        tapping.join()

        refusals = lambda: sum(n for r, n in intake.counters.items() if r != "duplicate")  # noqa: E731
        expected_refusals = total - BAD_PER_KIND + len(ghost_payloads)  # replay_same is re-acked
        assert wait_until(lambda: refusals() >= expected_refusals, timeout=90), intake.counters
        assert wait_until(lambda: box.stats().depth == 0, timeout=60), uplink.counters
    finally:
        flooder.close()
        ghost.close()
        uplink.stop()
        intake.stop()

    counts = Counter(intake.counters)
    assert refusals() == expected_refusals, counts
    assert counts["unknown_terminal"] == len(ghost_payloads)
    # Cheap checks come before the signature: a bit flip in a workplace is wrong_workplace.
    assert counts["wrong_workplace"] >= BAD_PER_KIND
    assert counts["replay"] == BAD_PER_KIND
    assert counts["duplicate"] >= BAD_PER_KIND
    # Forged signatures and unknown keys are counted as such; bit flips and truncations land in
    # malformed / bad_signature / unknown_key, depending on which byte was hit.
    assert counts["unknown_key"] >= BAD_PER_KIND
    assert counts["bad_signature"] >= BAD_PER_KIND
    # garbage, shapes, truncations, some flips (a flip may also make a CBOR tag)
    assert counts["malformed"] + counts["cbor_tag"] >= 3 * BAD_PER_KIND
    assert counts["internal_error"] == 0
    assert set(counts) <= {
        "malformed", "bad_signature", "unknown_key", "wrong_workplace", "replay", "duplicate",
        "unknown_terminal", "cbor_tag", "out_of_range", "too_large", "wrong_terminal",
    }  # fmt: skip
    # Every good event stored once, nothing hostile stored, the first events untouched.
    rows = inbox.rows("t-a")
    assert [seq for seq, _, _ in rows] == list(range(1, GOOD_BEFORE + GOOD_DURING + 1))
    held = {seq: digest for seq, _, digest in rows}
    assert all(held[s.event.seq] == s.digest for s in first)
    assert len(inbox.alerts("seq_conflict")) == BAD_PER_KIND
    assert inbox.alerts("chain_break") == []
    assert inbox.count("t-ghost") == 0
