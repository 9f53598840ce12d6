"""The relay never abandons a tap: each fault of a strict CIaO service, over real HTTP.

Outages of any length, a token endpoint that answers 503 with Retry-After, refused credentials,
a refused search parameter, an unknown ``type`` casing, a relay restarted inside a Retry-After
wait, and the three ways a tap waits for someone (unknown badge, blocked badge, unsynced
clock). The simulator's own record is the judge: what it registered, and when each request
came compared with the Retry-After it had announced.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock import protocol as p
from siteclock.gateway.ciao.client import Permanent, Transient
from siteclock.gateway.ciao.policy import PolicyConfig
from siteclock.gateway.ciao.profile import load as load_profile
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.relay_cli import run as relay_cli
from siteclock.gateway.relay_store import NOT_BEFORE_KEY
from siteclock.log import KeyValueFormatter
from siteclock.protocol import Kind, Outcome
from tests.support.ciao import (
    CLIENT_ID,
    WORKPLACE,
    World,
    client_for,
    exactly_once_report,
    make_world,
    rsa_pair,
    running_sim,
    write_private_key,
)
from tests.support.inbox import TerminalFeed, insert, make_events
from tests.support.relay_proc import spawn_relay
from tests.support.waiting import wait_for, wait_until

# A client that gives up fast, so the relay sees many failed attempts in a few seconds (the old
# relay dead-lettered after 12 of them).
IMPATIENT = PolicyConfig(
    max_attempts=2, max_delay_s=1.0, initial_wait_s=0.01, max_wait_s=0.05, jitter_s=0.01
)


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with running_sim(validation_delay_s=0.05, seed=11) as server:
        yield server


def _turn_until(world: World, predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Turn the relay by hand (one ``run_once`` per poll) until ``predicate`` holds."""

    def turned() -> bool:
        if predicate():
            return True
        world.relay.run_once()
        return False

    wait_for(turned, lambda: f"{what}: {world.relay.store.counts()}", timeout, interval=0.01)


def _events(world: World, terminal: str, count: int) -> list[p.SignedEvent]:
    feed = TerminalFeed(terminal, WORKPLACE)
    events = make_events([feed], [x.badge for x in world.people], count)
    insert(world.db, events)
    return events


def _outage_answers(sim: SimServer) -> int:
    return sum(n for k, n in sim.stats.items() if k.startswith(("fault.outage.", "token.fault.")))


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """The log lines as the gateway writes them (key=value, INSS redacted)."""
    formatter = KeyValueFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


def _show(db: Path, *args: str) -> str:
    out = io.StringIO()
    assert relay_cli(["show", "--db", str(db), *args], out=out) == 0
    return out.getvalue()


# --------------------------------------------------------------------------- outages


@pytest.mark.slow
def test_an_outage_keeps_every_event_queued_and_names_its_cause(
    tmp_path: Path, sim: SimServer, caplog: pytest.LogCaptureFixture
) -> None:
    world = make_world(tmp_path, sim, workers=4, policy=IMPATIENT)
    sim.outage(4.0, status=503, retry_after_s=1)
    _events(world, "term-out-01", 8)
    with caplog.at_level(logging.WARNING, logger="siteclock.gateway"):
        # Through the whole outage: far more failed attempts than the old limit of 12.
        _turn_until(world, lambda: _outage_answers(sim) >= 2, 10, "the outage")
        assert set(world.relay.store.counts()) <= {"queued", "submitted"}
        alerts = world.relay.store.open_alerts()
        assert alerts["unreachable"].startswith("CIaO unreachable since ")
        world.run_until_final(timeout=20)
    assert world.relay.store.counts() == {"registered": 8}
    assert world.relay.store.open_alerts() == {}  # cleared on recovery
    assert "relay alert cleared" in caplog.text
    assert all(v.outcome is Outcome.REGISTERED for _, v in world.verdicts)
    total, duplicates = exactly_once_report(sim.registrations())
    assert (total, duplicates) == (8, [])
    assert sim.retry_after_violations() == []


