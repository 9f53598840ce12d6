"""Issue 11, Seen 9: the gateway's install path on a Debian server, run against a fake root
as ``tests/unit/test_pi_install.py`` runs the Pi's (files written, commands recorded).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "deploy" / "gateway" / "install-debian.sh"
PI_INSTALL = REPO / "hw" / "pi" / "install.sh"
BASH = shutil.which("bash")
SERVER_UNITS = [
    "siteclock-broker.service",
    "siteclock-gateway.service",
    "siteclock-enrolment.service",
]

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def run(script: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SITECLOCK_ROOT": str(root)}
    return subprocess.run(
        [BASH, str(script), *args], env=env, capture_output=True, text=True, timeout=60
    )


def actions(root: Path) -> list[str]:
    return (root / "install-actions.log").read_text().splitlines()


def test_debian_server_gets_every_unit_then_init_then_start(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = run(DEBIAN, root, "--hostname", "gw.example.be")
    assert result.returncode == 0, result.stderr
    for unit in SERVER_UNITS:
        installed = root / "etc/systemd/system" / unit
        assert installed.read_text() == (REPO / "hw/pi" / unit).read_text()
        assert stat.S_IMODE(installed.stat().st_mode) == 0o644
    log = actions(root)
    assert "apt-get install -y --no-install-recommends python3-venv mosquitto" in log
    assert "systemctl disable --now mosquitto.service" in log  # one broker: ours
    enable = "systemctl enable " + " ".join(SERVER_UNITS)
    init = "/usr/local/bin/siteclock gateway init --hostname gw.example.be"
    start = "systemctl start " + " ".join(SERVER_UNITS)
    check = "/usr/local/bin/siteclock gateway check --config /etc/siteclock/gateway.toml"
    assert [log.index(a) for a in (enable, init, start, check)] == sorted(
        log.index(a) for a in (enable, init, start, check)
    )
    assert not (root / "boot").exists()  # a server: no Pi boot files


def test_existing_gateway_config_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/siteclock").mkdir(parents=True)
    (root / "etc/siteclock/gateway.toml").write_text("# mine\n")
    result = run(DEBIAN, root, "--hostname", "gw.example.be", "--ciao-sim", "8787")
    assert result.returncode == 0, result.stderr
    assert not any(a.startswith("/usr/local/bin/siteclock gateway init") for a in actions(root))
    assert "kept" in result.stdout
    assert (root / "etc/siteclock/gateway.toml").read_text() == "# mine\n"


def test_hostname_is_required_and_unknown_options_refused(tmp_path: Path) -> None:
    missing = run(DEBIAN, tmp_path / "a")
    assert missing.returncode == 2
    assert "--hostname is required" in missing.stderr
    unknown = run(DEBIAN, tmp_path / "b", "--hostname", "gw", "--lat", "50")
    assert unknown.returncode == 2
    assert "unknown option '--lat'" in unknown.stderr


def _suggested_commands(output: str) -> list[str]:
    """The ``siteclock <command> ...`` lines an install script's closing lines suggest, with
    the script's ``siteclock install:`` prefix removed and ``\\`` continuations joined."""
    lines = [re.sub(r"^siteclock (gateway )?install: ", "", line) for line in output.splitlines()]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return re.findall(r"siteclock [a-z][^\n]*", text)


@pytest.mark.parametrize(("script", "args"), [
    (PI_INSTALL, ()), (PI_INSTALL, ("--role", "gateway")), (DEBIAN, ("--hostname", "gw")),
])  # fmt: skip
def test_install_scripts_suggest_only_flags_that_exist(
    tmp_path: Path, script: Path, args: tuple[str, ...]
) -> None:
    """Seen 9: ``install.sh`` suggested ``--lat``/``--lon``, which ``provision run`` lacks."""
    from tests.support.doc_commands import unknown_flags

    result = run(script, tmp_path / "root", *args)
    assert result.returncode == 0, result.stderr
    suggested = [line for line in _suggested_commands(result.stdout) if " --" in line]
    assert suggested, result.stdout
    assert unknown_flags(suggested) == []
