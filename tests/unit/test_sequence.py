"""The gateway's sequence check: each worker's taps across a site's terminals, in time order."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from siteclock.gateway.registry import Registry
from siteclock.gateway.relay_store import RelayStore
from siteclock.gateway.sequence import (
    FUTURE_SLACK_NS,
    Issue,
    Judgement,
    Prior,
    SequenceCheck,
    SiteDay,
    judge,
)
from siteclock.protocol import DayEntry, Flag, Kind
from siteclock.shift import NS_PER_HOUR, ShiftRule
from tests.support.ciao import make_enterprise, make_inss
from tests.support.inbox import TerminalFeed, create_inbox, insert

H = NS_PER_HOUR
T0 = 1_780_000_000 * 10**9
SITE = "1Y1003SQ5VSSZ"
ANA, BOB = "nfc-a:0A0A0A0A", "nfc-a:0B0B0B0B"
RULE = ShiftRule()


@pytest.mark.parametrize(
    ("prior", "kind", "flags", "sent", "issues"),
    [
        (None, Kind.IN, (), "in", ()),
        (Prior("in", T0 - H), Kind.OUT, (), "out", ()),
        (Prior("in", T0 - H), Kind.BREAK_START, (), "out", ()),
        (Prior("out", T0 - H), Kind.BREAK_END, (), "in", ()),
        # the roof guessed `in` while offline: the lobby's `in` says it was an `out`
        (Prior("in", T0 - H), Kind.IN, (Flag.DIRECTION_GUESS,), "out", (Issue.CORRECTED,)),
        (None, Kind.OUT, (), "in", (Issue.CORRECTED,)),
        # an entry/exit reader is believed, and what does not fit goes to the employer
        (Prior("in", T0 - H), Kind.IN, (Flag.FIXED_DIRECTION,), "in", (Issue.TWO_IN,)),
        (None, Kind.OUT, (Flag.FIXED_DIRECTION,), "out", (Issue.OUT_WITHOUT_IN,)),
        # yesterday's `in` with no `out`: a new shift, the missing `out` is flagged
        (Prior("in", T0 - 20 * H), Kind.OUT, (), "in", (Issue.MISSING_OUT, Issue.CORRECTED)),
        (Prior("in", T0 - 20 * H), Kind.IN, (Flag.MISSING_OUT,), "in", (Issue.MISSING_OUT,)),
        (Prior("out", T0 - 20 * H), Kind.IN, (), "in", ()),
        (Prior("out", T0 - 20 * H), Kind.IN, (Flag.MISSING_OUT,), "in", ()),  # it was there
        # a terminal whose shift ends at midnight: its word ends the shift at the gateway too
        (Prior("in", T0 - 3 * H), Kind.IN, (Flag.MISSING_OUT,), "in", (Issue.MISSING_OUT,)),
        (None, Kind.IN, (Flag.MISSING_OUT,), "in", (Issue.MISSING_OUT,)),
    ],
)
def test_judge_table(prior, kind, flags, sent, issues) -> None:
    assert judge(prior, kind=kind, flags=flags, wall_ns=T0, rule=RULE) == Judgement(sent, issues)


class Gateway:
    """An inbox, a registry and the relay's table; relays batches the way the relay does."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "gateway.db"
        create_inbox(self.db)
        self.registry = Registry(self.db, tmp_path / "inss.key")
        self.registry.add_workplace(SITE, latitude=50.8, longitude=4.3)
        for n, (ref, badge) in enumerate((("w-ana", ANA), ("w-bob", BOB)), start=1):
            self.registry.add_worker(ref, ref, inss=make_inss(n), employer=make_enterprise(1))
            self.registry.enrol_badge(badge, ref)
        self.store = RelayStore(self.db)
        self.check = SequenceCheck(self.store.db)

    def relay(self, events, *, order=None) -> dict[tuple[str, int], tuple[str, tuple[str, ...]]]:
        """Decide ``events`` (already inserted) as one batch; returns {key: (sent, issues)}.
        The gateway's clock is real, as the intake's ``received_ns`` is."""
        now = time.time_ns()
        self.store.take_new(now, full=True)
        rows = [
            {"terminal": e.event.terminal_id, "seq": e.event.seq, "workplace": SITE,
             "kind": str(e.event.kind), "wall_ns": e.event.wall_ns}
            for e in events
        ]  # fmt: skip
        decided = {}
        for row in self.check.start_batch(rows) if order is None else rows:
            worker = self.registry.resolve(self._badge(row))
            sent = self.check.decide(row, worker_ref=worker.worker_ref, wall_ns=row["wall_ns"])
            decided[(row["terminal"], row["seq"])] = sent
        with self.store.tx() as db:
            self.check.commit(db, list(decided), now)
        issues = {(i["terminal"], i["seq"]): tuple(i["issues"]) for i in self.check.issues()}
        return {key: (sent, issues.get(key, ())) for key, sent in decided.items()}

    def _badge(self, row) -> str:
        [found] = self.store.db.select_registrations(keys=[(row["terminal"], row["seq"])])
        return found["badge"]

    def close(self) -> None:
        self.store.close()
        self.registry.close()


