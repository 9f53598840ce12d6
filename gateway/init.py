"""``siteclock gateway init``: a working, commented gateway setup in one command.

It writes, without touching anything that already exists unless told to (``--force`` for the
config; the broker directory is always updated in place, keeping every password and the CA):

* the broker directory (``<dir>/broker``, as ``siteclock broker-config`` writes it): site CA
  and server certificate, TLS listeners, password files and ACL, owned so that the broker's
  own user can read them (``--broker-user``, Debian's ``mosquitto`` by default when run as
  root) and keeps reading them after each enrolment rewrites them;
* the gateway's keys: the roster-signing key and its public half for terminals
  (``gateway-keys.json``), the key that encrypts INSS numbers at rest;
* with ``--ciao-sim``, a CIaO client key for the local simulator and its public half;
* ``gateway.toml``, every setting commented (the full list: docs/config.md);

then prints the next commands to run. Every path it writes is absolute, so the services find
the same files from whichever folder they start.
"""

from __future__ import annotations

import argparse
import os
import pwd
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from siteclock.files import write_public, write_secret
from siteclock.gateway.broker import GATEWAY_USER, credential_path, write_site
from siteclock.gateway.roster import write_gateway_keys
from siteclock.keys import load_or_create

SIM_CLIENT_ID = "siteclock-local-sim"
"""The CIaO client id the local simulator is told about (``ciao-sim --client``)."""


@dataclass(frozen=True)
class InitPlan:
    """Where ``gateway init`` writes, and the site's network settings."""

    etc: Path
    data: Path
    hostnames: tuple[str, ...]
    mqtt_port: int = 8883
    gateway_port: int = 8884
    broker_user: str | None = None
    ciao_sim_port: int | None = None
    enrol_port: int = 8443
    service_user: str | None = None
    """The user the gateway and enrolment services run as (``siteclock`` with the shipped
    units): it gets the keys, the database folder and its own copy of the broker password."""

    @property
    def broker_dir(self) -> Path:
        return self.etc / "broker"

    @property
    def keys(self) -> Path:
        return self.etc / "keys"

    @property
    def config(self) -> Path:
        return self.etc / "gateway.toml"

    @property
    def db(self) -> Path:
        return self.data / "gateway.db"

    @property
    def gateway_keys(self) -> Path:
        """Rewritten by the gateway at each start: in the one folder under /etc its unit may
        write (ProtectSystem=strict)."""
        return self.keys / "gateway-keys.json"

    @property
    def enrolment_env(self) -> Path:
        """``ENROLMENT_ARGS`` for siteclock-enrolment.service: the same arguments as printed."""
        return self.etc / "enrolment.env"

    @property
    def ciao_key(self) -> Path:
        return self.keys / "ciao-key.pem"

    @property
    def ciao_public(self) -> Path:
        return self.etc / "ciao-public.pem"

    @property
    def gateway_password(self) -> Path:
        """The gateway's copy of its broker password, readable by the service user (the one
        in ``broker/credentials`` is the administrator's, 0700)."""
        return self.keys / "mqtt-gateway.password"

    @property
    def ca_file(self) -> Path:
        """A public copy of the site CA certificate for the gateway (the broker's ``pki/`` is
        the broker group's only) and for installers to hand to terminals."""
        return self.etc / "ca.pem"

    @property
    def pid_file(self) -> Path:
        return self.broker_dir / "mosquitto.pid"


