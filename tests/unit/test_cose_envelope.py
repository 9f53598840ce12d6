"""Events travel as RFC 9052 COSE_Sign1 (envelope version 2); version 1 envelopes still verify.

An independent COSE library (pycose, a dev-only pin) checks our messages: the proof that an
inspector's own tools can verify an exported event without this project's code.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycose.keys.curves import P256, Ed25519
from pycose.keys.ec2 import EC2Key
from pycose.keys.okp import OKPKey
from pycose.messages import Sign1Message

from siteclock import protocol as p
from siteclock.keys import EcdsaP256Signer, Ed25519Signer
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.outbox_file import SCHEMA

SITE = "1Y101DRUNWB5Z"
CLOCK = p.ClockState(synced=True, maxerror_us=12_000, source="adjtimex")


def _event(seq: int = 1, prev: bytes = p.GENESIS_HASH) -> p.Event:
    return p.Event("term-01", SITE, seq, prev, f"ev-{seq}", p.Kind.IN, "nfc-a:04A1B2C3",
                   1_700_000_000_000_000_000 + seq, "b0", seq * 1000, CLOCK)  # fmt: skip


def _pycose_decode(message: bytes) -> Sign1Message:
    """pycose 1.1's own ``decode`` expects the tag's content as a list, and cbor2 6 hands
    tagged content over frozen (a tuple, a frozendict); so the tag is checked here, the
    untagged array decoded plainly and given to pycose's own parser (header decoding and
    signature checking stay pycose's)."""
    tagged = cbor2.loads(message)
    assert isinstance(tagged, cbor2.CBORTag)
    assert tagged.tag == Sign1Message.cbor_tag == p.COSE_SIGN1_TAG
    assert message[0] == 0xC0 | p.COSE_SIGN1_TAG  # the tag is the first byte alone
    return Sign1Message.from_cose_obj(cbor2.loads(message[1:]), allow_unknown_attributes=False)


def _pycose_key(signer: p.Signer) -> OKPKey | EC2Key:
    public = signer.public_key_bytes()
    if signer.alg == "ed25519":
        return OKPKey(crv=Ed25519, x=public)
    return EC2Key(crv=P256, x=public[1:33], y=public[33:65])  # X9.62 uncompressed: 04||x||y


@pytest.mark.parametrize("signer", [Ed25519Signer.generate(), EcdsaP256Signer.generate()],
                         ids=["ed25519", "es256"])  # fmt: skip
def test_an_independent_cose_library_verifies_a_signed_event(signer: p.Signer) -> None:
    signed = p.sign_event(_event(), signer)
    assert signed.envelope.version == p.COSE_SIGN1_ENVELOPE
    message = _pycose_decode(signed.envelope.to_cose_sign1())
    message.key = _pycose_key(signer)
    assert message.verify_signature()
    assert message.payload == signed.envelope.body
    assert p.Event.from_bytes(message.payload) == _event()
    # and the other way round: pycose reads what it was given, a changed payload fails
    tampered = bytearray(signed.envelope.to_cose_sign1())
    tampered[-70] ^= 0x01  # inside the payload, before the 64-byte signature
    forged = _pycose_decode(bytes(tampered))
    forged.key = _pycose_key(signer)
    assert not forged.verify_signature()


def test_a_message_signed_by_pycose_verifies_here() -> None:
    """Nothing private to this project: a COSE_Sign1 made by another library is accepted."""
    signer = Ed25519Signer.generate()
    private = signer.private_bytes()
    body = _event().canonical_bytes()
    message = Sign1Message(phdr={1: -8, 4: signer.kid.encode()}, payload=body)
    message.key = OKPKey(crv=Ed25519, x=signer.public_key_bytes(), d=private)
    envelope = p.Envelope.from_cose_sign1(message.encode())
    envelope.verify({signer.kid: signer.public_key_bytes()})
    assert envelope.body == body


def test_version_1_envelopes_of_older_terminals_still_verify_in_a_mixed_batch() -> None:
    signer = Ed25519Signer.generate()
    keys = {signer.kid: signer.public_key_bytes()}
    old = p.SignedEvent(p.seal(_event(1).canonical_bytes(), signer))  # version 1, as before
    new = p.sign_event(_event(2, old.digest), signer)
    assert old.envelope.version == p.LEGACY_ENVELOPE
    payload = p.encode_batch([old, new])
    decoded = p.decode_batch(payload)
    assert [s.envelope.version for s in decoded] == [1, 2]
    assert p.verify_chain(decoded, keys) == 2


