# ruff: noqa: F811 - `site` is the end-to-end module fixture, imported to share its broker
"""Issue 11, Seen 4 (provisioning order) and the gateway-down part of Seen 8, with real parts:
Mosquitto, the HTTPS enrolment endpoint, the simulated reader, SQLite files.

``provision run`` checks what it can before it spends the token; a rerun uses what the installer
typed this time; a terminal id whose enrolment failed is not burnt.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from siteclock.provisioning.cli import provision_cli
from siteclock.provisioning.gateway.service import EnrolmentService
from siteclock.provisioning.shared.requests import BrokerEndpoint
from siteclock.terminal import config as terminal_config
from siteclock.terminal import identity
from tests.integration.test_provisioning_e2e import (  # noqa: F401 - `site` is a fixture
    WP1,
    Site,
    provision_args,
    site,
    tap_when_ready,
)
from tests.support.enrolment_server import enrolment_server
from tests.support.inbox import TerminalFeed, insert
from tests.support.mosquitto import free_port


def run(site: Site, data: Path, token: str, terminal_id: str, *extra: str) -> int:
    args = provision_args(site, data, token, terminal_id)
    return provision_cli([*args, "--badge-timeout", "1", *extra])


def test_bad_reader_fails_before_the_token_is_spent(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen 4: a bad reader spec was found only after the token was spent and the terminal
    enrolled. Now the run stops first: token unused, terminal id free, and the same token
    then works with the right reader."""
    token = site.tokens.create(WP1, ttl_s=3600).token
    data = tmp_path / "t-order-01"
    code = run(site, data, token, "t-order-01", "--reader", "pn532:/dev/no-such-reader-here")
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  reader" in out
    assert "No such file or directory" in out
    assert "the token was NOT used" in out
    info = site.tokens.info(token)
    assert info is not None
    assert info.used_ns is None
    assert site.registry.get("t-order-01") is None
    assert run(site, data, token, "t-order-01", "--no-selftest") == 0
    assert site.registry.get("t-order-01") is not None


