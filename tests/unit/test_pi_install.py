"""hw/pi/install.sh run against a fake root: files, modes, the user it asks for, idempotence.

``SITECLOCK_ROOT`` makes the script write under a temporary directory and record (not run) the
commands that change the system, so the test checks exactly what a Pi would get.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parents[2] / "hw" / "pi" / "install.sh"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")

CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 rootwait\n"


def run_install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SITECLOCK_ROOT": str(root)}
    return subprocess.run(
        [BASH, str(INSTALL), *args], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def fake_pi(tmp_path: Path) -> Path:
    """A fresh Raspberry Pi OS Bookworm boot partition, nothing else."""
    root = tmp_path / "root"
    boot = root / "boot" / "firmware"
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text("# For more options and information see\ndtparam=audio=on\n")
    (boot / "cmdline.txt").write_text(CMDLINE)
    return root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def actions(root: Path) -> list[str]:
    return (root / "install-actions.log").read_text().splitlines()


def test_terminal_install_writes_system_files_with_modes(fake_pi: Path) -> None:
    result = run_install(fake_pi)
    assert result.returncode == 0, result.stderr

    unit = fake_pi / "etc/systemd/system/siteclock-terminal.service"
    assert unit.read_text() == (INSTALL.parent / "siteclock-terminal.service").read_text()
    assert mode(unit) == 0o644
    rules = fake_pi / "etc/udev/rules.d/60-siteclock-readers.rules"
    assert 'GROUP="siteclock"' in rules.read_text()
    blacklist = fake_pi / "etc/modprobe.d/blacklist-nfc.conf"
    assert "blacklist pn533_usb" in blacklist.read_text().splitlines()
    assert mode(blacklist) == 0o644

    # data on the one writable path, private to the service user; config dir not world-readable
    assert mode(fake_pi / "var/lib/siteclock") == 0o700
    assert mode(fake_pi / "etc/siteclock") == 0o750
    assert os.readlink(fake_pi / "usr/local/bin/siteclock") == "/opt/siteclock/venv/bin/siteclock"
    assert not (fake_pi / "etc/systemd/system/siteclock-gateway.service").exists()


def test_terminal_user_gets_only_serial_and_gpio_groups(fake_pi: Path) -> None:
    assert run_install(fake_pi).returncode == 0
    log = actions(fake_pi)
    useradd = [a for a in log if a.startswith("useradd ")]
    assert useradd == [
        "useradd --system --user-group --no-create-home --home-dir /var/lib/siteclock "
        "--shell /usr/sbin/nologin siteclock"
    ]
    assert "usermod --groups dialout,gpio siteclock" in log
    assert "chown siteclock:siteclock /var/lib/siteclock" in log
    # the code goes into its own venv, from the source tree by default
    assert "python3 -m venv /opt/siteclock/venv" in log
    pip = [a for a in log if a.startswith("/opt/siteclock/venv/bin/pip install")]
    assert len(pip) == 1
    assert pip[0].endswith(str(INSTALL.parents[2]))
    assert "systemctl enable siteclock-terminal.service" in log
    # installed, enabled, but not started: it is not provisioned yet
    assert not any(a.startswith("systemctl start") for a in log)


def test_uart_boot_config_and_console_removed_once(fake_pi: Path) -> None:
    assert run_install(fake_pi).returncode == 0
    assert run_install(fake_pi).returncode == 0  # twice: still one block
    config = (fake_pi / "boot/firmware/config.txt").read_text()
    assert config.startswith("# For more options")
    assert config.count("# BEGIN siteclock") == 1
    assert config.splitlines().count("enable_uart=1") == 1
    assert "dtoverlay=disable-bt" in config
    cmdline = (fake_pi / "boot/firmware/cmdline.txt").read_text()
    assert "console=serial0" not in cmdline
    assert cmdline.startswith("console=tty1 root=PARTUUID=1234-02")
    assert "systemctl disable hciuart.service" in actions(fake_pi)


def test_no_boot_config_leaves_boot_files_alone(fake_pi: Path) -> None:
    assert run_install(fake_pi, "--no-boot-config").returncode == 0
    assert "siteclock" not in (fake_pi / "boot/firmware/config.txt").read_text()
    assert (fake_pi / "boot/firmware/cmdline.txt").read_text() == CMDLINE


def test_gateway_role_has_no_device_groups(fake_pi: Path) -> None:
    result = run_install(fake_pi, "--role", "gateway", "--source", "siteclock==0.1.0")
    assert result.returncode == 0, result.stderr
    log = actions(fake_pi)
    assert (fake_pi / "etc/systemd/system/siteclock-gateway.service").exists()
    assert not (fake_pi / "etc/udev/rules.d/60-siteclock-readers.rules").exists()
    assert not any("dialout" in a or "gpio" in a for a in log)
    assert any(a.startswith("apt-get install") and "mosquitto" in a for a in log)
    assert "/opt/siteclock/venv/bin/pip install --no-cache-dir --upgrade siteclock==0.1.0" in log
    assert "siteclock" not in (fake_pi / "boot/firmware/config.txt").read_text()


def test_bad_role_is_refused_before_touching_anything(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = run_install(root, "--role", "toaster")
    assert result.returncode == 2
    assert "--role must be" in result.stderr
    assert not root.exists()
