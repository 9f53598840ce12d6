"""The verification report: every exported event checked on its own, offline.

Each event's envelope is verified with the key of its terminal that the file lists; its body
is decoded and compared with what the file says about it in clear (time, kind, badge...);
its time, workplace and badge must fall in the export's selection; and wherever two events of
one terminal have consecutive sequence numbers the hash chain must link them. The same function
writes the report into an export and re-checks it in ``siteclock evidence verify``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from siteclock.gateway.evidence.document import EvidenceInvalid, unb64
from siteclock.protocol import (
    COSE_SIGN1_ENVELOPE,
    LEGACY_ENVELOPE,
    Envelope,
    Event,
    ProtocolError,
)

INTACT, FAILED = "intact", "FAILED"


def envelope_of(entry: dict[str, Any]) -> Envelope:
    """The signed envelope an exported event carries, in either version."""
    raw = entry.get("envelope")
    if not isinstance(raw, dict):
        raise EvidenceInvalid("an event has no envelope")
    if raw.get("version") == COSE_SIGN1_ENVELOPE:
        return Envelope.from_cose_sign1(unb64(raw.get("cose_sign1"), "a COSE_Sign1"))
    if raw.get("version") == LEGACY_ENVELOPE:
        return Envelope.from_wire({"body": unb64(raw.get("body"), "an event body"),
                                   "alg": raw.get("alg"), "kid": raw.get("kid"),
                                   "sig": unb64(raw.get("sig"), "a signature")})  # fmt: skip
    raise EvidenceInvalid(f"an event has envelope version {raw.get('version')!r}")


def _keys(evidence: dict[str, Any]) -> dict[tuple[str, str], tuple[str, bytes]]:
    found = {}
    for key in evidence.get("terminal_keys", []):
        found[(key["terminal"], key["kid"])] = (key["alg"], bytes.fromhex(key["public_key"]))
    return found


def event_problems(
    entry: dict[str, Any], evidence: dict[str, Any],
    keys: dict[tuple[str, str], tuple[str, bytes]] | None = None,
) -> tuple[list[str], Envelope | None]:
    """What is wrong with one exported event (nothing: ``[]``) and its verified envelope."""
    keys = _keys(evidence) if keys is None else keys
    where = f"{entry.get('terminal')}:{entry.get('seq')}"
    try:
        envelope = envelope_of(entry)
        alg, public = keys.get((str(entry.get("terminal")), envelope.kid), (None, b""))
        if alg is None:
            return [f"{where}: the key {envelope.kid} of its terminal is not in the file"], None
        if alg != envelope.alg:
            return [f"{where}: signed with {envelope.alg}, its key is {alg}"], None
        envelope.verify({envelope.kid: public})
        event = Event.from_bytes(envelope.body)
    except (ProtocolError, EvidenceInvalid, ValueError) as exc:
        return [f"{where}: {exc}"], None
    said = {"terminal": event.terminal_id, "seq": event.seq, "event_id": event.event_id,
            "kind": str(event.kind), "badge": event.badge, "wall_ns": event.wall_ns,
            "flags": sorted(event.flags), "prev": event.prev_hash.hex(),
            "digest": hashlib.sha256(envelope.body).hexdigest()}  # fmt: skip
    problems = [f"{where}: {name} says {entry.get(name)!r}, the signed event {value!r}"
                for name, value in said.items() if entry.get(name) != value]  # fmt: skip
    period = evidence.get("period", {})
    if event.workplace != evidence.get("workplace"):
        problems.append(f"{where}: signed on workplace {event.workplace}, not this one")
    if not period.get("from_ns", 0) <= event.wall_ns < period.get("to_ns", 0):
        problems.append(f"{where}: its time is outside the exported period")
    if event.badge not in evidence.get("worker", {}).get("badges", []):
        problems.append(f"{where}: badge {event.badge} is not one of the worker's")
    return problems, envelope


def verification_report(evidence: dict[str, Any]) -> dict[str, Any]:
    """Check every event of ``evidence`` (its ``report`` aside) and say what was found. Content
    that is not in this format (a field missing, a key that is not hex...) fails the report
    with the reason; it never raises."""
    try:
        return _report(evidence)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return {"events": 0, "signatures_verified": 0, "envelopes": {}, "chain_links_checked": 0,
                "nsso_states": {}, "result": FAILED,
                "problems": [f"the evidence is not in this format: {exc!r}"]}  # fmt: skip


def _report(evidence: dict[str, Any]) -> dict[str, Any]:
    keys = _keys(evidence)
    problems: list[str] = []
    versions: Counter[str] = Counter()
    verified, links = 0, 0
    last_of: dict[str, dict[str, Any]] = {}
    for entry in sorted(evidence.get("events", []), key=lambda e: (e["terminal"], e["seq"])):
        found, envelope = event_problems(entry, evidence, keys)
        problems += found
        if envelope is not None:
            verified += 1
            versions["cose_sign1" if envelope.version == COSE_SIGN1_ENVELOPE else "legacy"] += 1
        before = last_of.get(entry["terminal"])
        if before is not None and before["seq"] + 1 == entry["seq"]:
            links += 1
            if entry.get("prev") != before.get("digest"):
                problems.append(f"{entry['terminal']}:{entry['seq']}: does not link to the "
                                "event before it")  # fmt: skip
        last_of[entry["terminal"]] = entry
    nsso = Counter(str((e.get("nsso") or {}).get("state")) for e in evidence.get("events", []))
    return {
        "events": len(evidence.get("events", [])),
        "signatures_verified": verified,
        "envelopes": dict(sorted(versions.items())),
        "chain_links_checked": links,
        "nsso_states": dict(sorted(nsso.items())),
        "problems": problems,
        "result": FAILED if problems else INTACT,
    }
