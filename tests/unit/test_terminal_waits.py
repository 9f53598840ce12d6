"""Issue 11, Seen 3 and 6 on the terminal: what it waits for is said loudly (log, repeated
and rate-limited), shown in its status (``alerts``, ``waiting_for``), and over when it is.

Seen 3: without the gateway's roster keys every roster was refused with one log line per
roster, workers were not greeted and blocked badges not flagged, and nothing else said so.
Seen 6: a terminal whose clock is not synchronised said nothing while its taps waited.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock.keys import Ed25519Signer
from siteclock.protocol import ClockState, Roster, encode_roster
from siteclock.terminal.config import UplinkConfig
from siteclock.terminal.health import WAIT_REPORT_S, Health
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.uplink import Uplink
from tests.support.clock import ManualClock

TERMINAL = "t-waits-01"
WORKPLACE = "1Y1003SQ5VSSZ"


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(
        tmp_path / "outbox.db", signer=Ed25519Signer.generate(), terminal_id=TERMINAL,
        workplace=WORKPLACE,
    ) as box:  # fmt: skip
        yield box


def uplink(health: Health, outbox: Outbox, keys_file: Path | None) -> Uplink:
    applied: list[Roster] = []
    return Uplink(
        UplinkConfig(gateway_keys_file=keys_file),
        terminal_id=TERMINAL,
        outbox=outbox,
        status=health.snapshot,
        on_roster=applied.append,
        on_roster_refused=health.roster_refused,
    )


def warnings(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


def test_a_terminal_without_roster_keys_says_so_at_start_and_again(
    tmp_path: Path, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen 3: no ``gateway_keys_file``: the alert and the log come at start, not silence."""
    seconds = ManualClock()
    health = Health(outbox, tmp_path, monotonic=seconds)
    with caplog.at_level(logging.WARNING, logger="siteclock.waits"):
        uplink(health, outbox, keys_file=None)
        for _ in range(3):
            health.report_waits()
            seconds.now += WAIT_REPORT_S
    snap = health.snapshot()
    assert "roster_refused" in snap["alerts"]
    assert any("no roster keys" in w for w in snap["waiting_for"])
    said = warnings(caplog, "terminal refuses its rosters")
    assert len(said) == 3  # at start, then once a period
    assert "gateway_keys_file" in said[0].fields["next"]  # type: ignore[attr-defined]


def test_a_roster_signed_by_an_unknown_key_raises_the_alert_until_a_good_one_lands(
    tmp_path: Path, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    gateway, stranger = Ed25519Signer.generate(), Ed25519Signer.generate()
    keys = tmp_path / "gateway-keys.json"
    keys.write_text(json.dumps({gateway.kid: gateway.public_key_bytes().hex()}))
    health = Health(outbox, tmp_path, monotonic=ManualClock())
    link = uplink(health, outbox, keys_file=keys)
    assert "roster_refused" not in health.snapshot()["alerts"]  # keys present: nothing yet

    with caplog.at_level(logging.INFO, logger="siteclock.waits"):
        link._handle_roster(encode_roster(Roster(TERMINAL, 1, ()), stranger))
        snap = health.snapshot()
        assert "roster_refused" in snap["alerts"]
        assert any("roster refused" in w for w in snap["waiting_for"])
        link._handle_roster(encode_roster(Roster(TERMINAL, 2, ()), gateway))
    assert "roster_refused" not in health.snapshot()["alerts"]
    assert health.snapshot()["waiting_for"] == []
    assert warnings(caplog, "terminal refuses its rosters: over")


def test_an_unsynced_clock_is_said_again_while_it_lasts_and_shown_in_the_status(
    tmp_path: Path, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen 6: why the taps wait (the clock), for how long, repeated and rate-limited."""
    seconds = ManualClock()
    state = {"clock": ClockState(synced=False, maxerror_us=16_000_000, source="adjtimex")}
    health = Health(outbox, tmp_path, clock=lambda: state["clock"], monotonic=seconds)
    with caplog.at_level(logging.INFO, logger="siteclock.waits"):
        for _ in range(int(3 * WAIT_REPORT_S / 10)):  # the service's turn: every 10 s
            waiting = health.report_waits()
            seconds.now += 10
        snap = health.snapshot()
        state["clock"] = ClockState(synced=True, maxerror_us=20_000, source="adjtimex")
        health.report_waits()
    said = warnings(caplog, "terminal clock not synchronised")
    assert len(said) == 3  # 18 turns, one line a minute
    assert "max error 16 s" in said[0].fields["cause"]  # type: ignore[attr-defined]
    assert "unsynced_hold_s" in said[0].fields["next"]  # type: ignore[attr-defined]
    assert waiting
    assert "clock not synchronised" in waiting[0]
    assert snap["clock"]["synced"] is False
    assert any("clock not synchronised" in w for w in snap["waiting_for"])
    assert warnings(caplog, "terminal clock not synchronised: over")
    assert health.snapshot()["waiting_for"] == []