@pytest.fixture
def gw(tmp_path: Path):
    g = Gateway(tmp_path)
    yield g
    g.close()


def test_taps_at_two_terminals_are_one_sequence(gw) -> None:
    lobby, roof = TerminalFeed("t-lobby", SITE), TerminalFeed("t-roof", SITE)
    # the roof was offline and guessed: it had never seen Ana
    taps = [lobby.event(Kind.IN, ANA, T0), roof.event(Kind.IN, ANA, T0 + H,
                                                       flags=(Flag.DIRECTION_GUESS,))]  # fmt: skip
    insert(gw.db, taps)
    assert list(gw.relay(taps).values()) == [("in", ()), ("out", (Issue.CORRECTED,))]


def test_a_backlog_taken_terminal_by_terminal_is_decided_as_if_in_time_order(gw) -> None:
    lobby, roof = TerminalFeed("t-lobby", SITE), TerminalFeed("t-roof", SITE)
    lobby_taps = [lobby.event(Kind.IN, ANA, T0), lobby.event(Kind.IN, ANA, T0 + 2 * H)]
    roof_taps = [roof.event(Kind.OUT, ANA, T0 + H), roof.event(Kind.OUT, ANA, T0 + 3 * H)]
    insert(gw.db, lobby_taps + roof_taps)  # all stored before the relay takes any
    first = gw.relay(lobby_taps, order="as given")  # the relay's (terminal, seq) order
    second = gw.relay(roof_taps, order="as given")
    assert [v for v in first.values()] == [("in", ()), ("in", ())]
    assert [v for v in second.values()] == [("out", ()), ("out", ())]


def test_a_tap_arriving_after_a_later_one_was_sent_is_flagged_late(gw) -> None:
    lobby, office = TerminalFeed("t-lobby", SITE), TerminalFeed("t-office", SITE)
    morning = [lobby.event(Kind.IN, ANA, T0), lobby.event(Kind.OUT, ANA, T0 + 5 * H)]
    insert(gw.db, morning)
    gw.relay(morning)
    # the office was offline: its tap of 13:20 arrives after the lobby's 13:50 went out
    late = office.event(Kind.OUT, ANA, T0 + 4 * H, flags=(Flag.DIRECTION_GUESS,))
    insert(gw.db, [late])
    assert list(gw.relay([late]).values()) == [("out", (Issue.LATE,))]
    assert gw.check.counters["sequence.late"] == 1


def test_a_decision_is_made_once_and_kept_when_the_row_is_sent_again(gw) -> None:
    lobby = TerminalFeed("t-lobby", SITE)
    taps = [lobby.event(Kind.IN, BOB, T0)]
    insert(gw.db, taps)
    assert gw.relay(taps) == gw.relay(taps)  # a retry after a failure
    later = lobby.event(Kind.OUT, BOB, T0 - H)  # would make the first one an `out` if recomputed
    insert(gw.db, [later])
    gw.relay([later])
    assert gw.relay(taps)[("t-lobby", 1)] == ("in", ())


def test_selftest_taps_are_not_in_the_sequence(gw) -> None:
    lobby, roof = TerminalFeed("t-lobby", SITE), TerminalFeed("t-roof", SITE)
    selftest = lobby.event(Kind.IN, ANA, T0, flags=(Flag.SELFTEST,))
    real = roof.event(Kind.IN, ANA, T0 + H)
    insert(gw.db, [selftest, real])
    assert gw.relay([real]) == {("t-roof", 1): ("in", ())}