@pytest.mark.slow
def test_many_failed_attempts_never_dead_letter(tmp_path: Path, sim: SimServer) -> None:
    # 500s without Retry-After, token endpoint included, until the relay has made more attempts
    # than the old limit (the outage ends then, not after a fixed time a loaded machine may need
    # whole for fewer attempts).
    world = make_world(
        tmp_path,
        sim,
        workers=2,
        policy=IMPATIENT,
        ambiguous_settle_s=0.01,
        backoff=PolicyConfig(initial_wait_s=0.01, max_wait_s=0.1),
    )
    sim.outage(120.0, status=500)
    _events(world, "term-500-01", 3)

    def attempts() -> int:
        return world.relay.store.db.max_attempts()

    _turn_until(world, lambda: attempts() > 12, 60, "more than 12 attempts")  # the old limit
    counts = world.relay.store.counts()
    assert set(counts) <= {"queued", "submitted", "ambiguous"}, counts
    sim.set_faults(outages=())
    world.run_until_final(timeout=20)
    assert world.relay.store.counts() == {"registered": 3}
    assert exactly_once_report(sim.registrations()) == (3, [])


# --------------------------------------------------------------------------- Retry-After


def test_token_endpoint_retry_after_holds_every_next_call(sim: SimServer) -> None:
    once = PolicyConfig(max_attempts=1, max_delay_s=1, initial_wait_s=0.01, max_wait_s=0.01)
    client = client_for(sim.url, policy=once)
    sim.set_faults(token_unavailable=1, token_retry_after_s=2)
    with pytest.raises(Transient) as info:
        client.get("1")
    assert info.value.retry_after == 2
    started = time.monotonic()
    with pytest.raises(Permanent) as found:  # the next call waits, then gets through
        client.get("1")
    assert found.value.reason == "resourceNotFound"
    assert time.monotonic() - started >= 1.5
    assert [t.retry_at - t.issued_at for t in sim.throttles()] == [2]
    assert sim.retry_after_violations() == []


def _spawn_relay(tmp_path: Path, sim: SimServer, key_file: Path) -> subprocess.Popen[bytes]:
    return spawn_relay(tmp_path, sim.url, key_file, read_s=1.0, batch_limit=50)


@pytest.mark.slow
def test_a_restarted_relay_honours_the_retry_after_of_the_one_before(
    tmp_path: Path, sim: SimServer
) -> None:
    world = make_world(tmp_path, sim, workers=3)
    world.relay.store.close()  # the relays under test are separate processes
    key_file = write_private_key(tmp_path / "ciao.pem", rsa_pair()[0])
    _events(world, "term-ra-01", 6)
    sim.set_faults(rate_limit_burst=1, retry_after_s=3)
    watch = sqlite3.connect(tmp_path / "gateway.db")

    def saved_not_before() -> int:
        try:
            row = watch.execute(
                "SELECT value FROM relay_meta WHERE key=?", (NOT_BEFORE_KEY,)
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
        return row[0] if row else 0

    first = _spawn_relay(tmp_path, sim, key_file)
    try:
        wait_for(saved_not_before, "the Retry-After persisted", timeout=10)
    finally:
        os.kill(first.pid, signal.SIGKILL)  # killed inside its Retry-After wait
        first.wait()
    assert len(sim.throttles()) == 1
    second = _spawn_relay(tmp_path, sim, key_file)
    try:

        def registered() -> bool:
            sql = "SELECT count(*) FROM registrations WHERE state='registered'"
            return watch.execute(sql).fetchone()[0] == 6

        assert wait_until(registered, timeout=20), sim.stats
    finally:
        os.kill(second.pid, signal.SIGKILL)
        second.wait()
        watch.close()
    assert sim.retry_after_violations() == []
    assert exactly_once_report(sim.registrations()) == (6, [])


# --------------------------------------------------------------------------- credentials


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"refuse_credentials": True}, "credentials refused by the token endpoint since "),
        ({"api_forbidden": True}, "credentials refused by the API since "),
        ({"api_token_refused": True}, "credentials refused by the API since "),
    ],
)
def test_refused_credentials_keep_events_queued_until_fixed(
    tmp_path: Path, sim: SimServer, fault: dict[str, bool], words: str
) -> None:
    world = make_world(tmp_path, sim, workers=3, policy=IMPATIENT)
    sim.set_faults(**fault)
    _events(world, "term-cred-01", 5)
    _turn_until(world, lambda: world.relay.counters.total() >= 15, 10, "refusals")
    deadline = time.monotonic() + 2.0  # keep failing for a while: far past 12 attempts
    while time.monotonic() < deadline:
        world.relay.run_once()
        time.sleep(0.01)
    assert world.relay.store.counts() == {"queued": 5}
    assert world.verdicts == []
    assert world.relay.store.open_alerts()["credentials"].startswith(words)
    # The employer fixes it.
    sim.set_faults(refuse_credentials=False, api_forbidden=False, api_token_refused=False)
    world.run_until_final(timeout=20)
    assert world.relay.store.counts() == {"registered": 5}
    assert world.relay.store.open_alerts() == {}


