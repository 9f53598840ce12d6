"""Evidence export: a worker's signed events, keys, NSSO verdicts and a verification report,
sealed; ``siteclock evidence verify`` re-checks it offline and any changed byte fails it."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from siteclock import protocol as p
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.evidence.check import INTACT, verification_report
from siteclock.gateway.evidence.cli import cli
from siteclock.gateway.evidence.document import EvidenceInvalid, open_document
from siteclock.gateway.evidence.export import build_evidence, export_csv, export_json
from siteclock.gateway.registry import Registry
from siteclock.gateway.relay_store import RelayStore
from siteclock.gateway.site_time import day_start_ns
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import create
from tests.support.ciao import make_enterprise, make_inss
from tests.support.inbox import TerminalFeed, insert

SITE, OTHER_SITE = "1Y101DRUNWB5Z", "2Z202DRUNWB5Z"
BADGE, OTHER_BADGE = "nfc-a:04A1B2C3", "nfc-a:0499AA"
INSS = make_inss(17)
NOV_3 = day_start_ns(date(2026, 11, 3))
HOUR = 3600 * 10**9


@pytest.fixture
def site(tmp_path: Path) -> dict:
    """A gateway database with two terminals' events for two workers, one registered and one
    rejected by the NSSO, a version 1 event from before COSE, and the keys to export."""
    db_path = tmp_path / "gateway.db"
    db = SQLiteGatewayDB(db_path)
    registry = Registry(db, tmp_path / "inss.key")
    registry.add_workplace(SITE, latitude=50.85, longitude=4.35)
    registry.add_worker("w-an", "An Peeters", inss=INSS, employer=make_enterprise(1))
    registry.add_worker("w-bo", "Bo Claes", inss=make_inss(18), employer=make_enterprise(1))
    registry.enrol_badge(BADGE, "w-an")
    registry.enrol_badge(OTHER_BADGE, "w-bo")
    lobby, roof = TerminalFeed("t-lobby", SITE), TerminalFeed("t-roof", SITE)
    terminals = TerminalRegistry(db)
    for feed in (lobby, roof):
        terminals.register(feed.terminal_id, SITE, public_key=feed.signer.public_key_bytes())
    # an event signed the old way (version 1), then COSE ones on the same chain
    old = lobby.event("in", BADGE, NOV_3 + 7 * HOUR)
    old = p.SignedEvent(p.seal(old.envelope.body, lobby.signer))
    events = [
        old,
        lobby.event("in", OTHER_BADGE, NOV_3 + 7 * HOUR + 60 * 10**9),
        roof.event("break_start", BADGE, NOV_3 + 12 * HOUR),
        roof.event("break_end", BADGE, NOV_3 + 12 * HOUR + 30 * 60 * 10**9),
        lobby.event("out", BADGE, NOV_3 + 16 * HOUR),
        lobby.event("out", BADGE, NOV_3 + 40 * 24 * HOUR),  # outside the month
    ]
    insert(db_path, events)
    relay = RelayStore(db)
    relay.take_new(1, full=True)
    with relay.tx() as tx:
        relay.update(tx, [("t-lobby", 1), ("t-roof", 1), ("t-roof", 2)], state="registered",
                     ciao_id="ciao-1", validity="valid", worker_ref="w-an")  # fmt: skip
        relay.update(tx, [("t-lobby", 3)], state="refused", validity="invalid",
                     worker_ref="w-an", remarks=json.dumps(["DIMONA_NOT_OK"]),
                     problem=json.dumps({"status": 422, "title": "Dimona not OK"}))  # fmt: skip
    signing_key = tmp_path / "gateway-signing.key"
    signer = create(signing_key)
    yield {"db": db, "registry": registry, "signer": signer, "path": db_path,
           "inss_key": tmp_path / "inss.key", "signing_key": signing_key}  # fmt: skip
    registry.close()
    db.close()


def _november(site: dict, worker: str = "w-an", workplace: str = SITE) -> dict:
    return build_evidence(site["db"], site["registry"], worker_ref=worker, workplace=workplace,
                          from_ns=day_start_ns(date(2026, 11, 1)),
                          to_ns=day_start_ns(date(2026, 12, 1)), now_ns=NOV_3)  # fmt: skip


def test_an_export_holds_the_workers_signed_events_keys_verdicts_and_an_intact_report(
    site: dict,
) -> None:
    evidence = _november(site)
    events = evidence["events"]
    assert [(e["terminal"], e["seq"], e["kind"]) for e in events] == [
        ("t-lobby", 1, "in"), ("t-roof", 1, "break_start"), ("t-roof", 2, "break_end"),
        ("t-lobby", 3, "out"),
    ]  # fmt: skip
    assert evidence["worker"]["inss"] == INSS  # the employer's own evidence
    assert [e["envelope"]["version"] for e in events] == [1, 2, 2, 2]
    assert events[0]["nsso"]["id"] == "ciao-1"
    assert events[3]["nsso"]["remarks"] == ["DIMONA_NOT_OK"]
    assert events[3]["nsso"]["problem"]["title"] == "Dimona not OK"
    assert {k["terminal"] for k in evidence["terminal_keys"]} == {"t-lobby", "t-roof"}
    report = evidence["report"]
    assert report["result"] == INTACT, report["problems"]
    assert report["signatures_verified"] == 4
    assert report["envelopes"] == {"cose_sign1": 3, "legacy": 1}
    assert report["chain_links_checked"] == 1  # roof 1 -> 2; the lobby's 2 is another worker's
    opened = open_document(export_json(evidence, site["signer"]))
    assert opened.evidence == evidence
    assert opened.seal_kid == site["signer"].kid


def test_another_workplace_or_worker_gets_none_of_these_events(site: dict) -> None:
    assert _november(site, workplace=OTHER_SITE)["events"] == []
    assert [e["badge"] for e in _november(site, worker="w-bo")["events"]] == [OTHER_BADGE]


def test_a_changed_byte_at_any_position_makes_verification_fail(site: dict) -> None:
    """Every position, each with a low bit and a letter-case bit flipped, and a random byte."""
    data = export_json(_november(site), site["signer"])
    rng = random.Random(12)
    for pos in range(len(data)):
        for flip in (0x01, 0x20, rng.randrange(1, 256)):
            changed = bytearray(data)
            changed[pos] ^= flip
            try:
                opened = open_document(bytes(changed))
            except EvidenceInvalid:
                continue
            # past the seal only if nothing sealed changed: then the report must fail
            if verification_report(opened.evidence)["result"] == INTACT:
                pytest.fail(f"byte {pos} ^ {flip:#x} went unnoticed")


def test_a_forged_event_fails_the_report_even_when_resealed(site: dict) -> None:
    """Whoever holds the gateway's key can reseal, but not re-sign a terminal's event."""
    evidence = _november(site)
    evidence["events"][1]["kind"] = "in"  # the break start claimed as an arrival
    report = verification_report(evidence)
    assert report["result"] == "FAILED"
    assert any("t-roof:1: kind says 'in'" in problem for problem in report["problems"])


@pytest.mark.parametrize("damage", [
    lambda e: e["terminal_keys"][0].update(public_key="not hex"),
    lambda e: e["events"][0].pop("seq"),
    lambda e: e.update(events="none"),
])  # fmt: skip
def test_content_outside_the_format_fails_the_report_without_raising(site: dict, damage) -> None:
    evidence = _november(site)
    damage(evidence)
    report = verification_report(evidence)
    assert report["result"] == "FAILED"
    assert report["problems"]


def test_the_cli_exports_and_verifies_and_fails_an_edited_file(
    site: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "evidence.json"
    args = ["export", "--db", str(site["path"]), "--inss-key", str(site["inss_key"]),
            "--signing-key", str(site["signing_key"]), "--worker", "w-an", "--workplace", SITE,
            "--from", "2026-11-01", "--to", "2026-11-30", "-o", str(out)]  # fmt: skip
    assert cli(args) == 0
    assert out.stat().st_mode & 0o777 == 0o600  # it holds an INSS
    assert cli(["verify", str(out), "--gateway-kid", site["signer"].kid]) == 0
    assert "result: intact" in capsys.readouterr().out
    assert cli(["verify", str(out), "--gateway-kid", "0000000000000000"]) == 1
    text = out.read_text().replace('"kind":"break_start"', '"kind":"in"', 1)
    out.write_text(text)
    assert cli(["verify", str(out)]) == 1
    assert "the seal does not cover this evidence" in capsys.readouterr().err
    csv_out = tmp_path / "evidence.csv"
    assert cli([*args[:-2], "-o", str(csv_out)]) == 0
    rows = csv_out.read_text().splitlines()
    assert len(rows) == 5
    assert all("signature ok" in r for r in rows[1:])
    by_inss = [INSS if a == "w-an" else a for a in args]
    assert cli(by_inss) == 2  # never by INSS


def test_siteclock_evidence_verify_runs_from_the_command_line(site: dict, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    out.write_bytes(export_json(_november(site), site["signer"]))
    done = subprocess.run([sys.executable, "-m", "siteclock.cli", "evidence", "verify", str(out)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "signatures verified 4" in done.stdout
    assert INSS not in done.stdout + done.stderr  # verify prints no INSS


def test_csv_for_people_names_each_event_and_its_verdict(site: dict) -> None:
    text = export_csv(_november(site))
    assert "2026-11-03T07:00:00.000+01:00" in text
    assert "DIMONA_NOT_OK" in text
    assert "refused" in text