def test_the_site_view_is_each_workers_newest_tap(gw) -> None:
    lobby = TerminalFeed("t-lobby", SITE)
    taps = [lobby.event(Kind.IN, ANA, T0), lobby.event(Kind.BREAK_START, ANA, T0 + H),
            lobby.event(Kind.IN, BOB, T0 + H), lobby.event(Kind.IN, BOB, T0 + 2 * H)]  # fmt: skip
    insert(gw.db, taps)
    day = SiteDay(gw.db)
    before = day.version()
    gw.relay(taps)
    assert day.version() != before
    # a break stays a break; Bob's second `in` was sent as `out`, and that is what counts
    assert day.day(SITE) == [DayEntry("w-ana", Kind.BREAK_START, T0 + H),
                             DayEntry("w-bob", Kind.OUT, T0 + 2 * H)]  # fmt: skip
    assert day.day("ZZZZZZZZ12345") == []
    day.close()


BADGES = {ANA: "w-ana", BOB: "w-bob"}  # the workplace's roster: badge -> worker reference


def test_the_site_view_has_stored_taps_before_the_relay_decides_them(gw) -> None:
    lobby, roof = TerminalFeed("t-lobby", SITE), TerminalFeed("t-roof", SITE)
    day = SiteDay(gw.db)
    empty = day.version()
    came_in = lobby.event(Kind.IN, ANA, T0)
    insert(gw.db, [came_in])
    assert day.version() != empty  # a stored tap is a change the roster loop sees
    assert day.day(SITE, BADGES) == [DayEntry("w-ana", Kind.IN, T0)]
    assert day.day(SITE) == []  # without the roster, only decided taps count
    # the relay decides the `in`; the roof's `out` is stored, not decided: newest wins
    gw.relay([came_in])
    went_out = roof.event(Kind.OUT, ANA, T0 + H)
    insert(gw.db, [went_out])
    assert day.day(SITE, BADGES) == [DayEntry("w-ana", Kind.OUT, T0 + H)]
    # a decided tap newer than a stored one wins, as the sequence sent it
    bob_out = roof.event(Kind.OUT, BOB, T0 + 2 * H)
    insert(gw.db, [bob_out])
    assert gw.relay([bob_out]) == {("t-roof", 2): ("in", (Issue.CORRECTED,))}
    insert(gw.db, [lobby.event(Kind.IN, BOB, T0)])  # an older tap, arriving late
    assert DayEntry("w-bob", Kind.IN, T0 + 2 * H) in day.day(SITE, BADGES)
    assert day.day("ZZZZZZZZ12345", BADGES) == []
    day.close()


def test_stored_taps_that_are_not_attendance_never_show(gw) -> None:
    lobby = TerminalFeed("t-lobby", SITE)
    came_in = lobby.event(Kind.IN, ANA, T0)
    selftest = lobby.event(Kind.IN, ANA, T0 + H, flags=(Flag.SELFTEST,))
    enrolment = lobby.event(Kind.OUT, ANA, T0 + 2 * H)
    insert(gw.db, [came_in, selftest, enrolment])
    # claimed as provisioning.badge_enrolment claims a linking tap
    gw.store.db.claim_tap(
        "t-lobby", enrolment.event.seq, "enrolment", "", ("queued", "unknown_badge"),
        time.time_ns(),
    )  # fmt: skip
    day = SiteDay(gw.db)
    assert day.day(SITE, BADGES) == [DayEntry("w-ana", Kind.IN, T0)]
    day.close()


