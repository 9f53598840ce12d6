"""The systemd units pass ``systemd-analyze verify`` and keep the settings the design relies on.

``verify`` runs against a fake root holding the host's stock units, our unit and a stand-in
``/opt/siteclock/venv/bin/siteclock`` (verify checks that ExecStart is executable), so the check
needs no installed siteclock and no running systemd. Any warning about our unit fails the test,
not only a non-zero exit: systemd ignores unknown keys and bad values with a warning only.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

PI = Path(__file__).resolve().parents[2] / "hw" / "pi"
UNITS = ["siteclock-terminal.service", "siteclock-gateway.service"]
"""The services siteclock itself runs (Type=notify, watchdog)."""
SERVER_UNITS = ["siteclock-broker.service", "siteclock-enrolment.service"]
"""The gateway server's other long-running parts: Mosquitto and the enrolment endpoint."""
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
STOCK_UNITS = Path("/usr/lib/systemd/system")


def parse(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((PI / name).read_text())
    return parser


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(STOCK_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for name in ("opt/siteclock/venv/bin/siteclock", "usr/sbin/mosquitto", "bin/kill"):
        exe = root / name
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return root


@pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or not STOCK_UNITS.is_dir(), reason="systemd-analyze not available"
)
@pytest.mark.parametrize("name", UNITS + SERVER_UNITS)
def test_unit_passes_systemd_analyze_verify(unit_root: Path, name: str) -> None:
    target = unit_root / "etc/systemd/system" / name
    target.parent.mkdir(parents=True)
    shutil.copy(PI / name, target)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", f"--root={unit_root}", name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    complaints = [line for line in result.stderr.splitlines() if name in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


def test_verify_would_catch_a_broken_unit(unit_root: Path) -> None:
    """The check above can fail: a unit with a bad value produces a complaint naming it."""
    if SYSTEMD_ANALYZE is None or not STOCK_UNITS.is_dir():
        pytest.skip("systemd-analyze not available")
    name = "siteclock-broken.service"
    target = unit_root / "etc/systemd/system" / name
    target.parent.mkdir(parents=True)
    target.write_text((PI / UNITS[0]).read_text().replace("WatchdogSec=30", "WatchdogSec=soon"))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", f"--root={unit_root}", name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert any(name in line for line in result.stderr.splitlines()), result.stderr


@pytest.mark.parametrize("name", UNITS)
def test_unit_is_notify_with_watchdog_and_restart(name: str) -> None:
    service = parse(name)["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert service["User"] == "siteclock"
    # read-only root: only the data path (and, for the gateway, the INSS key's own directory,
    # kept apart from the database) is writable for the service
    assert service["ProtectSystem"] == "strict"
    extra = ["-/etc/siteclock/keys"] if "gateway" in name else []
    assert service["ReadWritePaths"].split() == ["/var/lib/siteclock", *extra]


@pytest.mark.parametrize("name", UNITS)
def test_unit_does_not_wait_for_time_sync(name: str) -> None:
    unit = parse(name)["Unit"]
    ordering = " ".join(unit.get(key, "") for key in ("After", "Wants", "Requires", "BindsTo"))
    assert "time-sync.target" not in ordering
    assert "time-set.target" not in ordering


def test_terminal_unit_groups_are_serial_and_gpio_only() -> None:
    service = parse("siteclock-terminal.service")["Service"]
    assert sorted(service["SupplementaryGroups"].split()) == ["dialout", "gpio"]
    assert "SupplementaryGroups" not in parse("siteclock-gateway.service")["Service"]


def test_broker_unit_gives_mosquitto_many_file_descriptors() -> None:
    """Issue 11, Seen 9: one descriptor per terminal; the default 1024 would refuse a site's
    terminals past about a thousand (the terminals' listener allows 2000)."""
    service = parse("siteclock-broker.service")["Service"]
    assert int(service["LimitNOFILE"]) >= 65536
    assert service["ExecStart"].split() == [
        "/usr/sbin/mosquitto", "-c", "/etc/siteclock/broker/mosquitto.conf",
    ]  # fmt: skip
    assert "HUP" in service["ExecReload"]


def test_enrolment_unit_runs_the_enrolment_endpoint_with_least_privilege() -> None:
    """Issue 11, Seen 9: the enrolment server has a unit; it may signal the broker (another
    user) after each enrolment, and nothing else."""
    service = parse("siteclock-enrolment.service")["Service"]
    assert service["ExecStart"].split()[1:4] == ["provision", "serve", "$ENROLMENT_ARGS"]
    assert service["EnvironmentFile"] == "/etc/siteclock/enrolment.env"
    assert service["User"] == "siteclock"
    assert service["SupplementaryGroups"] == "mosquitto"
    assert service["AmbientCapabilities"] == service["CapabilityBoundingSet"] == "CAP_KILL"
    assert "/etc/siteclock/broker" in service["ReadWritePaths"].split()