def test_a_signature_moved_to_the_other_version_fails() -> None:
    signer = Ed25519Signer.generate()
    keys = {signer.kid: signer.public_key_bytes()}
    env = p.sign_event(_event(), signer).envelope
    as_v1 = p.Envelope(env.body, env.alg, env.kid, env.sig, p.LEGACY_ENVELOPE)
    with pytest.raises(p.BadSignature):
        as_v1.verify(keys)
    old = p.seal(env.body, signer)
    as_v2 = p.Envelope(old.body, old.alg, old.kid, old.sig, p.COSE_SIGN1_ENVELOPE)
    with pytest.raises(p.BadSignature):
        as_v2.verify(keys)


@pytest.mark.parametrize(("bad", "why"), [
    ([b"\xa0", {}, b"x", b"s"], "exactly alg"),
    ([cbor2.dumps({4: b"k", 1: -8}), {}, b"x", b"s"], "deterministic"),  # keys out of order
    ([cbor2.dumps({1: -8, 4: b"k"}), {5: b"iv"}, b"x", b"s"], "unprotected"),
    ([cbor2.dumps({1: -35, 4: b"k"}), {}, b"x", b"s"], "not supported"),
    ([cbor2.dumps({1: -8, 4: b"k"}), {}, b"x"], "4 members"),
    ([cbor2.dumps({1: [-8], 4: b"k"}), {}, b"x", b"s"], "not supported"),  # unhashable alg
    ([cbor2.dumps({1: -8, 4: "k"}), {}, b"x", b"s"], "ASCII bytes"),
])  # fmt: skip
def test_a_cose_envelope_outside_the_profile_is_refused(bad: list, why: str) -> None:
    with pytest.raises(p.MalformedMessage, match=why):
        p.Envelope.from_wire(bad)


def test_an_outbox_made_before_cose_keeps_its_version_1_events_verifiable(tmp_path: Path) -> None:
    signer = Ed25519Signer.generate()
    path = tmp_path / "outbox.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA.replace(
        "    envelope INTEGER NOT NULL DEFAULT 1, -- what sig covers: 1 the body, 2 COSE_Sign1\n",
        "",
    ))  # fmt: skip
    assert "envelope" not in {r[1] for r in conn.execute("PRAGMA table_info(events)")}
    old = p.SignedEvent(p.seal(_event(1).canonical_bytes(), signer))
    env = old.envelope
    conn.execute(
        "INSERT INTO events (seq, event_id, badge, kind, body, alg, kid, sig, digest, wall_ns)"
        " VALUES (1, 'ev-1', 'nfc-a:04A1B2C3', 'in', ?, ?, ?, ?, ?, 1)",
        (env.body, env.alg, env.kid, env.sig, old.digest),
    )
    conn.execute("UPDATE head SET last_seq = 1, last_digest = ? WHERE id = 1", (old.digest,))
    conn.commit()
    conn.close()
    outbox = Outbox(path, signer=signer, terminal_id="term-01", workplace=SITE)
    try:
        outbox.append(kind=p.Kind.IN, badge="nfc-a:04A1B2C3", clock=CLOCK)
        pending = outbox.unsent()
        assert [s.envelope.version for s in pending] == [1, 2]
        keys = {signer.kid: signer.public_key_bytes()}
        assert p.verify_chain(pending, keys) == 2
    finally:
        outbox.close()


header_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.binary(max_size=8)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.integers(-9, 9), inner,
                                                                max_size=3),
    max_leaves=6,
)  # fmt: skip


@given(
    header=st.dictionaries(st.integers(-9, 9) | st.text(max_size=3), header_values, max_size=4),
    unprotected=header_values, payload=st.binary(max_size=40), sig=st.binary(max_size=70),
)  # fmt: skip
def test_any_cose_shaped_input_is_refused_with_a_protocol_error_or_read_exactly(
    header: dict, unprotected: object, payload: bytes, sig: bytes
) -> None:
    protected = cbor2.dumps(header)
    try:
        envelope = p.Envelope.from_wire([protected, unprotected, payload, sig])
    except p.ProtocolError:
        return  # refused with the protocol's own error, never anything else
    # accepted only when it is exactly our profile: the header rebuilds byte for byte
    assert envelope.version == p.COSE_SIGN1_ENVELOPE
    assert envelope.protected_header() == protected
    assert unprotected == {}
    assert (envelope.body, envelope.sig) == (payload, sig)
