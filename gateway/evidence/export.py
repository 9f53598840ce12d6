"""Build an evidence export: one worker's signed events on one workplace in a period.

The export holds, for the employer's correction request or an inspection: the worker (with the
INSS: the employer is entitled to it here, and only here), the workplace and period, every
stored event as the terminal signed it (COSE_Sign1, or a version 1 envelope of an older
terminal), the public keys of the terminals that signed them, the NSSO's id, verdict, remarks
and problem details of each, and the verification report. JSON is for machines (sealed, checked
by ``siteclock evidence verify``); CSV is the same events for people.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from siteclock import __version__
from siteclock.gateway.db import GatewayDB
from siteclock.gateway.evidence.check import event_problems, verification_report
from siteclock.gateway.evidence.document import b64, seal_document
from siteclock.gateway.registry import Registry
from siteclock.gateway.site_time import local_iso
from siteclock.protocol import COSE_SIGN1_ENVELOPE, Envelope, Event, Signer


class NothingToExport(LookupError):
    """The selection names no known worker."""


def _envelope_entry(row: Any) -> dict[str, Any]:
    envelope = Envelope(bytes(row["body"]), row["alg"], row["kid"], bytes(row["sig"]),
                        row["envelope"])  # fmt: skip
    if envelope.version == COSE_SIGN1_ENVELOPE:
        return {"version": envelope.version, "cose_sign1": b64(envelope.to_cose_sign1())}
    return {"version": envelope.version, "alg": envelope.alg, "kid": envelope.kid,
            "body": b64(envelope.body), "sig": b64(envelope.sig)}  # fmt: skip


def _event_entry(row: Any) -> dict[str, Any]:
    event = Event.from_bytes(bytes(row["body"]))  # its link to the event before it
    problem = json.loads(row["problem"]) if row["problem"] else None
    return {
        "terminal": row["terminal"],
        "seq": row["seq"],
        "event_id": row["event_id"],
        "kind": row["kind"],
        "badge": row["badge"],
        "flags": sorted(json.loads(row["flags"])),
        "wall_ns": row["wall_ns"],
        "time": local_iso(row["wall_ns"]),
        "corrected_wall_ns": row["corrected_wall_ns"],
        "corrected_time": local_iso(row["corrected_wall_ns"]),
        "clock_note": row["clock_note"],
        "received_ns": row["received_ns"],
        "digest": bytes(row["digest"]).hex(),
        "prev": event.prev_hash.hex(),
        "envelope": _envelope_entry(row),
        "nsso": {
            "state": row["state"],
            "id": row["ciao_id"],
            "validity": row["validity"],
            "remarks": json.loads(row["remarks"]) if row["remarks"] else [],
            "registration_date": row["reg_date"],
            "type": row["ciao_type"],
            "problem": problem,
        },
    }


def build_evidence(
    db: GatewayDB, registry: Registry, *, worker_ref: str, workplace: str, from_ns: int,
    to_ns: int, now_ns: int,
) -> dict[str, Any]:  # fmt: skip
    """The evidence of ``worker_ref`` on ``workplace`` for ``from_ns <= wall_ns < to_ns``, with
    its verification report."""
    worker = registry.worker(worker_ref)
    if worker is None:
        raise NothingToExport(f"no worker with reference {worker_ref!r}")
    db.index_inbox_by_badge()  # a worker's taps by badge and time, never a scan of the inbox
    badges = db.badges_of_worker(worker_ref)
    rows = db.evidence_events(worker_ref, badges, workplace, from_ns, to_ns)
    terminals = sorted({r["terminal"] for r in rows})
    evidence: dict[str, Any] = {
        "generated_at": local_iso(now_ns),
        "generator": f"siteclock {__version__}",
        "worker": {
            "ref": worker.worker_ref,
            "name": worker.name,
            "inss": worker.inss.reveal(),  # the employer's own evidence: the one place for it
            "employer": {"id": worker.employer.id, "kind": str(worker.employer.kind)},
            "badges": badges,
        },
        "workplace": workplace,
        "period": {"from": local_iso(from_ns), "to": local_iso(to_ns),
                   "from_ns": from_ns, "to_ns": to_ns},
        "terminal_keys": [
            {"terminal": k["terminal"], "kid": k["kid"], "alg": k["alg"],
             "public_key": bytes(k["public_key"]).hex(), "valid_from_ns": k["valid_from_ns"],
             "revoked_at_ns": k["revoked_at_ns"]}
            for k in db.terminal_key_rows(terminals)
        ],
        "events": [_event_entry(r) for r in rows],
    }
    evidence["report"] = verification_report(evidence)
    return evidence


def export_json(evidence: dict[str, Any], signer: Signer) -> bytes:
    """The sealed JSON file (see :mod:`.document`)."""
    return seal_document(evidence, signer)


CSV_COLUMNS = (
    "time", "kind", "worker_ref", "worker_name", "inss", "employer", "workplace", "terminal",
    "seq", "badge", "flags", "corrected_time", "clock_note", "nsso_state", "nsso_id",
    "validity", "remarks", "checked", "envelope", "digest", "signed_event_base64",
)  # fmt: skip


def export_csv(evidence: dict[str, Any]) -> str:
    """The events for people: one row each, the signed event kept in the last column."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    worker = evidence["worker"]
    for e in evidence["events"]:
        problems, _ = event_problems(e, evidence)
        env = e["envelope"]
        signed = env.get("cose_sign1") or env.get("body", "")
        nsso = e["nsso"]
        writer.writerow([
            e["time"], e["kind"], worker["ref"], worker["name"], worker["inss"],
            worker["employer"]["id"], evidence["workplace"], e["terminal"], e["seq"],
            e["badge"], " ".join(e["flags"]), e["corrected_time"] or "", e["clock_note"] or "",
            nsso["state"] or "", nsso["id"] or "", nsso["validity"] or "",
            json.dumps(nsso["remarks"]) if nsso["remarks"] else "",
            "signature ok" if not problems else "FAILED: " + "; ".join(problems),
            "COSE_Sign1" if env["version"] == COSE_SIGN1_ENVELOPE else "version 1",
            e["digest"], signed,
        ])  # fmt: skip
    return out.getvalue()