# --------------------------------------------------------------------------- search refused


def test_a_refused_search_parameter_is_dropped_and_the_event_found(
    tmp_path: Path, sim: SimServer
) -> None:
    world = make_world(tmp_path, sim, workers=3, read_s=0.3, ambiguous_settle_s=0.05)
    sim.set_faults(commit_then_hang_rate=1.0, hang_s=0.6, refused_query_params=("ssin",))
    _events(world, "term-srch-01", 3)
    _turn_until(world, lambda: len(sim.registrations()) == 3, 10, "the committed POST")
    sim.set_faults(commit_then_hang_rate=0.0)
    world.run_until_final(timeout=20)
    assert world.relay.store.counts() == {"registered": 3}
    assert world.relay.counters["search_parameter_dropped"] == 1
    assert world.relay.counters["reconciled_found"] == 3
    assert sim.stats["search.refused_parameter"] >= 1
    assert exactly_once_report(sim.registrations()) == (3, [])


def test_an_unreconcilable_event_goes_to_a_person_and_is_never_resubmitted_blind(
    tmp_path: Path, sim: SimServer, caplog: pytest.LogCaptureFixture
) -> None:
    world = make_world(
        tmp_path, sim, workers=2, read_s=0.3, ambiguous_settle_s=0.05, review_after_s=0.5
    )
    workplace_param = sim.profile.search.workplace  # without it a search means nothing
    sim.set_faults(commit_then_hang_rate=1.0, hang_s=0.6, refused_query_params=(workplace_param,))
    _events(world, "term-rev-01", 2)
    with caplog.at_level(logging.WARNING):
        _turn_until(
            world,
            lambda: world.relay.store.counts() == {"needs_review": 2},
            15,
            "needs_review",
        )
        for _ in range(20):  # it stays there: no resubmission
            world.relay.run_once()
    assert len(sim.registrations()) == 2
    assert "unreconciled" in world.relay.store.open_alerts()
    logged = _logged(caplog)
    assert "events need a person" in logged
    for person in world.people:
        assert person.inss not in logged
    shown = _show(world.db, "--state", "needs_review")
    assert f"name='{workplace_param}'" in shown
    assert "'in': 'query'" not in shown
    assert "in='query'" in shown

    # The service is fixed; the employer puts them back: searched again, found, not re-sent.
    sim.set_faults(commit_then_hang_rate=0.0, refused_query_params=())
    assert relay_cli(["requeue", "--db", str(world.db), "--state", "needs_review"]) == 0
    world.run_until_final(timeout=20)
    assert world.relay.store.counts() == {"registered": 2}
    assert exactly_once_report(sim.registrations()) == (2, [])
    assert world.relay.store.open_alerts() == {}


# --------------------------------------------------------------------------- problem details


def _upper_case_sim() -> SimServer:
    profile = load_profile()
    strict = dataclasses.replace(
        profile,
        contract=dataclasses.replace(
            profile.contract, type_in="IN", type_out="OUT", accept_any_type_casing=False
        ),
    )
    server = SimServer(profile=strict, validation_delay_s=0.05)
    server.register_client(CLIENT_ID, rsa_pair()[1])
    return server


