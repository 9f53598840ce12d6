"""`make demo` is the README's first command: the whole site, end to end, must come out OK;
and nothing it produced - pages, exports other than the evidence, logs, metrics, MQTT payloads,
files - holds a full INSS."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from siteclock.app.demo import NEWCOMER, WORKERS
from tests.support.waiting import wait_for

EVERY_INSS = [w.inss for w in (*WORKERS, NEWCOMER)]


def _spellings(inss: str) -> list[bytes]:
    """The digits as stored and as people write them (85.07.30-033.28)."""
    written = f"{inss[:2]}.{inss[2:4]}.{inss[4:6]}-{inss[6:9]}.{inss[9:]}"
    return [inss.encode(), written.encode()]


def _holding_an_inss(data: bytes) -> list[str]:
    return [inss for inss in EVERY_INSS if any(s in data for s in _spellings(inss))]


@pytest.mark.slow
def test_demo_runs_a_site_end_to_end_and_leaks_no_inss(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "siteclock.cli", "demo", "--story-only", "--dir", str(site)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "OK: 7 of 7 enrolled taps have the NSSO's verdict" in out
    assert "last: REJECTED / see employer" in out  # the worker's words, not the NSSO's code
    assert "rejected: RELATED DIMONA NOT OK" in out  # the employer's view keeps the reason
    # in at the lobby, out at the roof: the roof learned the direction through the gateway
    assert "t-roof   Bram Claes     saved         OUT - saved / Bram Claes" in out
    assert "Already saved" in out  # the double tap was answered, not recorded
    assert out.count("signed and chained") == 2
    # the console's part of the story
    assert "login demo / " in out
    assert "linked to w-dries" in out
    # the linked badge's waiting tap went to the NSSO
    assert re.search(r"t-roof\s+\d+\s+in\s+Dries Janssens\s+stored\s+\d+\s+registered", out)
    assert "on site now (4): Ana Peeters" in out
    assert "t-roof offline on the terminals page" in out
    assert "t-roof back online" in out
    assert "result: intact" in out  # the exported evidence verified offline
    assert "every process of the site stopped" in out
    # what the run produced: the pages it fetched, the CSV, metrics, logs, MQTT payloads...
    produced = [p for p in site.rglob("*") if p.is_file()]
    names = {p.parent.name for p in produced}
    assert {"console", "logs", "mqtt", "evidence", "gateway", "t-lobby", "t-roof"} <= names
    assert (site / "console" / "metrics.txt").read_bytes().startswith(b"# HELP")
    assert (site / "mqtt" / "capture.bin").stat().st_size > 1000
    leaks = {str(p.relative_to(site)): _holding_an_inss(p.read_bytes()) for p in produced
             if p.parent.name != "evidence"}  # fmt: skip
    assert {name: found for name, found in leaks.items() if found} == {}
    assert not _holding_an_inss((out + proc.stderr).encode())
    # the evidence export is where the employer is entitled to it: the scan would see one
    [evidence] = (site / "evidence").iterdir()
    assert _holding_an_inss(evidence.read_bytes()) == [WORKERS[0].inss]
    assert evidence.stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_the_demo_keeps_the_site_until_ctrl_c_then_stops_every_process(tmp_path: Path) -> None:
    site = tmp_path / "site"
    out_file = tmp_path / "out.txt"
    with out_file.open("w") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "siteclock.cli", "demo", "--dir", str(site)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "Ctrl-C stops every process" in out_file.read_text(),
                 "the demo to finish its story and wait", timeout=300)
        children = _children(demo.pid)
        assert len(children) >= 4  # mosquitto, the gateway, two terminals
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, out_file.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
    assert "every process of the site stopped" in out_file.read_text()
    assert [pid for pid in children if _alive(pid)] == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"

