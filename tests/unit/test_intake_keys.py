"""The intake rereads a terminal's keys when it meets a key id its cache does not know, so a
key added by a rotation is accepted at once, and a flood of made-up key ids cannot turn every
message into a registry query."""

from __future__ import annotations

import time
from pathlib import Path

from siteclock.gateway.config import MqttConfig
from siteclock.gateway.intake import Intake
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import (
    GENESIS_HASH,
    Channel,
    ClockState,
    Event,
    Kind,
    encode_batch,
    sign_event,
    topic,
)

TID, WORKPLACE = "t-keys-01", "1Y1003SQ5VSSZ"


def payload(seq: int, prev: bytes, signer: Ed25519Signer) -> tuple[bytes, bytes]:
    event = Event(TID, WORKPLACE, seq, prev, f"e{seq}", Kind.IN, "nfc-a:04A1B2C3",
                  time.time_ns(), "boot", seq, ClockState(True, 1, "test"))  # fmt: skip
    signed = sign_event(event, signer)
    return encode_batch([signed]), signed.digest


def test_a_new_key_is_accepted_without_waiting_for_the_cache(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    old, new = Ed25519Signer.generate(), Ed25519Signer.generate()
    registry = TerminalRegistry(db)
    registry.register(TID, WORKPLACE, public_key=old.public_key_bytes())
    intake = Intake(MqttConfig(), inbox=Inbox(db), registry=registry)  # never connected
    events = topic(TID, Channel.EVENTS)

    first, digest = payload(1, GENESIS_HASH, old)
    assert intake.handle(events, first).ack_seqs == [1]  # the cache now holds the old key
    registry.add_key(TID, new.public_key_bytes())  # a rotation, seen by another process
    second, _ = payload(2, digest, new)
    # At once: well within KEY_REFRESH_S of the first read, the key count says it is stale.
    assert intake.handle(events, second).ack_seqs == [2]
    assert intake.counters["unknown_key"] == 0


def test_made_up_key_ids_reread_the_registry_at_most_once_a_second(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    real = Ed25519Signer.generate()
    registry = TerminalRegistry(db)
    registry.register(TID, WORKPLACE, public_key=real.public_key_bytes())
    reads = []
    original = registry.get
    registry.get = lambda t: (reads.append(t), original(t))[1]  # type: ignore[method-assign]
    intake = Intake(MqttConfig(), inbox=Inbox(db), registry=registry)
    events = topic(TID, Channel.EVENTS)
    for seq in range(1, 51):
        forged, _ = payload(seq, GENESIS_HASH, Ed25519Signer.generate())
        intake.handle(events, forged)
    assert intake.counters["unknown_key"] == 50
    assert len(reads) <= 2  # the first lookup, and at most one refresh within the second


def test_made_up_key_ids_after_a_real_new_key_reread_once_per_added_key(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    registry = TerminalRegistry(db)
    registry.register(TID, WORKPLACE, public_key=Ed25519Signer.generate().public_key_bytes())
    reads, counts = [], []
    original_get, original_count = registry.get, registry.key_count
    registry.get = lambda t: (reads.append(t), original_get(t))[1]  # type: ignore[method-assign]
    registry.key_count = (  # type: ignore[method-assign]
        lambda t: (counts.append(t), original_count(t))[1]
    )
    intake = Intake(MqttConfig(), inbox=Inbox(db), registry=registry)
    events = topic(TID, Channel.EVENTS)
    intake.handle(events, payload(1, GENESIS_HASH, Ed25519Signer.generate())[0])
    registry.add_key(TID, Ed25519Signer.generate().public_key_bytes())
    for seq in range(2, 42):
        intake.handle(events, payload(seq, GENESIS_HASH, Ed25519Signer.generate())[0])
    assert intake.counters["unknown_key"] == 41
    assert len(counts) == 41  # one cheap key count per unknown key id
    # the first lookup, one reread for the added key (its count changed), at most one more
    # from the once-a-second limit; never one per message
    assert 2 <= len(reads) <= 3