def test_problem_details_are_kept_whole_shown_and_the_item_requeued_after_the_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _upper_case_sim() as strict:
        world = make_world(tmp_path, strict, workers=2)
        _events(world, "term-case-01", 2)
        with caplog.at_level(logging.WARNING, logger="siteclock.gateway"):
            world.run_until_final()
        assert world.relay.store.counts() == {"refused": 2}
        row = world.relay.store.get("term-case-01", 1)
        problem = json.loads(row["problem"])
        assert problem["status"] == 400
        assert problem["title"] == "Bad Request"
        assert problem["issues"] == [
            {
                "type": "urn:problem-type:belgif:input-validation:schemaViolation",
                "title": "unknown type",
                "in": "body",
                "name": "item.type",
                "value": "in",
                "detail": "type must be one of IN, OUT",
            }
        ]
        assert "type must be one of IN, OUT" in row["last_error"]
        logged = _logged(caplog)
        assert "type must be one of IN, OUT" in logged  # logged whole...
        for person in world.people:
            assert person.inss not in logged  # ...without an INSS
        [verdict] = [v for _, v in world.verdicts if v.seq == 1]
        assert verdict.outcome is Outcome.REJECTED
        assert "IN, OUT" in verdict.reason
        shown = _show(world.db, "--worker", world.people[0].badge)
        assert "term-case-01:1  refused" in shown
        assert "name='item.type' value='in' detail='type must be one of IN, OUT'" in shown

        # The employer fixes the profile, then requeues; a dry run first changes nothing.
        out = io.StringIO()
        assert relay_cli(["requeue", "--db", str(world.db), "--state", "refused", "--dry-run"],
                         out=out) == 0  # fmt: skip
        assert "2 would be requeued" in out.getvalue()
        assert world.relay.store.counts() == {"refused": 2}
        world.relay.stop()
        upper = dataclasses.replace(world.relay.profile, contract=strict.profile.contract)
        client = client_for(strict.url)
        client.profile = upper
        from siteclock.gateway.relay import Relay

        world.relay = Relay(
            world.db,
            client,
            world.registry,
            config=world.relay.config,
            on_verdict=lambda t, v: world.verdicts.append((t, v)),
        )
        assert relay_cli(["requeue", "--db", str(world.db), "--id", "term-case-01:1",
                          "--terminal", "term-case-01"]) == 0  # fmt: skip
        assert world.relay.store.counts() == {"queued": 1, "refused": 1}
        assert relay_cli(["requeue", "--db", str(world.db), "--worker",
                          world.people[1].worker_ref]) == 0  # fmt: skip
        world.run_until_final()
        assert world.relay.store.counts() == {"registered": 2}
        assert [r["type"] for r in strict.registrations()] == ["IN", "IN"]
        audit = [row[1:5] for row in world.relay.store.db.requeue_audit()]
        assert audit == [
            ("term-case-01", 1, "refused", "queued"),
            ("term-case-01", 2, "refused", "queued"),
        ]


def test_requeue_refuses_an_inss_and_an_empty_selection(tmp_path: Path, sim: SimServer) -> None:
    world = make_world(tmp_path, sim, workers=1)
    inss = world.people[0].inss
    assert relay_cli(["requeue", "--db", str(world.db), "--worker", inss]) == 2
    assert relay_cli(["requeue", "--db", str(world.db)]) == 2


# --------------------------------------------------------------------------- polling


def test_pending_registrations_are_polled_by_search_within_a_budget(
    tmp_path: Path,
) -> None:
    with SimServer(validation_delay_s=0.3) as slow:
        slow.register_client(CLIENT_ID, rsa_pair()[1])
        world = make_world(tmp_path, slow, workers=5, poll_calls_per_turn=2, poll_interval_s=0.05)
        _events(world, "term-poll-01", 60)
        _turn_until(world, lambda: world.relay.store.counts() == {"pending": 60}, 10, "pending")
        time.sleep(0.1)
        before = slow.stats
        world.relay.run_once()  # every row is due: the turn still makes at most 2 calls
        after = slow.stats
        calls = sum(after[f"api.{n}"] - before[f"api.{n}"] for n in ("search", "lookup"))
        assert 1 <= calls <= 2
        world.run_until_final(timeout=20)
    assert world.relay.store.counts() == {"registered": 60}
    assert after["api.lookup"] == 0  # never one GET per id
    assert world.relay.counters["poll_search"] >= 1


# --------------------------------------------------------------------------- distinct states


def test_unknown_blocked_and_unsynced_are_distinct_states(tmp_path: Path, sim: SimServer) -> None:
    world = make_world(tmp_path, sim, workers=2)
    blocked = world.people[1].badge
    world.registry.block_badge(blocked)
    feed = TerminalFeed("term-why-01", WORKPLACE)
    now = time.time_ns() - 10**12
    unsynced = p.ClockState(False, 16_000_000, "test")
    insert(
        world.db,
        [
            feed.event(Kind.IN, "nfc-a:0BADBADB", now),
            feed.event(Kind.IN, blocked, now + 10**9),
            feed.event(
                Kind.IN, world.people[0].badge, now + 2 * 10**9, clock=unsynced,
                flags=(p.Flag.CLOCK_UNSYNCED,),
            ),
        ],
    )  # fmt: skip
    for _ in range(3):
        world.relay.run_once()
    rows = {seq: world.relay.store.get("term-why-01", seq) for seq in (1, 2, 3)}
    assert [rows[s]["state"] for s in (1, 2, 3)] == [
        "unknown_badge",
        "blocked_badge",
        "awaiting_clock_sync",
    ]
    reasons = {rows[s]["last_error"] for s in (1, 2, 3)}
    assert len(reasons) == 3
    assert sim.registrations() == []
