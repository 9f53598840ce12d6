"""``siteclock console``: accounts from the command line (passwords never as arguments), the
audit trail, and the ``[console]`` table of gateway.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteclock.config import load
from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.console.accounts import Accounts, Role
from siteclock.gateway.console.cli import cli
from siteclock.gateway.db import SQLiteGatewayDB

SITE = "1Y1003SQ5VSSZ"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'db = "{tmp_path / "gateway.db"}"\n'
        f'signing_key_file = "{tmp_path / "signing.key"}"\n'
        "[console]\nport = 9443\n"
        f'cert_file = "{tmp_path / "server.pem"}"\nkey_file = "{tmp_path / "server.key"}"\n'
        'default_language = "fr"\n'
    )
    (tmp_path / "password").write_text("a long enough password\n")
    return path


def test_the_console_table_is_read_from_gateway_toml(config: Path) -> None:
    console = load(config, GatewayConfig).console
    assert console is not None
    assert (console.port, console.default_language) == (9443, "fr")
    assert console.cert_file == config.parent / "server.pem"


def test_accounts_are_managed_from_the_command_line(config: Path, capsys) -> None:
    password = str(config.parent / "password")
    assert cli(["add-user", "--config", str(config), "an", "--role", "admin",
                "--password-file", password]) == 0  # fmt: skip
    assert cli(["add-user", "--config", str(config), "bert", "--role", "site_manager",
                "--worksite", SITE, "--password-file", password]) == 0  # fmt: skip
    assert cli(["update-user", "--config", str(config), "bert", "--disable"]) == 0
    assert cli(["users", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "an\tadmin\tevery worksite" in out
    assert f"bert\tsite_manager\t{SITE}\tDISABLED" in out
    db = SQLiteGatewayDB(config.parent / "gateway.db")
    try:
        assert Accounts(db).check_password("an", "a long enough password").role is Role.ADMIN
        assert Accounts(db).check_password("bert", "a long enough password") is None
    finally:
        db.close()


def test_a_refused_account_says_why_in_one_line(config: Path, capsys) -> None:
    password = str(config.parent / "password")
    code = cli(["add-user", "--config", str(config), "bert", "--role", "site_manager",
                "--password-file", password])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "needs at least one worksite" in err


def test_there_is_no_password_argument() -> None:
    with pytest.raises(SystemExit):
        cli(["add-user", "--config", "x.toml", "an", "--role", "admin", "--password", "secret"])


def test_the_console_is_never_served_without_a_certificate(tmp_path: Path) -> None:
    from siteclock.gateway.console.config import ConsoleConfig
    from siteclock.gateway.console.server import ConsoleServerError, serve_console

    with pytest.raises(ConsoleServerError, match="HTTPS only"):
        serve_console(object(), ConsoleConfig(port=0))
    with pytest.raises(ConsoleServerError, match="cannot load"):
        serve_console(object(), ConsoleConfig(port=0, cert_file=tmp_path / "none.pem",
                                              key_file=tmp_path / "none.key"))  # fmt: skip
