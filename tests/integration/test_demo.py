"""`make demo` is the README's first command: the whole site, end to end, must come out OK."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from siteclock.app.demo import WORKERS


@pytest.mark.slow
def test_demo_runs_a_site_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "siteclock.cli", "demo", "--dir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "OK: 6 of 6 enrolled taps have the NSSO's verdict" in out
    assert "last: REJECTED / see employer" in out  # the worker's words, not the NSSO's code
    assert "rejected: RELATED DIMONA NOT OK" in out  # the employer's view keeps the reason
    # in at the lobby, out at the roof: the roof learned the direction through the gateway
    assert "t-roof   Bram Claes     saved         OUT - saved / Bram Claes" in out
    assert "Already saved" in out  # the double tap was answered, not recorded
    assert out.count("signed and chained") == 2
    # the INSS numbers the demo enrols never reach a log line, a terminal or the broker
    logs = list((tmp_path / "site" / "logs").glob("*.log"))
    assert len(logs) == 4
    for log in logs:
        text = log.read_text()
        assert not [w.name for w in WORKERS if w.inss in text], log.name
