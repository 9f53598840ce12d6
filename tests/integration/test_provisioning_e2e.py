"""Provisioning end to end with real parts: Mosquitto, the gateway intake, HTTPS enrolment,
the simulated reader on a Unix socket, SQLite files. Only GPIO is mocked (MockFactory).

One module-scoped site (broker + gateway + enrolment endpoint) serves the tests in order:
provision with the installer's command, taps acknowledged, tokens reused / expired refused, an
interrupted run resumed, rebind and decommission revoking the old credentials at the broker.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("siteclock.hw.sim", reason="the simulated reader has not landed yet")

from gpiozero.pins.mock import MockFactory

from siteclock.gateway.config import MqttConfig
from siteclock.gateway.intake import Intake
from siteclock.gateway.roster import write_gateway_keys
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import DISABLED, TerminalRegistry
from siteclock.hw import sim
from siteclock.keys import Ed25519Signer
from siteclock.provisioning.cli import provision_cli
from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts
from siteclock.provisioning.gateway.service import EnrolmentService
from siteclock.provisioning.gateway.tokens import TokenStore
from siteclock.provisioning.shared.ca import ca_fingerprint
from siteclock.provisioning.shared.requests import BrokerEndpoint, EnrolmentRequest
from siteclock.provisioning.shared.workplace import Coordinates, WorkplaceBinding
from siteclock.provisioning.terminal.client import GatewayClient, GatewayError
from siteclock.provisioning.terminal.installer import Installer, ProvisionOptions
from siteclock.provisioning.terminal.selftest import Verdict, check_broker
from siteclock.provisioning.terminal.systemd import ServiceControl
from siteclock.terminal import config as terminal_config
from siteclock.terminal import identity
from siteclock.terminal.service import Terminal
from tests.support.enrolment_server import enrolment_server
from tests.support.mosquitto import running_broker
from tests.support.waiting import wait_for

WP1, WP2 = "1Y1003SQ5VSSZ", "2Y1003SQ5VSSZ"
COORDS = "50.8503, 4.3517"


@dataclass
class Site:
    root: Path
    broker: object
    db: Path
    url: str
    fingerprint: str
    tokens: TokenStore
    registry: TerminalRegistry
    service: EnrolmentService
    pid_file: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    with running_broker(root / "broker") as broker:
        db = root / "gateway.db"
        gw = broker.gateway
        gw_signer = identity.load_or_create(root / "gateway-signing.key")
        keys_file = root / "gateway-keys.json"
        write_gateway_keys(keys_file, [gw_signer])
        intake = Intake(
            MqttConfig(host="127.0.0.1", port=broker.gateway_port, ca_file=broker.ca_file,
                       password_file=gw.password_file, client_id="siteclock_gateway-e2e"),
            inbox=Inbox(db), registry=TerminalRegistry(db),
        )  # fmt: skip
        intake.start()
        ca_pem = broker.ca_file.read_text()
        tokens, registry = TokenStore(db), TerminalRegistry(db)
        pid_file = root / "mosquitto.pid"
        pid_file.write_text(str(broker.process.pid))
        service = EnrolmentService(
            tokens, registry, BrokerAccounts(broker.workdir / "passwd", broker.reload),
            endpoint=BrokerEndpoint("127.0.0.1", broker.port, ca_pem),
            gateway_keys={gw_signer.kid: gw_signer.public_key_bytes().hex()},
        )  # fmt: skip
        try:
            with enrolment_server(service, broker, ca_pem) as url:
                yield Site(
                    root, broker, db, url,
                    ca_fingerprint(ca_pem), tokens, registry, service, pid_file,
                )  # fmt: skip
        finally:
            intake.stop()


def tap_when_ready(sock: Path, badge: str, stop: threading.Event) -> threading.Thread:
    """Tap ``badge`` on the sim reader as soon as its socket exists (the installer's hand)."""

    def tapper() -> None:
        while not stop.is_set():
            if sock.exists():
                try:
                    if sim.send_taps(str(sock), [badge]) == ["ok"]:
                        return
                except OSError:
                    pass
            time.sleep(0.05)

    thread = threading.Thread(target=tapper, daemon=True)
    thread.start()
    return thread


def token_file(data: Path, token: str) -> str:
    """The token in a file beside ``data``: secrets never go on a command line."""
    path = data.with_name(data.name + ".token")
    path.write_text(token + "\n")
    return str(path)


def provision_args(site: Site, data: Path, token: str, terminal_id: str) -> list[str]:
    return [
        "run", "--data-dir", str(data), "--terminal-id", terminal_id, "--workplace",
        f"https://www.socialsecurity.be/ciao/qr?ref={WP1}", "--coordinates", COORDS,
        "--gateway", site.url, "--token-file", token_file(data, token),
        "--ca-fingerprint", site.fingerprint,
        "--reader", f"sim:{data / 'taps.sock'}", "--pin-factory", "mock",
        "--badge-timeout", "15", "--no-service",
    ]  # fmt: skip


def provision(site: Site, data: Path, token: str, terminal_id: str) -> int:
    stop = threading.Event()
    tapper = tap_when_ready(data / "taps.sock", "sim:0A0A", stop)
    try:
        return provision_cli(provision_args(site, data, token, terminal_id))
    finally:
        stop.set()
        tapper.join(5)


def uplink_login(cfg_path: Path, password_file: Path | None = None) -> Verdict:
    cfg = terminal_config.load(cfg_path)
    assert cfg.uplink is not None
    uplink = cfg.uplink
    if password_file is not None:
        from dataclasses import replace

        uplink = replace(uplink, password_file=password_file)
    return check_broker(uplink, cfg.terminal_id).verdict


def test_provision_then_taps_flow_and_are_acknowledged(site: Site, tmp_path: Path) -> None:
    token = site.tokens.create(WP1, ttl_s=3600, created_by="employer").token
    data = tmp_path / "t1"
    assert provision(site, data, token, "t-e2e-01") == 0

    key = data / "terminal.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (data / "mqtt.password").stat().st_mode & 0o777 == 0o600
    label = (data / "label.svg").read_text()
    assert "terminal t-e2e-01" in label
    assert f"DoW {WP1}" in label
    cfg = terminal_config.load(data / "terminal.toml")
    assert cfg.workplace == WP1
    record = site.registry.get("t-e2e-01")
    assert record is not None
    assert record.workplace == WP1
    assert identity.load(key).kid in record.keys  # the gateway holds the public half only
    assert site.tokens.info(token).used_by == "t-e2e-01"

    term = Terminal(cfg, pin_factory=MockFactory())
    term.start()
    try:
        wait_for(lambda: (data / "taps.sock").exists(), what="reader socket")
        assert sim.send_taps(str(data / "taps.sock"), ["sim:0B0B", "sim:0C0C"]) == ["ok", "ok"]
        wait_for(lambda: term.outbox.stats().total >= 3, what="taps recorded")
        wait_for(lambda: term.outbox.stats().depth == 0, what="gateway acknowledgements")
    finally:
        term.stop()

    # the same token a second time: refused, nothing enrolled
    again = tmp_path / "t1-again"
    assert provision_cli(provision_args(site, again, token, "t-e2e-02")) == 1
    assert site.registry.get("t-e2e-02") is None
    assert not (again / "terminal.toml").exists()


def test_expired_and_foreign_workplace_tokens_are_refused(site: Site, tmp_path: Path) -> None:
    past = TokenStore(site.db, clock=lambda: time.time_ns() - 7200 * 10**9)
    expired = past.create(WP1, ttl_s=60).token
    signer = Ed25519Signer.generate()
    binding = WorkplaceBinding(WP1, Coordinates.parse(COORDS))
    client = GatewayClient(site.url, site.broker.ca_file)
    with pytest.raises(GatewayError) as info:
        client.enrol(EnrolmentRequest(expired, "t-e2e-03", binding, b"").signed_by(signer))
    assert info.value.reason == "unauthorized"  # the caller learns nothing more
    other = site.tokens.create(WP2, ttl_s=3600).token
    with pytest.raises(GatewayError) as info:
        client.enrol(EnrolmentRequest(other, "t-e2e-03", binding, b"").signed_by(signer))
    assert info.value.reason == "wrong_workplace"
    assert site.registry.get("t-e2e-03") is None
    assert site.service.counters["expired"] >= 1


def test_interrupted_run_resumes_even_when_the_answer_was_lost(site: Site, tmp_path: Path) -> None:
    token = site.tokens.create(WP1, ttl_s=3600).token
    data = tmp_path / "t4"
    binding = WorkplaceBinding(WP1, Coordinates.parse(COORDS))
    opts = ProvisionOptions(
        data_dir=data, terminal_id="t-e2e-04", workplace=binding,
        gateway_url=site.url, token=token, reader_spec=f"sim:{data / 'taps.sock'}",
        ca_fingerprint=site.fingerprint, pin_factory="mock", selftest=False,
    )  # fmt: skip
    quiet = ServiceControl(enabled=False)
    with pytest.raises(KeyboardInterrupt):
        Installer(opts, service=quiet, out=lambda _m: None, interrupt_after="ca").run()
    assert not (data / "terminal.toml").exists()
    # The gateway handles the enrolment but the answer never reaches the terminal.
    signer = identity.load(data / "terminal.key")
    request = EnrolmentRequest(token, "t-e2e-04", opts.workplace, b"").signed_by(signer)
    GatewayClient(site.url, data / "ca.pem").enrol(request)
    assert site.registry.get("t-e2e-04") is not None
    # Same command again: resumes, the gateway recognises the claimant, new credentials work.
    assert Installer(opts, service=quiet, out=lambda _m: None).run() == 0
    assert uplink_login(data / "terminal.toml") is Verdict.PASS


def test_rebind_rewrites_a_hand_formatted_configuration(site: Site, tmp_path: Path) -> None:
    """The configuration is data, not text: a ``workplace`` line an installer retyped in
    another valid TOML form is still moved (patching the text kept the old workplace in
    silence while the gateway had moved the terminal), and every other value is kept."""
    token = site.tokens.create(WP1, ttl_s=3600).token
    data = tmp_path / "t6"
    assert provision(site, data, token, "t-e2e-06") == 0
    path = data / "terminal.toml"
    before = terminal_config.load(path)
    text = path.read_text()
    retyped = text.replace(f'workplace = "{WP1}"', f"workplace='{WP1}'  # the DoW of the site")
    assert retyped != text
    path.write_text(retyped)

    new_token = site.tokens.create(WP2, ttl_s=3600).token
    code = provision_cli([
        "rebind", "--data-dir", str(data), "--workplace", WP2, "--coordinates", COORDS,
        "--gateway", site.url, "--token-file", token_file(tmp_path / "rebind", new_token),
        "--reason", "site moved", "--yes", "--no-service",
    ])  # fmt: skip
    assert code == 0
    assert site.registry.get("t-e2e-06").workplace == WP2
    after = terminal_config.load(path)
    assert after.workplace == WP2
    assert after.uplink == before.uplink
    assert (after.terminal_id, after.key_path) == (before.terminal_id, before.key_path)
    assert (path.stat().st_mode & 0o777) == 0o600


@pytest.mark.slow
def test_rebind_and_decommission_revoke_old_credentials(site: Site, tmp_path: Path) -> None:
    token = site.tokens.create(WP1, ttl_s=3600).token
    data = tmp_path / "t5"
    assert provision(site, data, token, "t-e2e-05") == 0
    old_password = tmp_path / "old.password"
    shutil.copy(data / "mqtt.password", old_password)

    new_token = site.tokens.create(WP2, ttl_s=3600).token
    code = provision_cli([
        "rebind", "--data-dir", str(data), "--workplace", WP2, "--coordinates", COORDS,
        "--gateway", site.url, "--token-file", token_file(tmp_path / "rebind", new_token),
        "--reason", "site moved", "--yes",
        "--no-service",
    ])  # fmt: skip
    assert code == 0
    assert terminal_config.load(data / "terminal.toml").workplace == WP2
    assert site.registry.get("t-e2e-05").workplace == WP2
    assert uplink_login(data / "terminal.toml", old_password) is Verdict.FAIL
    assert uplink_login(data / "terminal.toml") is Verdict.PASS

    # taps after the move are accepted under the new binding
    cfg = terminal_config.load(data / "terminal.toml")
    term = Terminal(cfg, pin_factory=MockFactory())
    term.start()
    try:
        wait_for(lambda: (data / "taps.sock").exists(), what="reader socket")
        sim.send_taps(str(data / "taps.sock"), ["sim:0D0D"])
        wait_for(lambda: term.outbox.stats().total >= 2, what="tap recorded")
        wait_for(lambda: term.outbox.stats().depth == 0, what="ack under the new binding")
    finally:
        term.stop()

    code = provision_cli([
        "decommission", "--db", str(site.db), "--broker-dir", str(site.broker.workdir),
        "--broker-host", "127.0.0.1", "--terminal", "t-e2e-05", "--yes",
        "--inss-key", str(site.root / "inss.key"),
        "--reload-pid-file", str(site.pid_file),
    ])  # fmt: skip
    assert code == 0
    assert site.registry.get("t-e2e-05").status == DISABLED
    time.sleep(0.3)  # Mosquitto rereads its files in its main loop after SIGHUP
    assert uplink_login(data / "terminal.toml") is Verdict.FAIL
