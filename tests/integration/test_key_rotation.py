"""Key rotation end to end: overlap, delivery of what the old key signed, then revocation.

Real parts: Mosquitto with the site's configuration, a running :class:`gateway.service.Gateway`
(intake and rosters, no relay) on a SQLite file, the HTTPS enrolment endpoint (``/v1/keys``),
a terminal provisioned by the installer and run as :class:`terminal.service.Terminal` with the
simulated reader. GPIO is gpiozero's ``MockFactory``; systemd is replaced by
:class:`InProcessService`, which stops and starts that same in-process terminal.

The story: a terminal records taps under key A; the gateway goes away, so some stay queued;
``rotate_key`` registers key B (the gateway then holds A and B), restarts the terminal with B
and waits; new taps are signed by B; the gateway comes back, everything queued is accepted
(A's events as A signed them), and only then A is revoked. The hash chain verifies across the
rotation with both public keys. A second rotation runs as ``siteclock provision rotate-key
--no-service`` with the service down, the command delivering the old key's events itself.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from siteclock.gateway.config import GatewayConfig, MqttConfig
from siteclock.gateway.intake import Intake
from siteclock.gateway.service import Gateway
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.hw import sim
from siteclock.protocol import Channel, Kind, ProtocolError, encode_batch, topic
from siteclock.provisioning.cli import provision_cli
from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts
from siteclock.provisioning.gateway.service import EnrolmentService
from siteclock.provisioning.gateway.tokens import TokenStore
from siteclock.provisioning.shared.ca import ca_fingerprint
from siteclock.provisioning.shared.requests import BrokerEndpoint, sign_key_request
from siteclock.provisioning.shared.workplace import Coordinates, WorkplaceBinding
from siteclock.provisioning.terminal.client import GatewayClient, GatewayError
from siteclock.provisioning.terminal.installer import Installer, ProvisionOptions
from siteclock.provisioning.terminal.rotation import KeyFiles, rotate_key
from siteclock.provisioning.terminal.systemd import ServiceControl
from siteclock.terminal import config as terminal_config
from siteclock.terminal import identity
from siteclock.terminal.clock import read_clock
from siteclock.terminal.outbox import Outbox, verify_cli
from siteclock.terminal.service import Terminal
from tests.support import waiting
from tests.support.enrolment_server import enrolment_server
from tests.support.mosquitto import MosquittoBroker, gateway_config, running_broker

WP = "1Y1003SQ5VSSZ"
TID = "t-rotate-01"


# this module's ceiling for a condition to come true (tests.support.waiting)
wait_for = functools.partial(waiting.wait_for, timeout=20.0)


class InProcessService(ServiceControl):
    """Stands in for ``systemctl stop|restart siteclock-terminal``: the terminal service is
    a :class:`Terminal` in this process, rebuilt from its configuration at each start (so it
    loads whatever key file is current, as the real service does)."""

    def __init__(self, config_path: Path) -> None:
        super().__init__(enabled=False)
        self.enabled = True  # "the service is managed here": rotate_key lets it deliver
        self.config_path = config_path
        self.terminal: Terminal | None = None
        self.starts = 0

    def start(self) -> None:
        self.stop()
        cfg = terminal_config.load(self.config_path)
        self.terminal = Terminal(cfg, pin_factory=MockFactory())
        self.terminal.start()
        self.starts += 1
        sock = Path(cfg.reader.spec.removeprefix("sim:"))
        wait_for(sock.exists, "the sim reader's socket")

    def stop(self) -> None:
        if self.terminal is not None:
            self.terminal.stop()
            self.terminal = None

    @property
    def outbox(self) -> Outbox:
        assert self.terminal is not None, "the terminal service is not running"
        return self.terminal.outbox

    def tap(self, *badges: str) -> None:
        """Tap badges on the reader and wait until each one is recorded."""
        total = self.outbox.stats().total
        sock = self.terminal.config.reader.spec.removeprefix("sim:")  # type: ignore[union-attr]
        assert sim.send_taps(sock, list(badges)) == ["ok"] * len(badges)
        wait_for(lambda: self.outbox.stats().total == total + len(badges), "taps recorded")


@dataclass
class Site:
    root: Path
    broker: MosquittoBroker
    db: Path
    url: str
    cfg: GatewayConfig
    registry: TerminalRegistry
    gateway: Gateway | None = None

    def start_gateway(self) -> None:
        self.gateway = Gateway(self.cfg)
        self.gateway.start(wait_s=10.0)

    def stop_gateway(self) -> None:
        assert self.gateway is not None
        self.gateway.stop()
        self.gateway = None


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with running_broker(tmp_path / "broker") as broker:
        db = tmp_path / "gateway.db"
        cfg = GatewayConfig(
            db=db, signing_key_file=tmp_path / "gateway-signing.key",
            gateway_keys_file=tmp_path / "gateway-keys.json",
            mqtt=gateway_config(broker, client_id="siteclock_gateway-rotation"), ciao=None,
            inss_key_file=tmp_path / "keys" / "inss.key",
        )  # fmt: skip
        gw_key = identity.load_or_create(cfg.signing_key_file)
        ca_pem = broker.ca_file.read_text()
        registry = TerminalRegistry(db)
        service = EnrolmentService(
            TokenStore(db), registry, BrokerAccounts(broker.workdir / "passwd", broker.reload),
            endpoint=BrokerEndpoint("127.0.0.1", broker.port, ca_pem),
            gateway_keys={gw_key.kid: gw_key.public_key_bytes().hex()},
        )  # fmt: skip
        with enrolment_server(service, broker, ca_pem) as url:
            s = Site(tmp_path, broker, db, url, cfg, registry)
            s.start_gateway()
            try:
                yield s
            finally:
                if s.gateway is not None:
                    s.stop_gateway()


def provision(site: Site, data: Path) -> Path:
    token = TokenStore(site.db).create(WP, ttl_s=3600).token
    opts = ProvisionOptions(
        data_dir=data, terminal_id=TID, workplace=WorkplaceBinding(WP, Coordinates(50.85, 4.35)),
        gateway_url=site.url, token=token, reader_spec=f"sim:{data / 'taps.sock'}",
        ca_fingerprint=ca_fingerprint(site.broker.ca_file.read_text()), pin_factory="mock",
        selftest=False,
    )  # fmt: skip
    assert Installer(opts, service=ServiceControl(enabled=False), out=lambda _m: None).run() == 0
    return data / "terminal.toml"


def public_key(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().strip())


def kids_in_outbox(box: Outbox) -> list[str]:
    return [e.envelope.kid for e in box.events()]


@pytest.mark.slow
def test_rotation_overlaps_keys_delivers_old_events_then_revokes(
    site: Site, tmp_path: Path
) -> None:
    data = tmp_path / "terminal"
    config_path = provision(site, data)
    key_file = data / "terminal.key"
    key_a = identity.load(key_file)
    service = InProcessService(config_path)
    service.start()
    try:
        # Key A: two taps delivered, then the gateway goes away and three stay queued.
        service.tap("sim:0A01", "sim:0A02")
        wait_for(lambda: service.outbox.stats().depth == 0, "acks under key A")
        site.stop_gateway()
        service.tap("sim:0A03", "sim:0A04", "sim:0A05")
        assert service.outbox.stats().depth == 3

        messages: list[str] = []
        result: list[int] = []
        rotation = threading.Thread(
            target=lambda: result.append(
                rotate_key(data, gateway_url=site.url, service=service,
                           drain_timeout_s=30.0, out=messages.append)
            ),
            daemon=True,
        )  # fmt: skip
        rotation.start()

        # Overlap: the gateway holds A and B, the terminal signs with B, A is not revoked.
        wait_for(lambda: service.starts == 2, "the terminal restarted with the new key")
        key_b = identity.load(key_file)
        assert key_b.kid != key_a.kid
        record = site.registry.get(TID)
        assert record is not None
        assert set(record.keys) == {key_a.kid, key_b.kid}
        service.tap("sim:0B01", "sim:0B02")
        assert kids_in_outbox(service.outbox) == [key_a.kid] * 5 + [key_b.kid] * 2
        time.sleep(1.0)  # the rotation keeps waiting while A's events are queued
        assert rotation.is_alive()
        record = site.registry.get(TID)
        assert record is not None
        assert key_a.kid in record.keys

        # The gateway comes back: everything queued is accepted, then A is revoked.
        site.start_gateway()
        rotation.join(30.0)
        assert result == [0], messages
        assert service.outbox.stats().depth == 0
        record = site.registry.get(TID)
        assert record is not None
        assert record.revoked_kids == {key_a.kid}
        assert set(record.keys) == {key_b.kid}
        assert site.gateway is not None
        assert site.gateway.intake.counters["unknown_key"] == 0
        assert site.gateway.intake.counters["revoked_key"] == 0

        # The gateway holds exactly the terminal's events, A's as A signed them.
        held = [(e.event.seq, e.digest) for e in service.outbox.events()]
        stored = [(seq, digest) for seq, _id, digest in Inbox(site.db).rows(TID)]
        assert stored == held
        assert len(held) == 7

        # Key files: B current, A's private half gone, A's public half kept for evidence.
        assert not (data / "terminal.key.old").exists()
        assert not (data / "terminal.key.new").exists()
        assert public_key(data / "terminal.key.pub") == key_b.public_key_bytes()
        retired = data / f"terminal.key.{key_a.kid}.pub"
        assert public_key(retired) == key_a.public_key_bytes()

        # One chain across the rotation: it verifies with both keys, not with B alone.
        both = {key_a.kid: public_key(retired), key_b.kid: public_key(data / "terminal.key.pub")}
        assert service.outbox.verify(both) == 7
        with pytest.raises(ProtocolError):
            service.outbox.verify({key_b.kid: key_b.public_key_bytes()})

        # A is revoked for good: an event it signs now is refused by the gateway.
        forged_box = Outbox(tmp_path / "forged.db", signer=key_a, terminal_id=TID, workplace=WP)
        with forged_box:
            forged = forged_box.append(kind=Kind.IN, badge="sim:0F0F", clock=read_clock())
        intake = Intake(MqttConfig(tls=False), inbox=Inbox(site.db), registry=site.registry)
        handled = intake.handle(topic(TID, Channel.EVENTS), encode_batch([forged]))
        assert handled.ack_seqs == []
        assert intake.counters["revoked_key"] == 1
        # ... and it can no longer speak for the terminal at the enrolment endpoint either.
        client = GatewayClient(site.url, data / "ca.pem")
        with pytest.raises(GatewayError) as refused:
            client.keys(sign_key_request(TID, current=key_a, revoke_kid=key_b.kid))
        assert refused.value.reason == "unauthorized"  # counted as unknown_key, told nothing
        with pytest.raises(GatewayError) as refused:
            client.keys(sign_key_request(TID, current=key_b, revoke_kid="0123456789abcdef"))
        assert refused.value.reason == "unknown_key"
        # A revocation whose answer was lost is simply repeated.
        assert client.keys(sign_key_request(TID, current=key_b, revoke_kid=key_a.kid)) == key_a.kid

        # Second rotation through the command line, service down: B's queued events are
        # delivered by the command itself before B is revoked. The first attempt "lost power"
        # after registering key C and giving B its second name, before the rename; the same
        # command run again finishes the job.
        site.stop_gateway()
        service.tap("sim:0B03")
        service.stop()
        site.start_gateway()
        files = KeyFiles(key_file)
        key_c = identity.load_or_create(files.new)
        client.keys(sign_key_request(TID, current=key_b, add=key_c))
        os.link(files.current, files.old)
        code = provision_cli([
            "rotate-key", "--data-dir", str(data), "--gateway", site.url, "--no-service",
            "--drain-timeout", "30",
        ])  # fmt: skip
        assert code == 0
        assert identity.load(key_file).kid == key_c.kid
        record = site.registry.get(TID)
        assert record is not None
        assert set(record.keys) == {key_c.kid}
        assert record.revoked_kids == {key_a.kid, key_b.kid}
        service.start()
        service.tap("sim:0C01")
        wait_for(lambda: service.outbox.stats().depth == 0, "acks under key C")
        keys = {key_a.kid: key_a.public_key_bytes(), key_b.kid: key_b.public_key_bytes(),
                key_c.kid: key_c.public_key_bytes()}  # fmt: skip
        assert service.outbox.verify(keys) == 9
        assert kids_in_outbox(service.outbox)[-2:] == [key_b.kid, key_c.kid]
        # the offline check an inspector runs takes every public key the terminal ever used
        pub_files = sorted(key_file.parent.glob("terminal.key*.pub"))
        assert len(pub_files) == 3
        args = ["--db", str(data / "outbox.db")]
        assert verify_cli([*args, *(a for f in pub_files for a in ("--public-key", str(f)))]) == 0
        assert verify_cli([*args, "--public-key", str(key_file.parent / "terminal.key.pub")]) == 1
    finally:
        service.stop()
