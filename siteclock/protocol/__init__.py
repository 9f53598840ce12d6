"""The wire contract between terminal and gateway.

This is the only module that knows how an attendance event, an acknowledgement, a roster
or a terminal status looks on the wire. The terminal and the gateway both import it; neither
copies it. ``docs/protocol.md`` is its prose twin: change one, change the other.

Canonical bytes are deterministic CBOR (RFC 8949 section 4.2, "core deterministic encoding"):
integers stay integers (nanosecond timestamps do not fit JSON's 2**53), byte strings stay bytes
(hashes, signatures), map keys are sorted by the encoder, and the C-accelerated ``cbor2`` makes
it cheap on a Raspberry Pi. The bytes that were signed are shipped and stored as they are and
never re-serialised, so a signature checked today still checks in ten years.

Example::

    signer = Ed25519Signer.generate()  # from siteclock.keys
    signed = sign_event(event, signer)
    payload = encode_batch([signed])
    [received] = decode_batch(payload)
    verify_event(received, {signer.kid: signer.public_key_bytes()})

The contract is split by topic (limits, topics, signatures, envelope, events, acks, roster,
status) so no module does several jobs; this package re-exports every public name, so
``from siteclock import protocol as p; p.Event`` is how both sides use it. Private keys are
not part of the contract: signers and key files live in :mod:`siteclock.keys`.
"""

from siteclock.protocol.acks import (
    Ack,
    Outcome,
    Verdict,
)
from siteclock.protocol.envelope import (
    COSE_ALG_IDS,
    COSE_SIGN1_ENVELOPE,
    COSE_SIGN1_TAG,
    LEGACY_ENVELOPE,
    Envelope,
    canonical,
    check_cbor,
    seal,
)
from siteclock.protocol.events import (
    NON_ATTENDANCE_FLAGS,
    ClockState,
    Event,
    Flag,
    Kind,
    SignedEvent,
    decode_batch,
    encode_batch,
    sign_event,
    verify_chain,
    verify_event,
)
from siteclock.protocol.limits import (
    BADGE_RE,
    GENESIS_HASH,
    HASH_SIZE,
    INT64_MAX,
    MAX_BATCH_EVENTS,
    MAX_CBOR_DEPTH,
    MAX_EVENT_BODY_BYTES,
    MAX_FLAGS,
    MAX_JSON_INT_DIGITS,
    MAX_PAYLOAD_BYTES,
    MAX_STATUS_BYTES,
    MAX_STATUS_DEPTH,
    MAX_TEXT,
    MAXERROR_US_RANGE,
    NS_RANGE,
    PROTOCOL_VERSION,
    RESERVED_TERMINAL_PREFIX,
    SEQ_RANGE,
    TERMINAL_ID_RE,
    WORKPLACE_RE,
    BadSignature,
    ChainBroken,
    MalformedMessage,
    ProtocolError,
    TooLarge,
    UnknownKey,
    check_badge,
    check_int,
    check_terminal_id,
    check_text,
    check_workplace,
)
from siteclock.protocol.roster import (
    DayEntry,
    Roster,
    RosterEntry,
    decode_roster,
    encode_roster,
)
from siteclock.protocol.signatures import (
    ALGORITHMS,
    SignatureAlgorithm,
    Signer,
    key_id,
)
from siteclock.protocol.status import (
    CLOCK_PROOF_FIELD,
    ClockProof,
    attach_clock_proof,
    decode_status,
    encode_status,
    verify_clock_proof,
)
from siteclock.protocol.topics import (
    TOPIC_ROOT,
    Channel,
    parse_topic,
    subscription,
    topic,
)

__all__ = [
    "ALGORITHMS",
    "BADGE_RE",
    "CLOCK_PROOF_FIELD",
    "COSE_ALG_IDS",
    "COSE_SIGN1_ENVELOPE",
    "COSE_SIGN1_TAG",
    "GENESIS_HASH",
    "HASH_SIZE",
    "INT64_MAX",
    "LEGACY_ENVELOPE",
    "MAXERROR_US_RANGE",
    "MAX_BATCH_EVENTS",
    "MAX_CBOR_DEPTH",
    "MAX_EVENT_BODY_BYTES",
    "MAX_FLAGS",
    "MAX_JSON_INT_DIGITS",
    "MAX_PAYLOAD_BYTES",
    "MAX_STATUS_BYTES",
    "MAX_STATUS_DEPTH",
    "MAX_TEXT",
    "NON_ATTENDANCE_FLAGS",
    "NS_RANGE",
    "PROTOCOL_VERSION",
    "RESERVED_TERMINAL_PREFIX",
    "SEQ_RANGE",
    "TERMINAL_ID_RE",
    "TOPIC_ROOT",
    "WORKPLACE_RE",
    "Ack",
    "BadSignature",
    "ChainBroken",
    "Channel",
    "ClockProof",
    "ClockState",
    "DayEntry",
    "Envelope",
    "Event",
    "Flag",
    "Kind",
    "MalformedMessage",
    "Outcome",
    "ProtocolError",
    "Roster",
    "RosterEntry",
    "SignatureAlgorithm",
    "SignedEvent",
    "Signer",
    "TooLarge",
    "UnknownKey",
    "Verdict",
    "attach_clock_proof",
    "canonical",
    "check_badge",
    "check_cbor",
    "check_int",
    "check_terminal_id",
    "check_text",
    "check_workplace",
    "decode_batch",
    "decode_roster",
    "decode_status",
    "encode_batch",
    "encode_roster",
    "encode_status",
    "key_id",
    "parse_topic",
    "seal",
    "sign_event",
    "subscription",
    "topic",
    "verify_chain",
    "verify_clock_proof",
    "verify_event",
]
