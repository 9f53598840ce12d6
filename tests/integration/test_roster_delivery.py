"""The roster reaches the right terminals, and only them.

Real parts throughout: Mosquitto with the site's generated configuration (TLS, passwords,
ACL), a running :class:`gateway.service.Gateway` (intake and roster loop, no relay), the
employer's ``siteclock workers`` commands on the gateway's SQLite file, and two terminals, each
its own outbox, :class:`terminal.uplink.Uplink` and :class:`terminal.capture.Capture`, bound
to two different workplaces. A worker assigned to workplace 1 is greeted by name on terminal 1
and unknown on terminal 2; blocking the badge reaches terminal 1 as a ``blocked`` answer.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.identifiers import enterprise_check_digits, inss_check_digits
from siteclock.gateway.service import Gateway
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.hw.base import BadgeRead
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Roster
from siteclock.provisioning.cli import workers_cli
from siteclock.terminal.capture import Capture, TapResult
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.uplink import Uplink
from tests.support.mosquitto import gateway_config, running_broker, terminal_config
from tests.support.waiting import wait_for

WP1, WP2 = "1Y1003SQ5VSSZ", "2Y1003SQ5VSSZ"
T1, T2 = "t-roster-01", "t-roster-02"
INSS = "850101123" + inss_check_digits("850101123")
EMPLOYER = "04035742" + enterprise_check_digits("04035742")
BADGE = "nfc-a:04A1B2C3"


@dataclass
class SiteTerminal:
    outbox: Outbox
    capture: Capture
    uplink: Uplink
    rosters: list[Roster] = field(default_factory=list)
    """Every verified roster the uplink handed over, in order (what the test waits on)."""

    def receive(self, roster: Roster) -> None:
        self.rosters.append(roster)
        self.capture.apply_roster(roster)

    def roster_with(self, predicate: Callable[[Roster], bool]) -> Roster | None:
        return next((r for r in reversed(self.rosters) if predicate(r)), None)

    def tap(self, badge: str) -> TapResult:
        return self.capture.tap(BadgeRead(badge, time.monotonic_ns()))


@dataclass
class Site:
    db: Path
    gateway: Gateway
    terminals: dict[str, SiteTerminal]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with running_broker(tmp_path / "broker", terminals=[T1, T2]) as broker:
        db = tmp_path / "gateway.db"
        keys_file = tmp_path / "gateway-keys.json"
        cfg = GatewayConfig(
            db=db, signing_key_file=tmp_path / "gateway-signing.key",
            gateway_keys_file=keys_file, mqtt=gateway_config(broker), roster_check_s=0.1,
            ciao=None, inss_key_file=inss_key(tmp_path),
        )  # fmt: skip
        registry = TerminalRegistry(db)
        terminals: dict[str, SiteTerminal] = {}
        gateway = Gateway(cfg)  # writes the gateway's public key for the terminals
        for terminal_id, workplace in ((T1, WP1), (T2, WP2)):
            signer = Ed25519Signer.generate()
            registry.register(terminal_id, workplace, public_key=signer.public_key_bytes())
            box = Outbox(tmp_path / f"{terminal_id}.db", signer=signer,
                         terminal_id=terminal_id, workplace=workplace)  # fmt: skip
            capture = Capture(box)
            uplink = Uplink(
                terminal_config(broker, terminal_id, gateway_keys_file=keys_file),
                terminal_id=terminal_id, outbox=box, status=dict,
                on_roster=lambda r, t=terminal_id: terminals[t].receive(r),
            )  # fmt: skip
            terminals[terminal_id] = SiteTerminal(box, capture, uplink)
            uplink.start()
        gateway.start(wait_s=10.0)
        try:
            yield Site(db, gateway, terminals)
        finally:
            gateway.stop()
            for t in terminals.values():
                t.uplink.stop()
                t.outbox.close()


def inss_key(root: Path) -> Path:
    """The INSS key in its own directory, apart from the database (as on a real gateway)."""
    (root / "keys").mkdir(mode=0o700, exist_ok=True)
    return root / "keys" / "inss.key"


def key_args(site: Site) -> list[str]:
    keys = inss_key(site.db.parent)
    return ["--inss-key", str(keys), "--ref-key", str(keys.with_name("worker-ref.key"))]


def inss_file(site: Site) -> str:
    """The INSS in a 0600 file beside the database: never on a command line."""
    path = site.db.with_name("inss.txt")
    path.write_text(INSS + "\n")
    path.chmod(0o600)
    return str(path)


def workers(site: Site, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``siteclock workers --db <gateway db> ...``; returns what it printed."""
    code = workers_cli(["--db", str(site.db), *key_args(site), *argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def has_badge(*, blocked: bool) -> Callable[[Roster], bool]:
    return lambda r: any(e.badge == BADGE and e.blocked is blocked for e in r.entries)


def test_roster_follows_the_workplace_and_carries_blocks(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    t1, t2 = site.terminals[T1], site.terminals[T2]
    # Both terminals get their first (empty) roster: the badge is not yet known anywhere.
    wait_for(lambda: t1.rosters and t2.rosters, "first rosters")
    assert t1.tap(BADGE).pattern == "unknown_badge"

    # The workplace exists first (its terminal's enrolment would have made it): a worker is
    # never put on a workplace the gateway does not know.
    workers(site, capsys, "workplace", "--workplace", WP1, "--coordinates", "50.85, 4.35")
    printed = workers(
        site, capsys, "add", "--inss-file", inss_file(site), "--name", "An Peeters",
        "--employer", EMPLOYER,
        "--workplace", WP1,
    )  # fmt: skip
    match = re.search(r"worker (w-\S+) ", printed)
    assert match, printed
    worker = match.group(1)
    assert INSS not in printed  # the employer's own tool never echoes the INSS
    workers(site, capsys, "link-badge", "--worker", worker, "--uid", BADGE)

    # Terminal 1 (workplace 1) greets the worker by name.
    wait_for(lambda: t1.roster_with(has_badge(blocked=False)), "terminal 1 to get the badge")
    greeted = t1.tap(BADGE)
    assert greeted.pattern == "saved"
    assert greeted.name == "An Peeters"
    # Terminal 2 (workplace 2) never gets the badge: nothing changed on its workplace, so the
    # round that sent terminal 1 its new roster sent terminal 2 nothing (docs/scaling.md).
    linked = t1.roster_with(has_badge(blocked=False))
    assert linked is not None
    assert all(e.worker == worker for e in linked.entries)  # a reference and a name, no INSS
    assert not any(e.badge == BADGE for e in t2.rosters[-1].entries)
    refused = t2.tap(BADGE)
    assert refused.pattern == "unknown_badge"
    assert refused.name is None

    # The badge is lost and blocked: terminal 1 answers "blocked" (and still records the tap).
    workers(site, capsys, "block-badge", BADGE)
    wait_for(lambda: t1.roster_with(has_badge(blocked=True)), "the block to reach terminal 1")
    blocked = t1.tap(BADGE)
    assert blocked.pattern == "blocked"
    assert blocked.signed is not None
    assert "blocked_badge" in blocked.signed.event.flags

    # Every tap reached the gateway, acknowledged; no INSS ever went into a terminal's outbox.
    for term in (t1, t2):
        wait_for(lambda term=term: term.outbox.stats().depth == 0, "taps acknowledged")
        for path in term.outbox.path.parent.glob(term.outbox.path.name + "*"):  # with -wal
            assert INSS.encode() not in path.read_bytes()


def test_a_badge_is_linked_by_tapping_it_on_a_terminal(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    t1 = site.terminals[T1]
    wait_for(lambda: t1.rosters, "first roster")
    # The workplace exists first (its terminal's enrolment would have made it): a worker is
    # never put on a workplace the gateway does not know.
    workers(site, capsys, "workplace", "--workplace", WP1, "--coordinates", "50.85, 4.35")
    printed = workers(
        site, capsys, "add", "--inss-file", inss_file(site), "--name", "An Peeters",
        "--employer", EMPLOYER,
        "--workplace", WP1,
    )  # fmt: skip
    worker = re.search(r"worker (w-\S+) ", printed).group(1)  # type: ignore[union-attr]

    result: dict[str, int] = {}
    argv = [
        "--db", str(site.db), *key_args(site),
        "link-badge", "--worker", worker, "--at", T1, "--timeout", "20",
    ]  # fmt: skip
    waiting = threading.Thread(target=lambda: result.update(code=workers_cli(argv)))
    waiting.start()
    time.sleep(0.5)  # the employer runs the command, then the worker taps
    assert t1.tap(BADGE).pattern == "unknown_badge"
    waiting.join(timeout=30)
    assert result == {"code": 0}
    assert f"badge {BADGE} linked to {worker}" in capsys.readouterr().out

    # The enrolment tap is kept as evidence but claimed: the relay will never send it.
    with sqlite3.connect(site.db) as db:
        state = db.execute(
            "SELECT state FROM registrations WHERE terminal=? AND seq=1", (T1,)
        ).fetchone()
    assert state == ("enrolment",)
    # The roster follows: the next tap is greeted by name.
    wait_for(lambda: t1.roster_with(has_badge(blocked=False)), "terminal 1 to get the badge")
    assert t1.tap(BADGE).name == "An Peeters"


def test_linking_waits_only_so_long(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    # The workplace exists first (its terminal's enrolment would have made it): a worker is
    # never put on a workplace the gateway does not know.
    workers(site, capsys, "workplace", "--workplace", WP1, "--coordinates", "50.85, 4.35")
    printed = workers(
        site, capsys, "add", "--inss-file", inss_file(site), "--name", "An Peeters",
        "--employer", EMPLOYER,
    )  # fmt: skip
    worker = re.search(r"worker (w-\S+) ", printed).group(1)  # type: ignore[union-attr]
    code = workers_cli(["--db", str(site.db), *key_args(site),
                        "link-badge", "--worker", worker, "--at", T2,
                        "--timeout", "0.5"])  # fmt: skip
    assert code != 0
    assert f"no new badge was tapped on {T2}" in capsys.readouterr().err
