"""Fuzzing every decoder the gateway exposes to terminal input, with a bounded budget.

Each decoder gets arbitrary bytes, arbitrary CBOR/JSON values (tags, floats, huge and negative
integers, deep nesting) and mutations of real messages. The only acceptable failure is a
:class:`ProtocolError` (a countable reason); anything else would escape the intake's per-message
judgement. The intake itself is then fed the same inputs through :meth:`Intake.handle` and must
never raise, acknowledge or store any of them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siteclock import protocol as p
from siteclock.gateway.config import MqttConfig
from siteclock.gateway.intake import Intake
from siteclock.gateway.ratelimit import TerminalBudget
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer

WORKPLACE = "1Y1003SQ5VSSZ"
SIGNER = Ed25519Signer.generate()
KEYS = {SIGNER.kid: SIGNER.public_key_bytes()}
BUDGET = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
"""About a second per decoder on the project's 2-core machine."""


def real_event(seq: int = 1) -> p.SignedEvent:
    event = p.Event(
        "t-fuzz", WORKPLACE, seq, p.GENESIS_HASH, f"e-{seq}", p.Kind.IN, "nfc-a:04A1B2",
        1_700_000_000 * 10**9, "boot-1", 5 * 10**9, p.ClockState(True, 2000, "ntp"),
    )  # fmt: skip
    return p.sign_event(event, SIGNER)


REAL_BATCH = p.encode_batch([real_event(1), real_event(2)])
REAL_BODY = real_event(3).envelope.body
REAL_STATUS = p.encode_status(
    p.attach_clock_proof(
        {"state": "online", "boot_id": "boot-1", "boot_ns": 1, "wall_ns": 2,
         "clock": p.ClockState(True, 10, "ntp").to_map()},
        "t-fuzz", SIGNER,
    )
)  # fmt: skip

scalars = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.booleans()
    | st.none()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
cbor_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=5)
        | st.builds(cbor2.CBORTag, st.integers(0, 2**16), inner)
    ),
    max_leaves=30,
)
json_values = st.recursive(
    st.integers(-(2**80), 2**80) | st.booleans() | st.none() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


def as_cbor(value: Any) -> bytes:
    return cbor2.dumps(value)


@st.composite
def mutated(draw: st.DrawFn, real: bytes) -> bytes:
    """A real message with a few bytes changed, cut or inserted."""
    data = bytearray(real)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[where] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[where:]
            if not data:
                break
        else:
            data[where:where] = draw(st.binary(min_size=1, max_size=9))
    return bytes(data)


def cbor_inputs(real: bytes) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=300) | cbor_values.map(as_cbor) | mutated(real)


def only_protocol_errors(decode: Callable[[bytes], object], data: bytes) -> None:
    reason = "accepted"
    try:
        decode(data)
    except p.ProtocolError as exc:
        reason = exc.reason
    assert reason  # a refusal always has a countable reason


@BUDGET
@given(cbor_inputs(REAL_BATCH))
def test_decode_batch_raises_only_protocol_errors(data: bytes) -> None:
    only_protocol_errors(p.decode_batch, data)


@BUDGET
@given(cbor_inputs(REAL_BODY))
def test_event_body_decoder_raises_only_protocol_errors(data: bytes) -> None:
    only_protocol_errors(p.Event.from_bytes, data)


@BUDGET
@given(cbor_values)
def test_envelope_and_event_maps_raise_only_protocol_errors(value: Any) -> None:
    only_protocol_errors(lambda _: p.Envelope.from_wire(value), b"")
    only_protocol_errors(lambda _: p.Event.from_map(value), b"")
    only_protocol_errors(lambda _: p.ClockState.from_map(value), b"")


@BUDGET
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())
       | mutated(REAL_STATUS))  # fmt: skip
def test_decode_status_raises_only_protocol_errors(data: bytes) -> None:
    only_protocol_errors(p.decode_status, data)


@BUDGET
@given(cbor_inputs(base64.b64decode(json.loads(REAL_STATUS)[p.CLOCK_PROOF_FIELD])))
def test_clock_proof_decoder_raises_only_protocol_errors(data: bytes) -> None:
    status = {p.CLOCK_PROOF_FIELD: base64.b64encode(data).decode()}
    only_protocol_errors(lambda _: p.verify_clock_proof(status, "t-fuzz", KEYS), b"")
    only_protocol_errors(p.ClockProof.from_body, data)


@BUDGET
@given(st.text(max_size=80) | st.sampled_from(["siteclock/v1/t-fuzz/events\n", "siteclock/v1"]))
def test_parse_topic_raises_only_protocol_errors(name: str) -> None:
    only_protocol_errors(lambda _: p.parse_topic(name), b"")


@BUDGET
@given(cbor_inputs(p.Ack(stored=(1, 2, 3)).encode()))
def test_ack_decoder_raises_only_protocol_errors(data: bytes) -> None:
    only_protocol_errors(p.Ack.decode, data)


def test_a_full_batch_decodes() -> None:
    """The item limit of the CBOR check leaves room for the largest legitimate batch."""
    events = [real_event(seq) for seq in range(1, p.MAX_BATCH_EVENTS + 1)]
    assert len(p.decode_batch(p.encode_batch(events))) == p.MAX_BATCH_EVENTS


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (cbor2.dumps(cbor2.CBORTag(35, "(a+)+$")), "cbor_tag"),
        (cbor2.dumps({"v": 1, "events": [2**64]}), "cbor_tag"),  # a big number is a tag
        (cbor2.dumps(1.5), "malformed"),
        (b"\x9f\xff", "malformed"),  # indefinite-length array
        (b"\x81" * 50 + b"\x00", "malformed"),  # nesting
        (b"\x80\x00", "malformed"),  # trailing bytes
    ],
)
def test_cbor_outside_the_protocol_subset_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(p.MalformedMessage) as info:
        p.decode_batch(data)
    assert info.value.reason == reason


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Intake:
    db = Path(tmp_path_factory.mktemp("fuzz")) / "gateway.db"
    registry = TerminalRegistry(db)
    registry.register("t-fuzz", WORKPLACE, public_key=SIGNER.public_key_bytes())
    gate = Intake(MqttConfig(), inbox=Inbox(db), registry=registry)  # never connected
    unlimited = TerminalBudget(rate=1e9, burst=1e9)
    gate.budget, gate.heartbeat_budget = unlimited, unlimited  # judge every input
    return gate


@BUDGET
@given(
    channel=st.sampled_from([p.Channel.EVENTS, p.Channel.STATUS]),
    data=cbor_inputs(REAL_BATCH) | mutated(REAL_STATUS),
)
def test_the_intake_never_raises_acks_or_stores_hostile_input(
    intake: Intake, channel: p.Channel, data: bytes
) -> None:
    handled = intake.handle(p.topic("t-fuzz", channel), data)
    assert set(handled.ack_seqs) <= {1, 2}  # REAL_BATCH's events, if it is ever drawn
    assert intake.counters["unprocessable"] == 0
    assert intake.counters["internal_error"] == 0
    assert intake.inbox.count() <= 2  # only REAL_BATCH's events could ever be stored
