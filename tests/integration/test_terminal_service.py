"""The terminal service with real parts: sim reader on a Unix socket, SQLite file, journal.

GPIO is the only thing mocked (gpiozero MockFactory), because it cannot exist here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("siteclock.hw.sim", reason="the simulated reader (hw/sim.py) is missing")

from gpiozero.pins.mock import MockFactory

from siteclock.hw import sim
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Flag, Kind, Roster, RosterEntry
from siteclock.terminal import config as config_mod
from siteclock.terminal import identity
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.service import Terminal, cli
from tests.support import waiting
from tests.support.terminal_files import write_terminal_config

ANA, BOB = "sim:0A0A", "sim:0B0B"


# this module's ceiling for a condition to come true (tests.support.waiting)
wait_for = functools.partial(waiting.wait_for, timeout=10.0)


def write_config(root: Path, *, data_dir: Path | None = None, extra: str = "") -> Path:
    return write_terminal_config(
        root,
        terminal_id="t-0001",
        socket=root / "taps.sock",
        repeat_window_s=0.5,
        data_dir=data_dir,
        extra=extra,
    )


def journal(root: Path) -> list[dict]:
    path = root / "journal.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


@pytest.fixture
def terminal(tmp_path: Path):
    cfg = config_mod.load(write_config(tmp_path))
    term = Terminal(cfg, pin_factory=MockFactory())
    term.start()
    wait_for(lambda: (tmp_path / "taps.sock").exists(), what="sim reader socket")
    yield term
    term.stop()


def test_taps_are_recorded_answered_and_repeats_only_answered(terminal, tmp_path) -> None:
    terminal.capture.apply_roster(Roster("t-0001", 1, (RosterEntry(ANA, "w-1", "Ana"),)))
    sim.send_taps(str(tmp_path / "taps.sock"), [ANA, ANA, BOB])
    lines = wait_for(lambda: len(journal(tmp_path)) >= 3 and journal(tmp_path), what="3 answers")
    assert [x["pattern"] for x in lines] == ["saved", "repeat", "unknown_badge"]
    time.sleep(0.6)  # past the repeat window
    sim.send_taps(str(tmp_path / "taps.sock"), [ANA])
    wait_for(lambda: len(journal(tmp_path)) >= 4, what="4th answer")
    events = [e.event for e in terminal.outbox.events()]
    assert [(e.badge, e.kind) for e in events] == [(ANA, Kind.IN), (BOB, Kind.IN), (ANA, Kind.OUT)]
    assert Flag.UNKNOWN_BADGE in events[1].flags
    assert journal(tmp_path)[-1]["seq"] == events[-1].seq
    snap = terminal.health.snapshot()
    assert snap["queue_depth"] == 3
    assert snap["reader"] == "ok"
    assert snap["alerts"] == []
    assert snap["oldest_unsent_age_s"] >= 0


def test_the_heartbeat_says_which_roster_the_terminal_holds(terminal) -> None:
    assert terminal.health.snapshot()["roster_version"] is None  # none received yet
    terminal.capture.apply_roster(Roster("t-0001", 7, (RosterEntry(ANA, "w-1", "Ana"),)))
    assert terminal.health.snapshot()["roster_version"] == 7
    terminal.capture.apply_roster(Roster("t-0001", 5, ()))  # older: ignored
    assert terminal.health.snapshot()["roster_version"] == 7


def test_disk_full_refuses_in_red_alerts_and_keeps_running(terminal, tmp_path) -> None:
    sock = str(tmp_path / "taps.sock")
    sim.send_taps(sock, [ANA])
    wait_for(lambda: journal(tmp_path), what="first answer")
    db = terminal.outbox._db  # the page limit stands in for a full SD card
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    badges = [f"sim:{i:036X}" for i in range(40)]
    sim.send_taps(sock, badges)
    wait_for(lambda: len(journal(tmp_path)) == 1 + len(badges), what="40 more answers")
    assert any(x["pattern"] == "refused" for x in journal(tmp_path))
    assert "disk_full" in terminal.health.snapshot()["alerts"]
    assert not terminal.feedback.green.is_lit or terminal.feedback.red.is_lit
    db.execute(f"PRAGMA max_page_count = {pages * 100}")
    count = len(journal(tmp_path))
    sim.send_taps(sock, [BOB])
    wait_for(lambda: len(journal(tmp_path)) > count, what="answer after space returns")
    assert journal(tmp_path)[-1]["pattern"] == "unknown_badge"
    assert "disk_full" not in terminal.health.snapshot()["alerts"]


def test_cli_broken_config_and_unwritable_data_dir_exit_2(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('terminal_id = "t-0001"\n')
    assert cli(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "workplace" in err
    assert "Traceback" not in err

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = write_config(tmp_path, data_dir=blocker / "data")
    assert cli(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(blocker / "data") in err
    assert "not writable" in err


def test_cli_process_notifies_systemd_records_taps_and_stops_on_sigterm(tmp_path) -> None:
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(10)
    cfg = write_config(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "siteclock.cli", "terminal", "--config", str(cfg)],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        messages = {notify.recv(256).decode() for _ in range(2)}
        assert {"READY=1", "WATCHDOG=1"} <= messages
        tap = subprocess.run(
            [sys.executable, "-m", "siteclock.cli", "terminal", "tap", "--socket",
             str(tmp_path / "taps.sock"), ANA, BOB],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert tap.returncode == 0, tap.stderr
        wait_for(lambda: len(journal(tmp_path)) >= 2, what="two answers")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    signer = identity.load(tmp_path / "data" / "terminal.key")
    box = Outbox(tmp_path / "data" / "outbox.db", signer=signer, terminal_id="t-0001",
                 workplace="ABCDEFGH12345")  # fmt: skip
    try:
        assert [e.event.badge for e in box.events()] == [ANA, BOB]
        assert box.verify({signer.kid: signer.public_key_bytes()}) == 2
    finally:
        box.close()
    assert isinstance(signer, Ed25519Signer)


def test_uplink_ships_taps_and_gateway_ack_marks_them_delivered(tmp_path) -> None:
    """Wiring with the real uplink and a real Mosquitto: a tap leaves, an ack comes back."""
    import dataclasses
    import queue

    import paho.mqtt.client as mqtt

    from siteclock.protocol import Ack, Channel, decode_batch, decode_status, topic
    from tests.support.mosquitto import running_broker, terminal_config

    with running_broker(tmp_path / "broker", terminals=["t-0001"]) as broker:
        cfg = dataclasses.replace(
            config_mod.load(write_config(tmp_path)),
            uplink=terminal_config(broker, "t-0001", heartbeat_s=0.5),
        )
        got: queue.Queue = queue.Queue()
        gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-test",
                         protocol=mqtt.MQTTv5)  # fmt: skip
        gw.tls_set(ca_certs=str(broker.ca_file))
        gw.username_pw_set(broker.gateway.username, broker.gateway.password)
        gw.on_message = lambda _c, _u, msg: got.put((msg.topic, msg.payload))
        gw.connect(broker.host, broker.gateway_port)
        gw.subscribe([(topic("t-0001", Channel.EVENTS), 1), (topic("t-0001", Channel.STATUS), 1)])
        gw.loop_start()
        term = Terminal(cfg, pin_factory=MockFactory())
        try:
            term.start()
            wait_for(lambda: (tmp_path / "taps.sock").exists(), what="sim reader socket")
            sim.send_taps(str(tmp_path / "taps.sock"), [ANA])
            events, statuses = [], []
            deadline = time.monotonic() + 15
            while not (events and statuses) and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    name, payload = got.get(timeout=0.5)
                    if name.endswith("/events"):
                        events += decode_batch(payload)
                    else:
                        statuses.append(decode_status(payload))
            assert [e.event.badge for e in events] == [ANA]
            assert statuses[-1]["state"] == "online"
            seq = events[0].event.seq
            gw.publish(topic("t-0001", Channel.ACK), Ack(stored=(seq,)).encode(), qos=1)
            wait_for(lambda: term.outbox.stats().depth == 0, what="delivered after the ack")
        finally:
            term.stop()
            gw.loop_stop()
            gw.disconnect()
