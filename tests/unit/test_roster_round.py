"""The gateway's roster round at fleet size: one site's roster read and checked once for all its
terminals, nothing published (and no per-terminal lookup) when nothing changed, disabled
terminals left out, and a change republishing only the workplace it touches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siteclock.gateway import roster as roster_module
from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.service import Gateway
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Channel, topic
from tests.support.ciao import make_enterprise, make_inss

SITE_A, SITE_B = "1Y1003SQ5VSSZ", "2Y1003SQ5VSSZ"


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic_name: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        self.sent.append((topic_name, payload))


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    cfg = GatewayConfig(
        db=tmp_path / "gateway.db",
        signing_key_file=tmp_path / "signing.key",
        inss_key_file=tmp_path / "inss.key",
    )
    gw = Gateway(cfg)
    gw.rosters._link = Recorder()
    for n, site in enumerate((SITE_A, SITE_B)):
        gw.registry.add_workplace(site, latitude=50.85, longitude=4.35)
        gw.registry.add_worker(f"w-{n}", f"Worker {n}", inss=make_inss(n + 1),
                               employer=make_enterprise(1))  # fmt: skip
        gw.registry.assign(f"w-{n}", site)
        gw.registry.enrol_badge(f"nfc-a:0A0B0C0{n}", f"w-{n}")
    for i in range(6):
        site = SITE_A if i < 4 else SITE_B
        key = Ed25519Signer.generate().public_key_bytes()
        gw.terminals.register(f"t-{i:02d}", site, public_key=key)
    yield gw
    gw.site_day.close()


def sent_to(gw: Gateway) -> list[str]:
    link = gw.rosters._link
    assert isinstance(link, Recorder)
    names = [name for name, _ in link.sent]
    link.sent.clear()
    return names


def test_each_active_terminal_gets_its_sites_roster_once(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[int] = []
    real_check = roster_module.check_entries
    monkeypatch.setattr(roster_module, "check_entries", lambda e: checks.append(1) or real_check(e))
    gateway.terminals.set_status("t-05", "disabled")

    assert gateway.publish_rosters() == 5
    assert sorted(sent_to(gateway)) == [topic(f"t-{i:02d}", Channel.CONFIG) for i in range(5)]
    assert len(checks) == 2  # once per workplace, not once per terminal


def test_a_round_with_nothing_changed_publishes_nothing_and_reads_no_terminal(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert gateway.publish_rosters() == 6
    sent_to(gateway)

    def no_lookup(*_: object) -> None:
        raise AssertionError("a per-terminal lookup in an unchanged round")

    monkeypatch.setattr(gateway.terminals, "get", no_lookup)
    assert gateway.publish_rosters() == 0
    assert sent_to(gateway) == []


def test_a_new_badge_republishes_only_its_workplace(gateway: Gateway) -> None:
    gateway.publish_rosters()
    sent_to(gateway)
    gateway.registry.add_worker("w-9", "Worker 9", inss=make_inss(9), employer=make_enterprise(1))
    gateway.registry.assign("w-9", SITE_B)
    gateway.registry.enrol_badge("nfc-a:0A0B0C09", "w-9")

    assert gateway.publish_rosters() == 2
    assert sorted(sent_to(gateway)) == [
        topic("t-04", Channel.CONFIG),
        topic("t-05", Channel.CONFIG),
    ]
