"""Issue 11, Seen 1: enrolment and decommission must never leave the broker unable to read
its password file.

A real Mosquitto runs as its own user (``mosquitto``, as Debian's package runs it: the process
is started with that uid, so nothing here is read as root), on the files ``siteclock
broker-config --run-as-user mosquitto`` wrote. Then, as root, an enrolment adds a terminal's
line and a decommission removes it, each followed by SIGHUP; after each reload the broker must
still let the gateway and the other terminals in (and the new terminal, then not any more).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from siteclock.gateway import broker as broker_config
from siteclock.gateway.broker import GATEWAY_USER, credential_path
from siteclock.gateway.pki import ensure_site_pki
from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts
from tests.support.mosquitto import MOSQUITTO, free_port, wait_for_port
from tests.support.waiting import wait_until


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run Mosquitto as its own user"),
    pytest.mark.skipif(not _has_user("mosquitto"), reason="no 'mosquitto' user on this host"),
]

HOST = "127.0.0.1"


def login_code(port: int, ca: Path, user: str, password: str) -> int | None:
    """The broker's CONNACK reason code for this login (0 = accepted), None if no answer."""
    answered = threading.Event()
    code: list[int] = []

    def on_connect(
        _c: mqtt.Client, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object
    ) -> None:
        code.append(rc.value)
        answered.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"probe-{user}", protocol=mqtt.MQTTv5
    )
    client.tls_set(ca_certs=str(ca))
    client.username_pw_set(user, password)
    client.on_connect = on_connect
    try:
        client.connect(HOST, port)
        client.loop_start()
        answered.wait(5)
    finally:
        client.loop_stop()
        with contextlib.suppress(Exception):
            client.disconnect()
    return code[0] if code else None


class Site:
    """A broker directory written by ``broker-config --run-as-user mosquitto`` and a
    Mosquitto running as the ``mosquitto`` user on it."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "broker"
        self.port, self.gateway_port = free_port(), free_port()
        rc = broker_config.cli([
            "--out", str(self.dir), "--hostname", HOST, "--terminal", "t-old",
            "--port", str(self.port), "--gateway-port", str(self.gateway_port),
            "--gateway-bind", HOST, "--run-as-user", "mosquitto",
        ])  # fmt: skip
        assert rc == 0
        self.ca = self.dir / "pki" / "ca.pem"
        self.passwd = self.dir / "passwd"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        user = pwd.getpwnam("mosquitto")
        self.log = (self.dir.parent / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
            stdout=self.log, stderr=subprocess.STDOUT,
            user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        )  # fmt: skip
        assert wait_for_port(HOST, self.port), self.log_text()
        assert wait_for_port(HOST, self.gateway_port), self.log_text()

    def reload(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGHUP)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.log.close()

    def log_text(self) -> str:
        path = self.dir.parent / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def password(self, user: str) -> str:
        return credential_path(self.dir, user).read_text().strip()

    def gateway_gets_in(self) -> bool:
        password = self.password(GATEWAY_USER)
        return login_code(self.gateway_port, self.ca, GATEWAY_USER, password) == 0

    def terminal_gets_in(self, user: str, password: str) -> bool:
        return login_code(self.port, self.ca, user, password) == 0


@pytest.fixture
def site() -> Iterator[Site]:
    # Not under pytest's tmp_path: its parents are 0700 root, the broker's user could not
    # even reach its configuration.
    root = Path(tempfile.mkdtemp(prefix="siteclock-owner-"))
    root.chmod(0o755)
    s = Site(root)
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(root, ignore_errors=True)


def readable_by_mosquitto(path: Path) -> bool:
    st = path.stat()
    user = pwd.getpwnam("mosquitto")
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & stat.S_IRUSR)
    return st.st_gid == user.pw_gid and bool(st.st_mode & stat.S_IRGRP)


def enrol_then_decommission(site: Site) -> None:
    """What the enrolment endpoint and ``provision decommission`` do to the password file,
    each followed by the broker's reload, checked from the outside by logging in."""
    accounts = BrokerAccounts(site.passwd, site.reload)
    new_password = accounts.set_password("t-new")  # enrolment, as root
    assert wait_until(lambda: site.terminal_gets_in("t-new", new_password), 10), site.log_text()
    assert site.gateway_gets_in(), site.log_text()
    assert site.terminal_gets_in("t-old", site.password("t-old"))
    assert readable_by_mosquitto(site.passwd)

    assert accounts.remove("t-new")  # decommission, as root
    assert wait_until(lambda: not site.terminal_gets_in("t-new", new_password), 10)
    assert site.gateway_gets_in(), site.log_text()
    assert site.terminal_gets_in("t-old", site.password("t-old")), site.log_text()
    assert readable_by_mosquitto(site.passwd)


def test_run_as_user_files_stay_readable_through_enrolment_and_decommission(site: Site) -> None:
    """Seen 1: ``broker-config --run-as-user`` exists (the documented fix), gives the broker
    ``user mosquitto`` and its files as ``root:mosquitto 0640``, and both rewrites keep that."""
    conf = (site.dir / "mosquitto.conf").read_text()
    assert "user mosquitto" in conf.splitlines()
    st = site.passwd.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, grp.getgrnam("mosquitto").gr_gid)
    site.start()
    assert site.gateway_gets_in(), site.log_text()
    enrol_then_decommission(site)
    st = site.passwd.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, grp.getgrnam("mosquitto").gr_gid)


def test_broker_owned_password_file_keeps_its_owner_when_root_rewrites_it(site: Site) -> None:
    """Seen 1: a password file the broker owns (``mosquitto:mosquitto 0600``, as an
    administrator following Mosquitto's own advice leaves it) is still the broker's after
    root's enrolment rewrote it, and after the decommission; it was ``root`` 0600 before."""
    user = pwd.getpwnam("mosquitto")
    for path in (site.passwd, site.dir / "gateway.passwd"):
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(0o600)
    site.start()
    assert site.gateway_gets_in(), site.log_text()
    enrol_then_decommission(site)
    st = site.passwd.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, 0o600)


def enrol_as(uid: int, gid: int, groups: list[int], broker: Path) -> str:
    """What ``provision serve`` does to the broker's files (start, then one enrolment), in a
    child process holding only ``uid``, ``gid`` and ``groups``; returns the new password."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the service user, do the work, report, exit
        code = 1
        try:
            os.close(read)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            ensure_site_pki(broker / "pki", [HOST])
            password = BrokerAccounts(broker / "passwd", lambda: None).set_password("t-svc")
            os.write(write, password.encode())
            code = 0
        except BaseException as exc:  # reported to the parent, never raised in the child
            os.write(write, f"error: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, answer
    return answer


def test_enrolment_as_the_service_user_in_the_broker_group(site: Site) -> None:
    """Seen 1, as deployed: the enrolment endpoint runs as a service user whose only access
    is the broker's group (siteclock-enrolment.service: SupplementaryGroups=mosquitto). It
    must start (the site CA key is root's) and its rewrite must stay readable by the broker."""
    site.start()
    nobody, mosquitto = pwd.getpwnam("nobody"), pwd.getpwnam("mosquitto")
    password = enrol_as(nobody.pw_uid, nobody.pw_gid, [mosquitto.pw_gid], site.dir)
    site.reload()  # the unit's CAP_KILL; here root sends it
    assert wait_until(lambda: site.terminal_gets_in("t-svc", password), 10), site.log_text()
    assert site.gateway_gets_in(), site.log_text()
    assert site.terminal_gets_in("t-old", site.password("t-old"))
    assert readable_by_mosquitto(site.passwd)
