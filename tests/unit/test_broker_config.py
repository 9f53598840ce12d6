"""The generated Mosquitto configuration: password hashes, ACL, config text, file modes, PKI."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from siteclock.gateway import broker
from siteclock.gateway.broker import (
    GATEWAY_USER,
    acl_text,
    hash_password,
    read_password_file,
    verify_password,
    write_site,
)
from siteclock.gateway.pki import ensure_site_pki

# Produced by Debian's mosquitto_passwd 2.0.11: `mosquitto_passwd -c -b f t-001 'correct horse'`
MOSQUITTO_PASSWD_LINE = (
    "t-001:$7$101$3Qnx/5+D6vZnK6w/$kEzB7aK3QGb7XP/35rxfNWU+hY+ZhsoMNhVhY2qcBJwSEqxtqA8fX3/"
    "ii4+0i4QV76HNWHsB5Qh0ak5l16g50Q=="
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_password_hash_matches_mosquitto_passwd_byte_for_byte() -> None:
    encoded = MOSQUITTO_PASSWD_LINE.split(":", 1)[1]
    salt = base64.b64decode(encoded.split("$")[3])
    assert hash_password("correct horse", salt=salt) == encoded
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horsE", encoded)
    assert not verify_password("x", "$6$nonsense")


def test_fresh_hashes_use_a_new_salt_and_verify() -> None:
    a, b = hash_password("pw"), hash_password("pw")
    assert a != b
    assert a.startswith("$7$101$")
    assert verify_password("pw", a)
    assert verify_password("pw", b)


def test_acl_confines_each_terminal_to_its_own_topics() -> None:
    lines = acl_text().splitlines()
    assert "pattern write siteclock/v1/%u/events" in lines
    assert "pattern write siteclock/v1/%u/status" in lines
    assert "pattern read siteclock/v1/%u/ack" in lines
    assert "pattern read siteclock/v1/%u/config" in lines
    patterns = [line for line in lines if line.startswith("pattern")]
    assert len(patterns) == 4  # nothing else: no wildcard rights for terminals
    assert all("+" not in p and "#" not in p for p in patterns)
    gateway = lines[
        lines.index(f"user {GATEWAY_USER}") + 1 : lines.index(f"user {GATEWAY_USER}") + 5
    ]
    assert gateway == [
        "topic read siteclock/v1/+/events",
        "topic read siteclock/v1/+/status",
        "topic write siteclock/v1/+/ack",
        "topic write siteclock/v1/+/config",
    ]


def test_site_files_are_written_with_private_secrets(tmp_path: Path) -> None:
    files = write_site(tmp_path, hostnames=["gw.local"], terminals=["t-one", "t-two"])
    conf = files.conf.read_text()
    assert "allow_anonymous false" in conf
    assert f"password_file {files.password_file}" in conf
    assert f"acl_file {files.acl_file}" in conf
    assert "listener 8883" in conf
    assert mode(files.password_file) == 0o600
    assert mode(files.pki.server_key) == 0o600
    assert mode(files.pki.ca_key) == 0o600
    assert set(files.new_credentials) == {GATEWAY_USER, "t-one", "t-two"}
    users = read_password_file(files.password_file)
    gateway_users = read_password_file(files.gateway_password_file)
    assert set(users) == {"t-one", "t-two"}  # the gateway logs in on its own listener only
    assert set(gateway_users) == {GATEWAY_USER}
    users.update(gateway_users)
    for user, path in files.new_credentials.items():
        assert mode(path) == 0o600
        assert verify_password(path.read_text(), users[user])


def test_regeneration_keeps_existing_hashes_and_revocation_removes(tmp_path: Path) -> None:
    first = write_site(tmp_path, hostnames=["gw.local"], terminals=["t-one"])
    before = read_password_file(first.password_file)
    ca = first.pki.ca_cert.read_bytes()
    second = write_site(tmp_path, hostnames=["gw.local"], terminals=["t-one", "t-new"], revoke=[])
    after = read_password_file(second.password_file)
    assert after["t-one"] == before["t-one"]
    assert set(second.new_credentials) == {"t-new"}
    assert second.pki.ca_cert.read_bytes() == ca  # the CA is never replaced
    third = write_site(tmp_path, hostnames=["gw.local"], terminals=[], revoke=["t-one"])
    assert "t-one" not in read_password_file(third.password_file)
    assert "t-new" in read_password_file(third.password_file)


def test_plain_listener_is_loopback_only_and_debian_snippet_leaves_persistence(
    tmp_path: Path,
) -> None:
    files = write_site(
        tmp_path,
        hostnames=["gw.local"],
        terminals=[],
        plain_loopback_port=1883,
        debian_include=True,
    )
    conf = files.conf.read_text()
    assert "listener 1883 127.0.0.1" in conf
    assert "persistence" not in conf
    assert conf.count("allow_anonymous false") == 3  # terminals, gateway, loopback


def test_bad_terminal_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="terminal id"):
        write_site(tmp_path, hostnames=["gw.local"], terminals=["T ONE"])
    assert broker.cli(["--out", str(tmp_path), "--hostname", "h", "--terminal", "x/y"]) == 2


def test_cli_writes_a_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = broker.cli(["--out", str(tmp_path / "b"), "--hostname", "gw.local", "--terminal", "t-one"])
    assert rc == 0
    assert "new credentials for t-one" in capsys.readouterr().out
    assert (tmp_path / "b" / "mosquitto.conf").exists()


def test_server_certificate_is_signed_by_the_site_ca_for_its_names(tmp_path: Path) -> None:
    paths = ensure_site_pki(tmp_path, ["gw.local", "10.0.0.5"])
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["gw.local"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)


def test_limits_and_identity_settings_are_in_the_config(tmp_path: Path) -> None:
    conf = write_site(tmp_path, hostnames=["gw.local"], terminals=["t-one"]).conf.read_text()
    lines = conf.splitlines()
    assert "per_listener_settings true" in lines
    assert f"max_packet_size {broker.MAX_PACKET_BYTES}" in lines
    assert f"message_size_limit {broker.MAX_PACKET_BYTES}" in lines
    assert f"max_queued_bytes {broker.MAX_QUEUED_BYTES}" in lines
    assert f"max_queued_messages {broker.MAX_QUEUED_MESSAGES}" in lines
    assert "max_queued_bytes 0" not in lines
    # The terminals' listener forces the client id to the username; the gateway's does not
    # accept terminals at all (its own password file).
    terminals = conf[conf.index("listener 8883") : conf.index("listener 8884")]
    gateway = conf[conf.index("listener 8884") :]
    assert "use_username_as_clientid true" in terminals
    assert "password_file" in terminals
    assert "gateway.passwd" not in terminals
    assert f"password_file {tmp_path / 'gateway.passwd'}" in gateway
    assert "listener 8884 127.0.0.1" in conf  # loopback unless told otherwise
    for section in (terminals, gateway):
        assert f"ciphers {broker.TLS12_CIPHERS}" in section
        assert "CBC" not in section
        assert "-SHA " not in section


@pytest.mark.parametrize("user", ["t-evil\n", "t:x", "", "t evil", "siteclock_gateway\nx"])
def test_the_password_file_writer_refuses_lines_that_would_split(tmp_path: Path, user: str) -> None:
    path = tmp_path / "passwd"
    broker.write_password_file(path, {"t-good": hash_password("pw")})
    before = path.read_bytes()
    with pytest.raises(ValueError, match="refusing"):
        broker.write_password_file(path, {"t-good": hash_password("pw"), user: hash_password("x")})
    assert path.read_bytes() == before


def test_the_password_file_keeps_the_brokers_group_and_mode_when_rewritten(tmp_path: Path) -> None:
    import grp
    import os

    group = grp.getgrgid(os.getgid()).gr_name
    files = write_site(tmp_path, hostnames=["gw.local"], terminals=["t-one"], broker_group=group)
    for readable in (files.password_file, files.gateway_password_file, files.acl_file,
                     files.conf, files.pki.server_key):  # fmt: skip
        assert mode(readable) == 0o640, readable
        assert readable.stat().st_gid == os.getgid()
    assert mode(tmp_path) == 0o2770  # the enrolment endpoint replaces passwd in place
    # Secrets the broker has no business reading stay owner-only.
    assert mode(files.pki.ca_key) == 0o600
    assert mode(files.credentials_dir) == 0o700
    assert all(mode(p) == 0o600 for p in files.credentials_dir.iterdir())
    assert mode(tmp_path / "share-group") == 0o600
    # An enrolment rewriting passwd later keeps what the broker needs to read it.
    users = read_password_file(files.password_file)
    users["t-two"] = hash_password("pw2")
    broker.write_password_file(files.password_file, users)
    assert mode(files.password_file) == 0o640
    assert files.password_file.stat().st_gid == os.getgid()


def test_gateway_client_ids_must_start_with_siteclock() -> None:
    from siteclock.gateway.config import MqttConfig

    assert MqttConfig().client_id.startswith("siteclock")
    with pytest.raises(ValueError, match="client_id"):
        MqttConfig(client_id="gw-1")  # a terminal could be enrolled as "gw-1"


def test_broker_config_and_enrolments_at_once_lose_no_user(tmp_path: Path) -> None:
    """``broker-config`` and the enrolment endpoint both rewrite ``passwd``: one lock, so
    neither drops the other's line."""
    import threading

    from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts

    write_site(tmp_path, hostnames=["gw.local"], terminals=[])
    accounts = BrokerAccounts(tmp_path / "passwd", reload=lambda: None)
    workers = [
        threading.Thread(target=accounts.set_password, args=(f"t-enrolled-{n}",))
        for n in range(12)
    ] + [
        threading.Thread(
            target=write_site,
            kwargs={"directory": tmp_path, "hostnames": ["gw.local"], "terminals": [f"t-cfg-{n}"]},
        )
        for n in range(12)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    users = set(read_password_file(tmp_path / "passwd"))
    assert users == {f"t-enrolled-{n}" for n in range(12)} | {f"t-cfg-{n}" for n in range(12)}
