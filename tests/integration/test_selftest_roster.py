"""Issue 11, Seen 3: the installer's self-test fails when the terminal cannot verify its
rosters (it used to pass, while workers were not greeted and blocked badges not flagged).

Real parts: Mosquitto with the site's configuration, a running gateway (its roster loop
publishes the terminal's signed roster), and the self-test's own uplink reading it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.service import Gateway
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer, create
from siteclock.provisioning.terminal.selftest import Verdict, check_roster
from siteclock.terminal.config import ReaderConfig, TerminalConfig
from tests.support.mosquitto import gateway_config, running_broker, terminal_config

TERMINAL, WORKPLACE = "t-selftest-01", "1Y1003SQ5VSSZ"


@dataclass
class Site:
    cfg: TerminalConfig
    keys_file: Path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with running_broker(tmp_path / "broker", terminals=[TERMINAL]) as broker:
        keys_file = tmp_path / "gateway-keys.json"
        (tmp_path / "keys").mkdir(mode=0o700)
        gw_cfg = GatewayConfig(
            db=tmp_path / "gateway.db", signing_key_file=tmp_path / "gateway-signing.key",
            gateway_keys_file=keys_file, mqtt=gateway_config(broker), roster_check_s=0.1,
            inss_key_file=tmp_path / "keys" / "inss.key",
        )  # fmt: skip
        gateway = Gateway(gw_cfg)
        data = tmp_path / "terminal"
        data.mkdir()
        signer = create(data / "terminal.key")
        TerminalRegistry(gw_cfg.db).register(
            TERMINAL, WORKPLACE, public_key=signer.public_key_bytes()
        )
        cfg = TerminalConfig(
            terminal_id=TERMINAL, workplace=WORKPLACE, data_dir=data,
            reader=ReaderConfig(spec=f"sim:{data / 'taps.sock'}"),
            uplink=terminal_config(broker, TERMINAL, gateway_keys_file=keys_file),
        )  # fmt: skip
        gateway.start(wait_s=10.0)
        try:
            yield Site(cfg, keys_file)
        finally:
            gateway.stop()


def with_keys(site: Site, keys_file: Path | None) -> TerminalConfig:
    assert site.cfg.uplink is not None
    return replace(site.cfg, uplink=replace(site.cfg.uplink, gateway_keys_file=keys_file))


def test_roster_verified_passes(site: Site) -> None:
    check = check_roster(site.cfg, timeout_s=15)
    assert check.verdict is Verdict.PASS, check.detail
    assert "verified" in check.detail


def test_no_roster_keys_fails_and_says_what_to_do(site: Site) -> None:
    check = check_roster(with_keys(site, None), timeout_s=15)
    assert check.verdict is Verdict.FAIL
    assert "no roster keys" in check.detail
    assert "gateway_keys_file" in check.detail


def test_keys_of_another_gateway_fail(site: Site, tmp_path: Path) -> None:
    stranger = Ed25519Signer.generate()
    wrong = tmp_path / "other-keys.json"
    wrong.write_text(json.dumps({stranger.kid: stranger.public_key_bytes().hex()}))
    check = check_roster(with_keys(site, wrong), timeout_s=15)
    assert check.verdict is Verdict.FAIL
    assert "roster refused" in check.detail
