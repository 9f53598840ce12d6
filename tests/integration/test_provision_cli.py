"""``siteclock provision token create`` and ``siteclock provision serve`` at the command line.

The employer's two gateway-side commands, run as a site runs them: ``token create`` prints the
token sheet, ``serve`` runs in its own process on a free port (real HTTPS with the site's
generated PKI), and a terminal enrols with the printed token and fingerprint through the
installer's own command (``provision run``). A token that is wrong, expired or reused is
refused with a message that tells the installer what to do. Nothing here needs a broker:
enrolment only writes the broker's password file.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from siteclock.gateway.broker_passwords import read_password_file
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.provisioning.cli import provision_cli
from siteclock.provisioning.gateway.tokens import TokenStore
from siteclock.terminal import config as terminal_config
from siteclock.terminal import identity
from tests.support.mosquitto import free_port

WP = "1Y1003SQ5VSSZ"
COORDS = "50.8503, 4.3517"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Gateway:
    db: Path
    broker_dir: Path
    url: str
    process: subprocess.Popen[str]


def gateway_args(db: Path, broker_dir: Path) -> list[str]:
    return [
        "--db", str(db), "--broker-dir", str(broker_dir), "--broker-host", "127.0.0.1",
        "--inss-key", str(db.with_name("inss.key")),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``siteclock provision serve`` in a subprocess, as systemd would run it."""
    root = tmp_path_factory.mktemp("gw")
    db, broker_dir = root / "gateway.db", root / "broker"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "siteclock.cli", "provision", "serve",
         *gateway_args(db, broker_dir), "--listen", f"127.0.0.1:{port}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.stdout is not None
    # The first line is printed (and flushed) once the endpoint listens; never wait forever.
    ready, _, _ = select.select([proc.stdout], [], [], 20.0)
    first = proc.stdout.readline() if ready else "(nothing printed within 20 s)\n"
    if f"https://127.0.0.1:{port}" not in first:
        proc.kill()
        pytest.fail(f"provision serve did not start: {first}{proc.stdout.read()}")
    try:
        yield Gateway(db, broker_dir, f"https://127.0.0.1:{port}", proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def token_create(capsys: pytest.CaptureFixture[str], gw: Gateway, *extra: str) -> tuple[int, str]:
    code = provision_cli([
        "token", "create", "--db", str(gw.db), "--workplace", WP, "--by", "An (office)",
        "--broker-dir", str(gw.broker_dir), "--broker-host", "127.0.0.1",
        "--gateway-url", gw.url, *extra,
    ])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def sheet_value(sheet: str, label: str) -> str:
    match = re.search(rf"^{label}.*?: (\S+)$", sheet, re.MULTILINE)
    assert match, f"no {label!r} line in the token sheet:\n{sheet}"
    return match.group(1)


def run_installer(
    capsys: pytest.CaptureFixture[str], gw: Gateway, data: Path, token: str, fingerprint: str,
    terminal_id: str,
) -> tuple[int, str]:  # fmt: skip
    token_file = data.with_name(data.name + ".token")  # never on the command line
    token_file.write_text(token + "\n")
    code = provision_cli([
        "run", "--data-dir", str(data), "--terminal-id", terminal_id, "--workplace", WP,
        "--coordinates", COORDS, "--gateway", gw.url, "--token-file", str(token_file),
        "--ca-fingerprint", fingerprint, "--reader", f"sim:{data / 'taps.sock'}",
        "--pin-factory", "mock", "--no-selftest", "--no-service", "--skip-check", "broker",
    ])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_token_sheet_enrols_a_terminal_through_the_served_endpoint(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, sheet = token_create(capsys, gateway)
    assert code == 0, sheet
    token = sheet_value(sheet, f"enrolment token for {WP}")
    fingerprint = sheet_value(sheet, "site CA fingerprint")
    assert len(fingerprint) == 64  # the full SHA-256: a prefix is no pin
    # The sheet's command line names the workplace, gateway and fingerprint, never the token
    # (a command line is readable by every user of the terminal, and kept in shell history).
    command = sheet.split("replace the CAPITALS:\n", 1)[1].replace("\\\n", " ")
    words = shlex.split(command)  # as a shell reads it, pasted (issue 11 Seen 9)
    assert words[words.index("--workplace") + 1] == WP
    assert words[words.index("--gateway") + 1] == gateway.url
    assert not set(command) & set("<>|;&")  # '<id>' pasted was a redirection
    assert sheet.count(token) == 1
    assert f"--ca-fingerprint {fingerprint}" in sheet
    # Stored hashed: the token itself is nowhere in the database file.
    info = TokenStore(gateway.db).info(token)
    assert info is not None
    assert info.workplace == WP
    assert info.created_by == "An (office)"
    assert token.replace("-", "").encode() not in gateway.db.read_bytes()

    data = tmp_path / "t1"
    code, output = run_installer(capsys, gateway, data, token, fingerprint, "t-cli-01")
    assert code == 0, output
    assert "enrolled at the gateway as t-cli-01" in output
    record = TerminalRegistry(gateway.db).get("t-cli-01")
    assert record is not None
    assert record.workplace == WP
    assert identity.load(data / "terminal.key").kid in record.keys
    # The served endpoint gave the terminal a broker login and pinned the site CA.
    assert "t-cli-01" in read_password_file(gateway.broker_dir / "passwd")
    cfg = terminal_config.load(data / "terminal.toml")
    assert cfg.uplink is not None
    assert cfg.uplink.port == 8883
    assert (data / "ca.pem").read_text() == (gateway.broker_dir / "pki" / "ca.pem").read_text()

    # The same token again (another terminal): refused, with what to do.
    code, output = run_installer(capsys, gateway, tmp_path / "t2", token, fingerprint, "t-cli-02")
    assert code == 1
    assert "not authorised" in output
    assert TerminalRegistry(gateway.db).get("t-cli-02") is None


def test_wrong_and_expired_tokens_are_refused_clearly(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, sheet = token_create(capsys, gateway)
    fingerprint = sheet_value(sheet, "site CA fingerprint")
    typo = "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF"
    code, output = run_installer(capsys, gateway, tmp_path / "t3", typo, fingerprint, "t-cli-03")
    assert code == 1
    assert "not authorised" in output
    assert not (tmp_path / "t3" / "terminal.toml").exists()

    two_hours_ago = TokenStore(gateway.db, clock=lambda: time.time_ns() - 7200 * 10**9)
    expired = two_hours_ago.create(WP, ttl_s=3600).token
    code, output = run_installer(capsys, gateway, tmp_path / "t4", expired, fingerprint, "t-cli-04")
    assert code == 1
    assert "not authorised" in output
    # Refused before anything was claimed: the terminal is unknown, the token still unused.
    assert TerminalRegistry(gateway.db).get("t-cli-04") is None
    assert TokenStore(gateway.db).info(expired).used_by is None

    # A fingerprint that is not the site CA's: the installer never talks to that gateway.
    code, output = run_installer(
        capsys, gateway, tmp_path / "t5", expired, "0" * 64, "t-cli-05"
    )  # fmt: skip
    assert code == 1
    assert "wrong address, or someone in between" in output
    # A prefix of the right fingerprint is not a pin.
    code, output = run_installer(
        capsys, gateway, tmp_path / "t6", expired, fingerprint[:16], "t-cli-06"
    )  # fmt: skip
    assert code == 1
    assert "not a prefix" in output


def test_token_create_refuses_bad_input(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code = provision_cli(
        ["token", "create", "--db", str(gateway.db), "--workplace", "1Y1003SQ5VSSO"]
    )
    assert code == 2
    assert "is not a Declaration of Works reference" in capsys.readouterr().err
    code, output = token_create(capsys, gateway, "--ttl-hours", "2000")
    assert code == 2
    assert "between 1 minute and 30 days" in output


def test_serve_stops_cleanly_on_sigterm(gateway: Gateway) -> None:
    # Last in this module: the endpoint served every test above, now systemd stops it.
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(10) == 0
    assert gateway.process.stdout is not None
    assert "enrolment endpoint stopped" in gateway.process.stdout.read()