def existing_user(name: str) -> str | None:
    """``name`` when run as root on a host that has that user, else None (then everything
    stays with whoever runs this). Mosquitto started as root drops to ``mosquitto``."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        return None
    return name


def check_reachable(directory: Path, user: str) -> None:
    """Refuse a broker directory its user cannot reach: under a ``0700`` folder (``/root``,
    pytest's temporary folders) Mosquitto would start (as root) and then fail every reload,
    which locks out every client at the first enrolment."""
    account = pwd.getpwnam(user)
    for parent in [directory, *directory.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == account.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == account.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            raise ValueError(
                f"the broker's user {user!r} cannot reach {directory}: {parent} is mode "
                f"{st.st_mode & 0o777:04o}; choose a --dir outside it (e.g. /srv/siteclock or "
                f"/etc/siteclock) or chmod o+x {parent}"
            )


def _hand_over(plan: InitPlan) -> None:
    """Give the service user what the gateway and the enrolment endpoint must read or write."""
    if plan.service_user is None:
        return
    user = pwd.getpwnam(plan.service_user)
    for path in (plan.keys, *plan.keys.iterdir(), plan.data):
        os.chown(path, user.pw_uid, user.pw_gid)
    os.chown(plan.config, 0 if os.geteuid() == 0 else -1, user.pw_gid)


def gateway_toml(plan: InitPlan, share_group: str) -> str:
    ca = plan.ca_file
    lines = [
        "# siteclock gateway configuration, written by `siteclock gateway init`.",
        "# Every key and its default: docs/config.md. Check it with:",
        f"#   siteclock gateway check --config {plan.config}",
        "",
        "# The gateway's SQLite file: inbox, terminals, workers (INSS encrypted), relay state.",
        f'db = "{plan.db}"',
        "# Signs the rosters terminals receive; its public half goes to every terminal.",
        f'signing_key_file = "{plan.keys / "gateway-signing.key"}"',
        f'gateway_keys_file = "{plan.gateway_keys}"',
        "# Encrypts INSS numbers at rest; kept apart from the database and its backups.",
        f'inss_key_file = "{plan.keys / "inss.key"}"',
        'log_level = "INFO"',
        "",
        "[mqtt]",
        f"# The broker's gateway listener (loopback): not the terminals' port {plan.mqtt_port}.",
        'host = "localhost"',
        f"port = {plan.gateway_port}",
        f'ca_file = "{ca}"',
        f'username = "{GATEWAY_USER}"',
        f'password_file = "{plan.gateway_password}"',
        "# One per gateway process; must start with 'siteclock'.",
        'client_id = "siteclock_gateway-1"',
        "# The site's secret shared-subscription group: keep it off terminals.",
        f'share_group = "{share_group}"',
    ]
    if plan.ciao_sim_port is not None:
        lines += [
            "",
            "[ciao]",
            "# The local CIaO simulator (siteclock ciao-sim), never the NSSO. For the NSSO's",
            '# own test service: environment = "simulation" and the client id and key it gave.',
            'environment = "local-sim"',
            f'base_url = "http://127.0.0.1:{plan.ciao_sim_port}"',
            f'client_id = "{SIM_CLIENT_ID}"',
            f'private_key = "{plan.ciao_key}"',
            "",
            "[relay]",
            "# A simulated site: a tap from a terminal whose clock is not NTP-synchronised goes",
            "# at once, with the terminal's time. On a real site delete this line: the default",
            "# (600 s) holds such a tap for a sync point, and the gateway log says so while it",
            "# waits.",
            "unsynced_hold_s = 0.0",
        ]
    return "\n".join(lines) + "\n"


def _write_ciao_sim_key(plan: InitPlan) -> None:
    if plan.ciao_key.exists():
        return
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_secret(
        plan.ciao_key,
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_public(
        plan.ciao_public,
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def init(plan: InitPlan, *, force: bool = False) -> list[str]:
    """Write everything; returns the next commands to run. Refuses to replace an existing
    ``gateway.toml`` unless ``force`` (the broker directory and keys are kept as they are)."""
    if plan.config.exists() and not force:
        raise FileExistsError(
            f"{plan.config} exists; nothing changed (--force rewrites the config, keeping "
            "keys, passwords and the CA)"
        )
    if plan.broker_user is not None and plan.broker_user != "root":
        check_reachable(plan.etc, plan.broker_user)
    for directory, mode in ((plan.etc, 0o755), (plan.keys, 0o700), (plan.data, 0o700)):
        directory.mkdir(parents=True, exist_ok=True, mode=mode)
    files = write_site(
        plan.broker_dir,
        # The gateway itself connects to "localhost" (its listener is loopback-only): the
        # broker's certificate must name it whatever names terminals use.
        hostnames=list(dict.fromkeys([*plan.hostnames, "localhost"])),
        terminals=[],
        port=plan.mqtt_port,
        gateway_port=plan.gateway_port,
        gateway_bind_address="127.0.0.1",
        run_as_user=plan.broker_user,
        pid_file=plan.pid_file,
    )
    signer = load_or_create(plan.keys / "gateway-signing.key")
    write_gateway_keys(plan.gateway_keys, [signer])
    if plan.ciao_sim_port is not None:
        _write_ciao_sim_key(plan)
    write_public(plan.ca_file, files.pki.ca_cert.read_bytes())
    password = credential_path(plan.broker_dir, GATEWAY_USER).read_bytes()
    write_secret(plan.gateway_password, password)
    # 0640: the share group in it stays off terminals; the service user reads it by group.
    write_secret(plan.config, gateway_toml(plan, files.share_group).encode(), mode=0o640)
    write_public(plan.enrolment_env, f'ENROLMENT_ARGS="{enrolment_args(plan)}"\n'.encode())
    _hand_over(plan)
    return next_commands(plan, files.conf)


def enrolment_args(plan: InitPlan) -> str:
    return (
        f"--db {plan.db} --broker-dir {plan.broker_dir} --broker-host {plan.hostnames[0]} "
        f"--broker-port {plan.mqtt_port} --reload-pid-file {plan.pid_file} "
        f"--inss-key {plan.keys / 'inss.key'} --gateway-keys-file {plan.gateway_keys} "
        f"--listen 0.0.0.0:{plan.enrol_port}"
    )


def next_commands(plan: InitPlan, broker_conf: Path) -> list[str]:
    commands = [f"mosquitto -c {broker_conf} -d    # or: systemctl start siteclock-broker"]
    if plan.ciao_sim_port is not None:
        commands.append(
            f"siteclock ciao-sim --port {plan.ciao_sim_port} "
            f"--client {SIM_CLIENT_ID}={plan.ciao_public} &"
        )
    commands += [
        f"siteclock gateway check --config {plan.config}",
        f"siteclock gateway --config {plan.config} &",
        f"siteclock provision serve {enrolment_args(plan)} &",
    ]
    return commands


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="siteclock gateway init", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--dir", type=Path, default=Path("/etc/siteclock"), help="config, keys, broker directory"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("/var/lib/siteclock"), help="the database"
    )
    parser.add_argument(
        "--hostname",
        action="append",
        help="name or address terminals use to reach this server (repeatable; default: this "
        "host's name, then localhost)",
    )
    parser.add_argument("--mqtt-port", type=int, default=8883, help="terminals' TLS listener")
    parser.add_argument("--gateway-port", type=int, default=8884, help="gateway's listener")
    parser.add_argument("--enrol-port", type=int, default=8443, help="enrolment endpoint")
    parser.add_argument(
        "--broker-user",
        help="the user Mosquitto runs as (default: mosquitto when run as root, else yours)",
    )
    parser.add_argument(
        "--service-user",
        help="the user the gateway services run as (default: siteclock when run as root and "
        "that user exists, as hw/pi/install.sh creates it)",
    )
    parser.add_argument(
        "--ciao-sim",
        type=int,
        metavar="PORT",
        help="relay to the local CIaO simulator on this port (a simulated site)",
    )
    parser.add_argument("--force", action="store_true", help="rewrite an existing gateway.toml")
    args = parser.parse_args(argv)
    hostnames = tuple(args.hostname or (socket.getfqdn(), "localhost"))
    plan = InitPlan(
        etc=args.dir.absolute(),
        data=args.data_dir.absolute(),
        hostnames=hostnames,
        mqtt_port=args.mqtt_port,
        gateway_port=args.gateway_port,
        # As root without a mosquitto user, Mosquitto would drop to a user that does not
        # exist; it stays root then (files 0600), as the demo's does.
        broker_user=args.broker_user
        or existing_user("mosquitto")
        or ("root" if os.geteuid() == 0 else None),
        service_user=args.service_user or existing_user("siteclock"),
        ciao_sim_port=args.ciao_sim,
        enrol_port=args.enrol_port,
    )
    try:
        commands = init(plan, force=args.force)
    except (FileExistsError, ValueError, PermissionError) as exc:
        print(f"siteclock gateway init: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {plan.config} (commented; every key: docs/config.md)")
    print(f"wrote {plan.broker_dir} (broker config, site CA, passwords, ACL)")
    if plan.broker_user not in (None, "root"):
        print(f"  readable by the broker's user {plan.broker_user!r} after every enrolment")
    print(f"wrote keys in {plan.keys} (gateway-keys.json: the roster keys terminals get)")
    print(f"wrote {plan.enrolment_env} (the enrolment endpoint's arguments, for its unit)")
    print("next:")
    for command in commands:
        print(f"  {command}")
    return 0
