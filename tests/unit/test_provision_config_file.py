"""terminal.toml written by provisioning: data in, the same data out, whatever the characters."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from siteclock.provisioning.shared.workplace import Coordinates, WorkplaceBinding
from siteclock.provisioning.terminal.config_file import (
    HEADER,
    config_document,
    rebind_config,
    write_config,
)
from siteclock.provisioning.terminal.installer import ProvisionOptions
from siteclock.terminal import config as terminal_config

WP1, WP2 = "1Y1003SQ5VSSZ", "2Y1003SQ5VSSZ"


def options(data_dir: Path, **extra: object) -> ProvisionOptions:
    return ProvisionOptions(
        data_dir=data_dir, terminal_id="t-cfg-01",
        workplace=WorkplaceBinding(WP1, Coordinates(50.85, 4.35)),
        gateway_url="https://gw:8443", token="x", reader_spec="tty:AMA0:pn532", **extra,
    )  # fmt: skip


@pytest.fixture
def odd_dir(tmp_path: Path) -> Path:
    """A data directory whose name needs escaping in TOML: quotes, a backslash, an accent."""
    path = tmp_path / 'site "Gent" \\ été'
    path.mkdir()
    return path


def test_written_configuration_loads_with_every_value(odd_dir: Path) -> None:
    opts = options(odd_dir, pin_factory="mock", feedback_journal=odd_dir / "feedback.log")
    doc = config_document(opts, workplace=WP1, host="gw.site.local", port=8883, data_dir=odd_dir)
    cfg = write_config(odd_dir / "terminal.toml", doc)

    text = (odd_dir / "terminal.toml").read_text()
    assert text.startswith(HEADER)
    assert tomllib.loads(text) == doc
    assert cfg == terminal_config.load(odd_dir / "terminal.toml")
    assert (cfg.terminal_id, cfg.workplace, cfg.key_path) == (
        "t-cfg-01", WP1, odd_dir / "terminal.key",
    )  # fmt: skip
    assert cfg.uplink is not None
    assert (cfg.uplink.host, cfg.uplink.port, cfg.uplink.ca_file) == (
        "gw.site.local", 8883, odd_dir / "ca.pem",
    )  # fmt: skip
    assert ((odd_dir / "terminal.toml").stat().st_mode & 0o777) == 0o600


def test_rebind_changes_the_workplace_and_nothing_else(odd_dir: Path) -> None:
    doc = config_document(
        options(odd_dir), workplace=WP1, host="gw", port=8883, data_dir=odd_dir
    )
    before = write_config(odd_dir / "terminal.toml", doc)
    after = rebind_config(odd_dir / "terminal.toml", WP2)
    assert after.workplace == WP2
    assert tomllib.loads((odd_dir / "terminal.toml").read_text()) == {**doc, "workplace": WP2}
    assert (after.uplink, after.key_path, after.terminal_id) == (
        before.uplink, before.key_path, before.terminal_id,
    )  # fmt: skip