def test_a_gateway_without_a_relay_shows_the_stored_taps(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"  # no [ciao]: the relay never created its tables
    create_inbox(db)
    lobby = TerminalFeed("t-lobby", SITE)
    insert(db, [lobby.event(Kind.IN, ANA, T0), lobby.event(Kind.IN, BOB, T0 + H,
                                                          flags=(Flag.SELFTEST,))])  # fmt: skip
    day = SiteDay(db)
    assert day.day(SITE, BADGES) == [DayEntry("w-ana", Kind.IN, T0)]
    day.close()


def test_a_stored_tap_from_a_clock_in_the_future_waits_for_the_relay(gw) -> None:
    lobby, roof = TerminalFeed("t-lobby", SITE), TerminalFeed("t-roof", SITE)
    now = time.time_ns()
    came_in = lobby.event(Kind.IN, ANA, now - H)
    astray = roof.event(Kind.OUT, BOB, now + 72 * H, flags=(Flag.CLOCK_UNSYNCED,))
    insert(gw.db, [came_in, astray])
    day = SiteDay(gw.db)
    # bob's tap would have been newest and pushed ana's out of the two-day window
    assert day.day(SITE, BADGES) == [DayEntry("w-ana", Kind.IN, now - H)]
    day.close()


def test_the_site_view_reads_stored_taps_through_the_badge_index(gw) -> None:
    insert(gw.db, [TerminalFeed("t-lobby", SITE).event(Kind.IN, ANA, T0)])
    day = SiteDay(gw.db)
    plan = day.db.explain_newest_stored_tap(FUTURE_SLACK_NS)
    assert "USING INDEX inbox_badge_time" in plan
    assert "SCAN i" not in plan
    day.close()


def test_the_employer_lists_what_to_resolve_without_any_inss(gw, capsys) -> None:
    from siteclock.cli import main

    lobby = TerminalFeed("t-lobby", SITE)
    taps = [lobby.event(Kind.IN, BOB, T0), lobby.event(Kind.IN, BOB, T0 + 20 * H)]
    insert(gw.db, taps)
    gw.relay(taps)
    assert main(["sequence-issues", "--db", str(gw.db)]) == 0
    out = capsys.readouterr().out
    assert "w-bob" in out
    assert "t-lobby#2 tapped in, sent in: missing_out" in out
    assert "1 tap(s) to review" in out
    assert make_inss(2) not in out


GATEWAY_TOML = """
db = "/var/lib/siteclock/gateway.db"
signing_key_file = "/etc/siteclock/gateway-signing.key"
"""


def test_the_gateway_shift_rule_is_a_setting(gw, tmp_path: Path) -> None:
    from siteclock.config import ConfigError, load
    from siteclock.gateway.config import GatewayConfig

    path = tmp_path / "gateway.toml"
    path.write_text(GATEWAY_TOML)
    assert load(path, GatewayConfig).sequence.rule == ShiftRule()  # 14 h unless told
    path.write_text(GATEWAY_TOML + "[sequence]\nshift_gap_h = 8.0\nshift_calendar_day = true\n")
    rule = load(path, GatewayConfig).sequence.rule
    assert rule == ShiftRule(8.0, calendar_day=True)
    path.write_text(GATEWAY_TOML + "[sequence]\nshift_gap_h = 0\n")
    with pytest.raises(ConfigError, match="sequence: shift_gap_h must be a positive"):
        load(path, GatewayConfig)
    # ten hours after an `in`, a second `in` starts a new shift under an 8 h rule (under the
    # default 14 h it would have been corrected to `out`)
    gw.check = SequenceCheck(gw.store.db, rule=ShiftRule(8.0))
    lobby = TerminalFeed("t-lobby", SITE)
    taps = [lobby.event(Kind.IN, ANA, T0 + 30 * H), lobby.event(Kind.IN, ANA, T0 + 40 * H)]
    insert(gw.db, taps)
    assert gw.relay(taps) == {("t-lobby", 1): ("in", ()),
                              ("t-lobby", 2): ("in", (Issue.MISSING_OUT,))}  # fmt: skip


def test_the_gateway_gives_its_relay_the_configured_shift_rule(tmp_path: Path) -> None:
    from siteclock.gateway.ciao.environments import CiaoConfig
    from siteclock.gateway.config import GatewayConfig
    from siteclock.gateway.sequence import SequenceConfig
    from siteclock.gateway.service import Gateway
    from tests.support.ciao import CLIENT_ID, rsa_pair, write_private_key

    cfg = GatewayConfig(
        db=tmp_path / "gateway.db", signing_key_file=tmp_path / "gateway-signing.key",
        ciao=CiaoConfig(client_id=CLIENT_ID, base_url="http://127.0.0.1:9",
                        private_key=write_private_key(tmp_path / "ciao.pem", rsa_pair()[0])),
        sequence=SequenceConfig(shift_gap_h=10.0, shift_calendar_day=True),
    )  # fmt: skip
    gateway = Gateway(cfg)  # built, not started: nothing connects
    try:
        assert gateway.relay is not None
        assert gateway.relay.sequence.rule == ShiftRule(10.0, calendar_day=True)
    finally:
        gateway.stop()
