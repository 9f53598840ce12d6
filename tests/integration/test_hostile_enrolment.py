"""Hostile callers against the real enrolment endpoint (cheroot over TLS) and a real Mosquitto.

Each test is one finding of the security review (issue 9): a man in the middle serving two
CA certificates, a client that connects and says nothing, a newline in a terminal id, a
small-order key, an unauthenticated caller fishing for a terminal's workplace and status,
and a terminal moving the whole site's location. Each sits next to its honest control.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from siteclock.gateway.broker import TLS12_CIPHERS
from siteclock.gateway.broker_passwords import read_password_file
from siteclock.gateway.pki import _cert_pem, create_ca
from siteclock.gateway.registry import Registry
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.provisioning.cli import provision_cli
from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts
from siteclock.provisioning.gateway.service import EnrolmentService
from siteclock.provisioning.gateway.tokens import TokenStore
from siteclock.provisioning.shared.ca import ca_fingerprint
from siteclock.provisioning.shared.requests import (
    BrokerEndpoint,
    EnrolmentRequest,
    KeyRequest,
    sign_key_request,
    signed_bytes,
)
from siteclock.provisioning.shared.workplace import Coordinates, WorkplaceBinding
from siteclock.provisioning.terminal.client import GatewayClient, GatewayError
from tests.integration.test_hostile_broker import Client, tls12_handshake
from tests.support.enrolment_server import enrolment_server
from tests.support.mosquitto import MosquittoBroker, running_broker
from tests.unit.test_ed25519_points import mixed_order

WP = "1Y1003SQ5VSSZ"
SITE = Coordinates(50.8503, 4.3517)
ELSEWHERE = Coordinates(51.2194, 4.4025)
SMALL_ORDER_KEY = bytes.fromhex("01" + "00" * 31)  # the identity point: order 1
FORGED_PROOF = SMALL_ORDER_KEY + bytes(32)  # R = identity, S = 0 "verifies" for any message


@dataclass
class Site:
    broker: MosquittoBroker
    url: str
    ca_pem: str
    fingerprint: str
    tokens: TokenStore
    terminals: TerminalRegistry
    workplaces: Registry
    service: EnrolmentService
    db: Path
    inss_key: Path

    def client(self) -> GatewayClient:
        return GatewayClient(self.url, self.broker.ca_file, timeout_s=5.0)

    def token(self) -> str:
        return self.tokens.create(WP, ttl_s=3600).token

    def enrol(self, terminal_id: str, coords: Coordinates = SITE) -> Ed25519Signer:
        signer = Ed25519Signer.generate()
        req = EnrolmentRequest(self.token(), terminal_id, WorkplaceBinding(WP, coords), b"")
        self.client().enrol(req.signed_by(signer))
        return signer


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("hostile-enrol")
    with running_broker(root / "broker") as broker:
        db = root / "gateway.db"
        ca_pem = broker.ca_file.read_text()
        tokens, terminals = TokenStore(db), TerminalRegistry(db)
        (root / "keys").mkdir(mode=0o700)
        workplaces = Registry(db, root / "keys" / "inss.key")
        service = EnrolmentService(
            tokens, terminals, BrokerAccounts(broker.workdir / "passwd", broker.reload),
            endpoint=BrokerEndpoint("127.0.0.1", broker.port, ca_pem), workplaces=workplaces,
        )  # fmt: skip
        with enrolment_server(service, broker, ca_pem) as url:
            yield Site(
                broker, url, ca_pem, ca_fingerprint(ca_pem),
                tokens, terminals, workplaces, service, db, root / "keys" / "inss.key",
            )  # fmt: skip


def post(site: Site, path: str, body: Any) -> requests.Response:
    return requests.post(site.url + path, json=body, verify=str(site.broker.ca_file), timeout=5)


# --------------------------------------------------------------------------- the CA pin


def test_a_ca_file_with_a_second_certificate_is_refused(site: Site) -> None:
    _, evil = create_ca("not the site CA")
    for served in (
        site.ca_pem + _cert_pem(evil).decode(),  # the real CA, then the attacker's
        site.ca_pem + "trailing data\n",
        site.ca_pem + "\n" * 100_000,  # no endless reads from an untrusted peer either
    ):
        with enrolment_server(site.service, site.broker, served) as mitm_url:
            with pytest.raises(GatewayError) as refused:
                GatewayClient.fetch_ca(mitm_url, site.fingerprint)
            assert refused.value.reason == "fingerprint_mismatch"
    # Control: the genuine endpoint gives exactly the one pinned certificate.
    assert GatewayClient.fetch_ca(site.url, site.fingerprint) == site.ca_pem


@pytest.mark.parametrize("digits", [16, 32, 63])
def test_a_fingerprint_prefix_is_not_a_pin(site: Site, digits: int) -> None:
    with pytest.raises(GatewayError) as refused:
        GatewayClient.fetch_ca(site.url, site.fingerprint[:digits])
    assert refused.value.reason == "bad_fingerprint"


# --------------------------------------------------------------------------- the server


def test_idle_connections_do_not_block_enrolment(site: Site) -> None:
    idle = [socket.create_connection(("127.0.0.1", int(site.url.rsplit(":", 1)[1])))]
    idle += [socket.create_connection(idle[0].getpeername()) for _ in range(20)]
    try:
        # 21 connections that never say a word (more than the server's threads), then a real
        # enrolment: it is served at once, within the client's 5 s timeout.
        site.enrol("t-after-idle")
        assert site.terminals.get("t-after-idle") is not None
    finally:
        for s in idle:
            s.close()


def test_tls12_cbc_suites_are_refused_by_the_enrolment_server(site: Site) -> None:
    port = int(site.url.rsplit(":", 1)[1])
    cbc = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256"
    assert tls12_handshake(port, cbc, site.broker.ca_file) is False
    assert tls12_handshake(port, TLS12_CIPHERS, site.broker.ca_file) is True


# --------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize(
    ("terminal_id", "good_id"),
    [
        ("t-evil\n", "t-good-1"),
        ("t-evil\nsiteclock_gateway:$7$101$AAAA$AAAA", "t-good-2"),
        ("siteclock-gw", "t-good-3"),
    ],
)
def test_a_bad_terminal_id_is_refused_and_the_password_file_stays_intact(
    site: Site, terminal_id: str, good_id: str
) -> None:
    passwd = site.broker.workdir / "passwd"
    before = passwd.read_bytes()
    token = site.token()
    signer = Ed25519Signer.generate()
    body = EnrolmentRequest(token, "t-placeholder", WorkplaceBinding(WP, SITE), b"")
    raw = body.signed_by(signer).to_json() | {"terminal_id": terminal_id}
    answer = post(site, "/v1/enrol", raw)
    assert answer.status_code == 400
    assert "terminal id" in answer.json()["detail"]
    assert passwd.read_bytes() == before
    assert site.tokens.info(token).used_by is None  # the token is not spent
    # Control: the same token enrols a well-named terminal, which then logs in to Mosquitto.
    req = EnrolmentRequest(token, good_id, WorkplaceBinding(WP, SITE), b"")
    result = site.client().enrol(req.signed_by(signer))
    assert good_id in read_password_file(passwd)
    login = Client(site.broker, good_id, client_id="x", password=result.mqtt_password)
    try:
        assert not login.refused
    finally:
        login.close()


# --------------------------------------------------------------------------- weak keys


@pytest.mark.parametrize("kind", ["small_order", "mixed_order"])
def test_weak_ed25519_keys_are_refused_at_enrolment(site: Site, kind: str) -> None:
    token = site.token()
    terminal_id = "t-weak-" + kind.replace("_", "-")
    req = EnrolmentRequest(token, terminal_id, WorkplaceBinding(WP, SITE), b"")
    key = SMALL_ORDER_KEY if kind == "small_order" else mixed_order(Ed25519Signer.generate())
    raw = req.to_json() | {
        "public_key": base64.b64encode(key).decode(),
        "signature": base64.b64encode(FORGED_PROOF).decode(),
    }
    answer = post(site, "/v1/enrol", raw)
    assert answer.status_code == 400
    assert answer.json()["error"] == "weak_key"
    assert site.tokens.info(token).used_by is None


def test_a_small_order_key_is_refused_at_rotation(site: Site) -> None:
    signer = site.enrol("t-rotating")
    weak = KeyRequest("t-rotating", "add", signer.kid, SMALL_ORDER_KEY, "ed25519")
    body = weak.signed_body()
    forged = KeyRequest(
        weak.terminal_id, "add", signer.kid, SMALL_ORDER_KEY, "ed25519", "",
        signer.sign(body), FORGED_PROOF,
    )  # fmt: skip
    answer = post(site, "/v1/keys", forged.to_json())
    assert answer.status_code == 400
    assert answer.json()["error"] == "weak_key"
    record = site.terminals.get("t-rotating")
    assert record is not None
    assert len(record.all_keys) == 1
    # Control: a sound new key is added.
    fresh = Ed25519Signer.generate()
    assert site.client().keys(sign_key_request("t-rotating", current=signer, add=fresh))


# --------------------------------------------------------------------------- enumeration


def test_no_information_without_a_valid_token_or_key(site: Site) -> None:
    site.enrol("t-known")
    stranger = Ed25519Signer.generate()

    def fish(terminal_id: str) -> list[tuple[int, dict[str, Any]]]:
        binding = WorkplaceBinding(WP, SITE)
        enrol = EnrolmentRequest("AAAA-BBBB-CCCC-DDDD-EEEE-FFFF", terminal_id, binding, b"")
        rebind = {
            "terminal_id": terminal_id, "token": "AAAA", "workplace": binding.to_map(),
            "reason": "x", "confirm": True, "kid": stranger.kid,
            "signature": base64.b64encode(
                stranger.sign(signed_bytes("rebind", {"terminal": terminal_id}))
            ).decode(),
        }  # fmt: skip
        keys = sign_key_request(terminal_id, current=stranger, revoke_kid="0" * 16).to_json()
        answers = [
            post(site, "/v1/enrol", enrol.signed_by(stranger).to_json()),
            post(site, "/v1/rebind", rebind),
            post(site, "/v1/keys", keys),
        ]
        return [(a.status_code, a.json()) for a in answers]

    known, unknown = fish("t-known"), fish("t-never-was")
    assert known == unknown  # byte for byte the same: nothing tells them apart
    for status, body in known:
        assert status == 401
        assert body["error"] == "unauthorized"
        assert WP not in body["detail"]
        assert "active" not in body["detail"]
        assert "disabled" not in body["detail"]


# --------------------------------------------------------------------------- location


def test_a_terminal_does_not_move_the_sites_location(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.enrol("t-first-here", SITE)
    first = site.workplaces.workplace(WP)
    assert first is not None
    site.enrol("t-second-here", ELSEWHERE)
    kept = site.workplaces.workplace(WP)
    assert kept == first
    conflicts = site.tokens.location_conflicts(WP)
    assert [c["terminal"] for c in conflicts][-1] == "t-second-here"
    assert conflicts[-1]["latitude"] == pytest.approx(ELSEWHERE.latitude)
    # The employer sees both: the site's location, and the one that was not applied.
    code = provision_cli([
        "locations", "--db", str(site.db), "--workplace", WP, "--inss-key", str(site.inss_key),
    ])  # fmt: skip
    shown = capsys.readouterr().out
    assert code == 0
    assert f"{WP}: {first.latitude}, {first.longitude}" in shown
    assert f"not applied: {ELSEWHERE.latitude}, {ELSEWHERE.longitude}" in shown
    assert "t-second-here" in shown
