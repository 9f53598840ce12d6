"""The quick start (``docs/quickstart.md``) runs as written: issue 11's proof.

The blocks marked ``# quickstart: run`` are run in order, as they are, by one ``bash`` from
the repository's root (where ``cd siteclock`` would have left a reader); only the variables
the document itself reads are set, to a fresh folder and free ports. Then the block marked
``# quickstart: check`` is repeated until it shows the tap *registered* by the CIaO
simulator. Every process the document started is stopped afterwards (its own process group,
and the broker by its pid file, as the document's stop block does).

``-s`` prints the figures: the number of commands a person pastes and the time they take.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import free_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "docs" / "quickstart.md"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed"),
]


def blocks(text: str, marker: str) -> list[str]:
    """The ``sh`` blocks whose first line is ``# quickstart: <marker>``, without that line."""
    found = []
    for body in re.findall(r"```sh\n(.*?)```", text, re.S):
        first, _, rest = body.partition("\n")
        if first.strip().startswith(f"# quickstart: {marker}"):
            found.append(rest)
    return found


def count_commands(script: str) -> int:
    """Commands a person pastes: lines, with ``\\`` continuations joined, minus comments."""
    joined = re.sub(r"\\\n", " ", script)
    return sum(1 for line in joined.splitlines() if line.strip() and not line.startswith("#"))


def test_blocks_are_marked() -> None:
    text = QUICKSTART.read_text()
    assert len(blocks(text, "run")) >= 4
    assert len(blocks(text, "check")) == 1
    # Every sh block is marked: nothing a reader pastes escapes the test unmarked.
    assert len(re.findall(r"```sh\n", text)) == sum(
        len(blocks(text, m)) for m in ("run", "check", "install", "stop")
    )


@pytest.fixture
def site() -> Iterator[Path]:
    # Outside pytest's 0700 tmp_path: the broker's own user must reach its files.
    root = Path(tempfile.mkdtemp(prefix="siteclock-quickstart-"))
    root.chmod(0o755)
    try:
        yield root / "site"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_quickstart_reaches_a_registered_tap(site: Path) -> None:
    text = QUICKSTART.read_text()
    script = "\n".join(blocks(text, "run"))
    (check,) = blocks(text, "check")
    env = {
        **os.environ,
        "SITE": str(site),
        "MQTT_PORT": str(free_port()),
        "GATEWAY_PORT": str(free_port()),
        "ENROL_PORT": str(free_port()),
        "CIAO_PORT": str(free_port()),
    }
    env.pop("SITECLOCK_TOKEN", None)
    log = site.parent / "quickstart.out"
    started = time.monotonic()
    with log.open("wb") as out:
        shell = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        rc = shell.wait(timeout=240)
        assert rc == 0, log.read_text(errors="replace")[-4000:]
        shown = wait_for(lambda: _registered(check, env), "the tap registered by the simulator", 90)
        elapsed = time.monotonic() - started
    finally:
        _stop_everything(shell.pid, site)
    assert "t-quickstart:1" in shown
    commands = count_commands(script) + count_commands(check)
    installs = sum(count_commands(b) for b in blocks(text, "install"))
    print(
        f"\nquick start: {commands} commands (+{installs} to get the code), "
        f"{elapsed:.1f} s from `make venv` to a registered tap on this machine"
    )


def _registered(check: str, env: dict[str, str]) -> str | None:
    env = {**env, "PATH": f"{REPO / '.venv' / 'bin'}:{env['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", check], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    return result.stdout if " registered " in result.stdout else None


def _stop_everything(group: int, site: Path) -> None:
    """SIGTERM to the document's background processes (its shell's group), then the broker,
    which daemonised into its own session and wrote its pid file."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    pid_file = site / "etc" / "broker" / "mosquitto.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)
