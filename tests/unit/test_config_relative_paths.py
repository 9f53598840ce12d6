"""Issue 11, Seen 7: a relative ``data_dir`` started from another folder made a second data
directory and a second signing key. Relative paths in a configuration file are now relative
to the file's folder, whatever the current directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteclock.config import load as load_config
from siteclock.gateway.config import GatewayConfig
from siteclock.terminal import identity
from siteclock.terminal.config import load

TERMINAL = """
terminal_id = "t-0001"
workplace = "ABCDEFGH12345"
data_dir = "data"

[reader]
spec = "sim:/run/siteclock/taps.sock"
"""


def test_relative_data_dir_is_beside_the_config_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    site.mkdir()
    elsewhere.mkdir()
    (site / "terminal.toml").write_text(TERMINAL)
    keys = set()
    for cwd in (site, elsewhere):
        monkeypatch.chdir(cwd)
        cfg = load(site / "terminal.toml")
        assert cfg.data_dir == site / "data"
        (site / "data").mkdir(exist_ok=True)
        keys.add(identity.load_or_create(cfg.key_path).kid)
    assert len(keys) == 1  # one key, whichever folder the service was started from
    assert not (elsewhere / "data").exists()


def test_a_config_named_by_a_relative_path_still_resolves_beside_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gw").mkdir()
    (tmp_path / "gw" / "gateway.toml").write_text(
        'db = "gateway.db"\nsigning_key_file = "/etc/siteclock/gateway-signing.key"\n'
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("gw/gateway.toml"), GatewayConfig)
    assert cfg.db == tmp_path / "gw" / "gateway.db"
    assert cfg.signing_key_file == Path("/etc/siteclock/gateway-signing.key")