def test_rerun_uses_the_reader_typed_this_time(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen 4: after a failed self-test, the rerun resumed with the old, wrong reader value."""
    token = site.tokens.create(WP1, ttl_s=3600).token
    data = tmp_path / "t-order-02"
    data.mkdir(mode=0o700)
    wrong = f"sim:{data / 'wrong.sock'}"  # opens, but the badge is never tapped on it
    assert run(site, data, token, "t-order-02", "--reader", wrong) == 1
    assert terminal_config.load(data / "terminal.toml").reader.spec == wrong
    stop = threading.Event()
    tapper = tap_when_ready(data / "taps.sock", "sim:0D0D", stop)
    try:
        assert provision_cli(provision_args(site, data, token, "t-order-02")) == 0
    finally:
        stop.set()
        tapper.join(5)
    assert terminal_config.load(data / "terminal.toml").reader.spec == f"sim:{data / 'taps.sock'}"
    # Once done, a rerun changes nothing, and says what it did not apply.
    assert run(site, data, token, "t-order-02", "--reader", wrong) == 0
    assert f"not applied: --reader {wrong}" in capsys.readouterr().out


def test_failed_enrolment_can_be_retried_with_the_same_id(site: Site, tmp_path: Path) -> None:
    """Seen 4: the terminal id was burnt. A new token for the same workplace enrols the same
    id again with a new key (the old key revoked, kept), as long as the id never recorded a
    tap; an id with a history stays its terminal's."""
    data = tmp_path / "t-order-03"
    first = site.tokens.create(WP1, ttl_s=3600).token
    assert run(site, data, first, "t-order-03", "--no-selftest") == 0
    old_kid = identity.load(data / "terminal.key").kid
    shutil.rmtree(data)  # the installer starts over: new key, new token
    second = site.tokens.create(WP1, ttl_s=3600).token
    assert run(site, data, second, "t-order-03", "--no-selftest") == 0
    record = site.registry.get("t-order-03")
    assert record is not None
    new_kid = identity.load(data / "terminal.key").kid
    assert set(record.keys) == {new_kid}
    assert old_kid in record.revoked_kids

    feed = TerminalFeed("t-order-03", WP1)
    insert(site.db, [feed.event("in", "sim:0A0A", time.time_ns())])
    shutil.rmtree(data)
    third = site.tokens.create(WP1, ttl_s=3600).token
    assert run(site, data, third, "t-order-03", "--no-selftest") == 1
    info = site.tokens.info(third)
    assert info is not None
    assert info.used_ns is None
    assert set(site.registry.get("t-order-03").keys) == {new_kid}  # type: ignore[union-attr]


def test_gateway_down_is_one_line_and_spends_nothing(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen 8: a gateway that is down printed ``HTTPSConnectionPool(... Max retries ...)``."""
    token = site.tokens.create(WP1, ttl_s=3600).token
    args = provision_args(site, tmp_path / "t-order-04", token, "t-order-04")
    args[args.index(site.url)] = f"https://127.0.0.1:{free_port()}"
    assert provision_cli(args) == 1
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "nothing answers at 127.0.0.1:" in text
    assert "HTTPSConnectionPool" not in text
    assert "Traceback" not in text
    assert site.tokens.info(token).used_ns is None  # type: ignore[union-attr]


def test_unreachable_broker_fails_before_the_token_is_spent(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen 4: the broker the gateway names must be reachable from the terminal first."""
    dead = EnrolmentService(
        site.tokens, site.registry, site.service.broker,
        endpoint=BrokerEndpoint("127.0.0.1", free_port(), site.broker.ca_file.read_text()),
    )  # fmt: skip
    token = site.tokens.create(WP1, ttl_s=3600).token
    with enrolment_server(dead, site.broker, site.broker.ca_file.read_text()) as url:
        args = provision_args(site, tmp_path / "t-order-05", token, "t-order-05")
        args[args.index(site.url)] = url
        assert provision_cli([*args, "--no-selftest"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  broker" in out
    assert site.tokens.info(token).used_ns is None  # type: ignore[union-attr]
    assert site.registry.get("t-order-05") is None


def test_decommissioned_terminal_stops_saying_saved(site: Site, tmp_path: Path) -> None:
    """Seen 10: a decommissioned terminal kept telling workers "Saved". Once the broker has
    refused its login for a while it refuses taps visibly (nothing recorded) and says to use
    another terminal."""
    import json
    from dataclasses import replace

    from gpiozero.pins.mock import MockFactory

    from siteclock.hw import sim
    from siteclock.terminal.service import Terminal
    from tests.support.waiting import wait_for

    token = site.tokens.create(WP1, ttl_s=3600).token
    data = tmp_path / "t-order-06"
    assert run(site, data, token, "t-order-06", "--no-selftest") == 0
    cfg = terminal_config.load(data / "terminal.toml")
    journal = data / "feedback.jsonl"
    cfg = replace(cfg, feedback=replace(cfg.feedback, journal=journal))
    term = Terminal(cfg, pin_factory=MockFactory(), out_of_service_after_s=0.5)
    term.start()
    try:
        wait_for(lambda: term.uplink.connected, what="terminal connected")
        wait_for(lambda: (data / "taps.sock").exists(), what="reader socket")
        assert sim.send_taps(str(data / "taps.sock"), ["sim:0E0E"]) == ["ok"]
        wait_for(lambda: term.outbox.stats().total == 1, what="first tap saved")
        assert provision_cli([
            "decommission", "--db", str(site.db), "--broker-dir", str(site.broker.workdir),
            "--broker-host", "127.0.0.1", "--terminal", "t-order-06", "--yes",
            "--inss-key", str(site.root / "inss.key"), "--reload-pid-file", str(site.pid_file),
        ]) == 0  # fmt: skip
        # Mosquitto drops the connected session whose account is gone when it rereads the
        # password file; paho logs in again and is refused from then on.
        wait_for(term.login_watch.out_of_service, what="out of service", timeout=30)
        assert sim.send_taps(str(data / "taps.sock"), ["sim:0F0F"]) == ["ok"]
        wait_for(lambda: "OUT OF SERVICE" in journal.read_text(), what="refusal shown")
    finally:
        term.stop()
    last = json.loads(journal.read_text().splitlines()[-1])
    assert last["pattern"] == "refused"
    assert last["text"] == "NOT SAVED / OUT OF SERVICE / use other terminal"
    assert last["badge"] == "sim:0F0F"
    assert "saved" not in last["pattern"]
    from siteclock.terminal.outbox import Outbox

    box = Outbox(cfg.outbox_path, signer=identity.load(cfg.key_path), terminal_id="t-order-06",
                 workplace=WP1)  # fmt: skip
    try:
        assert box.stats().total == 1  # the refused tap was not recorded
    finally:
        box.close()
