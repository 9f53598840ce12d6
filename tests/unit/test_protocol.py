"""The wire contract: round trips, and every tampering is detected."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siteclock import protocol as p
from siteclock.keys import EcdsaP256Signer, Ed25519Signer

SIGNER = Ed25519Signer.generate()
KEYS = {SIGNER.kid: SIGNER.public_key_bytes()}
CLOCK = p.ClockState(synced=True, maxerror_us=12_000, source="adjtimex")

kinds = st.sampled_from(list(p.Kind))
badges = st.builds(
    lambda tech, uid: f"{tech}:{uid.hex().upper()}",
    st.sampled_from(["nfc-a", "em4100", "sim"]),
    st.binary(min_size=4, max_size=10),
)


def make_chain(n: int, signer: p.Signer = SIGNER, kinds_=None, badge="nfc-a:04A1B2C3") -> list:
    prev, out = p.GENESIS_HASH, []
    for seq in range(1, n + 1):
        event = p.Event(
            terminal_id="term-01",
            workplace="1Y101DRUNWB5Z",
            seq=seq,
            prev_hash=prev,
            event_id=f"ev-{seq}",
            kind=(kinds_[seq - 1] if kinds_ else p.Kind.IN),
            badge=badge,
            wall_ns=1_700_000_000_000_000_000 + seq,
            boot_id="b0",
            boot_ns=seq * 1000,
            clock=CLOCK,
        )
        signed = p.sign_event(event, signer)
        out.append(signed)
        prev = signed.digest
    return out


@given(
    kind=kinds,
    badge=badges,
    seq=st.integers(1, 2**62),
    wall=st.integers(*p.NS_RANGE),
    flags=st.lists(st.sampled_from(list(p.Flag)), unique=True),
)
def test_event_round_trips_through_a_batch(kind, badge, seq, wall, flags):
    event = p.Event(
        "term-01",
        "1Y101DRUNWB5Z",
        seq,
        hashlib.sha256(b"x").digest(),
        "id-1",
        kind,
        badge,
        wall,
        "boot",
        5,
        CLOCK,
        tuple(sorted(flags)),
    )
    signed = p.sign_event(event, SIGNER)
    [received] = p.decode_batch(p.encode_batch([signed]))
    assert received.verify(KEYS) == event
    assert received.envelope.body == event.canonical_bytes()


def test_canonical_bytes_do_not_depend_on_construction_order():
    a = p.canonical({"b": 1, "a": [1, 2], "c": {"z": b"\x00", "y": True}})
    b = p.canonical({"c": {"y": True, "z": b"\x00"}, "a": [1, 2], "b": 1})
    assert a == b


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_changed_byte_in_a_payload_is_detected(data):
    payload = p.encode_batch(make_chain(2))
    index = data.draw(st.integers(0, len(payload) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(payload)
    tampered[index] ^= flip

    def decode_and_verify() -> None:
        p.verify_chain(p.decode_batch(bytes(tampered)), KEYS)

    with pytest.raises(p.ProtocolError):
        decode_and_verify()


@given(st.permutations(range(5)))
def test_reordered_events_break_the_chain(order):
    chain = make_chain(5)
    reordered = [chain[i] for i in order]
    if list(order) == sorted(order):
        assert p.verify_chain(reordered, KEYS) == 5
    else:
        with pytest.raises(p.ChainBroken):
            p.verify_chain(reordered, KEYS)


@given(st.integers(0, 4))
def test_a_missing_event_breaks_the_chain(missing):
    chain = make_chain(6)
    del chain[missing]
    with pytest.raises(p.ChainBroken):
        p.verify_chain(chain, KEYS)


def test_chain_can_start_from_a_checkpoint():
    chain = make_chain(5)
    assert p.verify_chain(chain[2:], KEYS, prev_hash=chain[1].digest, first_seq=3) == 3


def test_an_event_signed_by_another_key_is_rejected():
    other = Ed25519Signer.generate()
    chain = make_chain(3)
    forged = make_chain(3, signer=other)
    with pytest.raises(p.UnknownKey):
        forged[0].verify(KEYS)
    # same kid claimed, different key: the signature fails
    env = forged[1].envelope
    impostor = p.SignedEvent(p.Envelope(env.body, env.alg, SIGNER.kid, env.sig))
    with pytest.raises(p.BadSignature):
        impostor.verify(KEYS)
    with pytest.raises(p.ChainBroken):
        p.verify_chain([chain[0], impostor], KEYS)


def test_ecdsa_p256_is_a_drop_in_algorithm():
    signer = EcdsaP256Signer.generate()
    chain = make_chain(3, signer=signer)
    assert p.verify_chain(chain, {signer.kid: signer.public_key_bytes()}) == 3
    env = chain[0].envelope
    bad = p.Envelope(env.body, env.alg, env.kid, bytes(64))
    with pytest.raises(p.BadSignature):
        bad.verify({signer.kid: signer.public_key_bytes()})


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xff",
        cbor2.dumps([1, 2, 3]),
        cbor2.dumps({"v": 2, "events": []}),
        cbor2.dumps({"v": 1, "events": []}),
        cbor2.dumps({"v": 1, "events": [{"body": "x", "alg": "ed25519", "kid": "k", "sig": b""}]}),
        b"\x00" * (p.MAX_PAYLOAD_BYTES + 1),
    ],
)
def test_malformed_payloads_are_rejected_with_a_reason(payload):
    with pytest.raises(p.MalformedMessage) as info:
        p.decode_batch(payload)
    assert info.value.reason == ("too_large" if len(payload) > p.MAX_PAYLOAD_BYTES else "malformed")


def test_event_body_with_wrong_fields_is_malformed():
    [signed] = make_chain(1)
    raw = cbor2.loads(signed.envelope.body)
    for mutate in (
        lambda r: r.pop("badge"),
        lambda r: r.update(extra=1),
        lambda r: r.update(seq=0),
        lambda r: r.update(kind="lunch"),
        lambda r: r.update(workplace="1Y101DRUNWBOZ"),  # 'O' is not allowed
        lambda r: r.update(prev=b"short"),
        lambda r: r.update(wall_ns="1700000000"),
    ):
        copy = dict(raw)
        mutate(copy)
        with pytest.raises(p.MalformedMessage):
            p.Event.from_bytes(p.canonical(copy))


@given(st.sets(st.integers(1, 10_000), max_size=300), st.lists(st.integers(1, 50), max_size=5))
def test_acks_round_trip_and_compress_ranges(stored, verdict_seqs):
    verdicts = tuple(p.Verdict(s, p.Outcome.REJECTED, "DUC IS NOT EXISTING") for s in verdict_seqs)
    ack = p.Ack(stored=tuple(sorted(stored)), verdicts=verdicts)
    again = p.Ack.decode(ack.encode())
    assert again == ack


def test_a_drained_backlog_acks_in_a_few_bytes():
    assert len(p.Ack(stored=tuple(range(1, 100_001))).encode()) < 32


def test_roster_is_verified_and_forgeries_refused():
    gateway = Ed25519Signer.generate()
    roster = p.Roster("term-01", 3, (p.RosterEntry("nfc-a:04A1B2C3", "w-7f3a", "Ana P."),))
    payload = p.encode_roster(roster, gateway)
    assert p.decode_roster(payload, {gateway.kid: gateway.public_key_bytes()}) == roster
    with pytest.raises(p.UnknownKey):
        p.decode_roster(payload, KEYS)
    forged = p.encode_roster(roster, SIGNER)
    with pytest.raises(p.BadSignature):
        p.decode_roster(forged, {SIGNER.kid: gateway.public_key_bytes()})


def test_the_site_view_rides_in_the_roster_and_old_rosters_still_parse():
    entries = (p.RosterEntry("nfc-a:04A1B2C3", "w-7f3a", "Ana P."),)
    day = (p.DayEntry("w-7f3a", p.Kind.BREAK_START, 1_780_000_000 * 10**9),)
    with_day = p.Roster("term-01", 4, entries, day)
    assert p.Roster.from_body(with_day.to_body()) == with_day
    # a roster without a site view is byte for byte what version 1 terminals always got
    old_body = cbor2.dumps(
        {"v": 1, "terminal": "term-01", "version": 3,
         "entries": [["nfc-a:04A1B2C3", "w-7f3a", "Ana P.", False]]},
        canonical=True,
    )  # fmt: skip
    assert p.Roster("term-01", 3, entries).to_body() == old_body
    assert p.Roster.from_body(old_body).day == ()
    # what an older terminal reads of a new roster: the keys it knows, the same entries
    raw = cbor2.loads(with_day.to_body())
    assert [tuple(e) for e in raw["entries"]] == [("nfc-a:04A1B2C3", "w-7f3a", "Ana P.", False)]
    for bad in ([["w-1", "sideways", 5]], [["w-1", "in", -1]], [["w-1", "in"]], [[7, "in", 5]]):
        body = cbor2.dumps({**raw, "day": bad}, canonical=True)
        with pytest.raises(p.MalformedMessage):
            p.Roster.from_body(body)


def test_topics_name_one_terminal_and_one_channel():
    t = p.topic("term-01", p.Channel.EVENTS)
    assert t == "siteclock/v1/term-01/events"
    assert p.parse_topic(t) == ("term-01", p.Channel.EVENTS)
    assert p.subscription(p.Channel.EVENTS, share_group="gw") == "$share/gw/siteclock/v1/+/events"
    for bad in (
        "siteclock/v1/term-01",
        "other/v1/term-01/events",
        "siteclock/v1/+/events",
        "siteclock/v1/term-01/secrets",
        "siteclock/v1/TERM/events",
    ):
        with pytest.raises(p.MalformedMessage):
            p.parse_topic(bad)


def test_status_is_json_with_a_state():
    raw = p.encode_status({"state": "online", "queue_depth": 3})
    assert p.decode_status(raw)["queue_depth"] == 3
    for bad in (b"{", b"[]", b'{"state":"dancing"}', b"\xff"):
        with pytest.raises(p.MalformedMessage):
            p.decode_status(bad)
