"""Mosquitto configuration for a site: TLS listener, per-terminal passwords, topic ACL.

Every terminal logs in with its own username (= its terminal id) and password over TLS; the
ACL lets it publish only to its own ``events`` and ``status`` topics and read only its own
``ack`` and ``config`` topics (``pattern`` lines with ``%u``), so a stolen terminal can speak
for itself alone. The gateway has its own identity with the mirror-image rights.

Identity is enforced by the broker, not trusted from the client (see ``docs/uplink.md``):

* terminals and the gateway log in on **separate listeners** with separate password files, so
  a terminal's password is worthless on the gateway's listener and the gateway's on theirs;
* on the terminals' listener the **client id is the username** (``use_username_as_clientid``):
  a terminal cannot take over another terminal's or the gateway's session, and gateway client
  ids start with ``siteclock``, which no terminal id may;
* every size and queue is bounded (``MAX_PACKET_BYTES``, ``MAX_QUEUED_BYTES``...).

The password file is written here in Mosquitto 2.0's own format (``$7$``: PBKDF2-HMAC-SHA512,
101 iterations, 12-byte salt, base64), so no ``mosquitto_passwd`` subprocess is needed and the
hashes of existing terminals survive a regeneration. Revoking a terminal = removing its line
and sending Mosquitto SIGHUP (``reload``), which rereads the password and ACL files.

Example::

    siteclock broker-config --out /etc/siteclock/broker --hostname gw.site.local \\
        --terminal t-hall-01 --terminal t-hall-02
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import grp
import hashlib
import hmac
import os
import re
import secrets
import signal
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from siteclock.files import write_public, write_secret
from siteclock.gateway.pki import PkiPaths, ensure_site_pki
from siteclock.protocol import TOPIC_ROOT, Channel, check_terminal_id

GATEWAY_USER = "siteclock_gateway"
"""The gateway's broker username. The underscore makes it impossible as a terminal id."""

PBKDF2_ITERATIONS = 101  # Mosquitto 2.0's default (src/password_mosq.c): keep it compatible
SALT_BYTES = 12

# Limits (figures and reasons in docs/uplink.md, "Limits").
MAX_PACKET_BYTES = 1024 * 1024
"""Largest MQTT packet the broker accepts from anyone (a bigger one disconnects the sender).
Mosquitto 2.0 has one global figure: events are at most 256 KiB (``MAX_PAYLOAD_BYTES``), and
the largest message is a site's signed roster, which 1 MiB holds for ~8,000 badges."""
MAX_QUEUED_MESSAGES = 100_000
MAX_QUEUED_BYTES = 128 * 1024 * 1024
"""Per client, beyond the in-flight window: an offline gateway's queue stays bounded in memory.
Terminals resend anything unacknowledged, so a message dropped over quota is not lost."""
MAX_INFLIGHT_MESSAGES = 200
MAX_TERMINAL_CONNECTIONS = 2000
"""Connections on the terminals' listener (one per terminal: with the client id forced to
the username, a second login of the same terminal replaces the first)."""
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    )
)
"""TLS 1.2 suites allowed (AEAD with forward secrecy only, no CBC); TLS 1.3's are all AEAD."""

GATEWAY_PASSWORD_FILE = "gateway.passwd"
SHARE_GROUP_FILE = "share-group"
_USER_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HASH_RE = re.compile(r"\$7\$[0-9]{1,7}\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*")


# --------------------------------------------------------------------------- passwords


def hash_password(
    password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """Mosquitto 2.0 ``$7$<iterations>$<b64 salt>$<b64 PBKDF2-HMAC-SHA512>``."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, seven, iterations, salt64, hash64 = encoded.split("$")
        if seven != "7":
            return False
        salt = base64.b64decode(salt64, validate=True)
        expected = base64.b64decode(hash64, validate=True)
        rounds = int(iterations)
    except ValueError:
        return False
    actual = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, rounds)
    return hmac.compare_digest(actual, expected)


def generate_password() -> str:
    """32 random URL-safe characters: far beyond guessing, easy to paste on a terminal."""
    return secrets.token_urlsafe(24)


def read_password_file(path: Path) -> dict[str, str]:
    """``user:hash`` lines -> {user: hash}; a missing file is an empty one."""
    users: dict[str, str] = {}
    if not path.exists():
        return users
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep or not encoded.startswith("$7$"):
            raise ValueError(f"{path}:{number}: not a Mosquitto 2.0 'user:$7$...' line")
        users[user] = encoded
    return users


@contextlib.contextmanager
def password_file_lock(path: Path) -> Iterator[None]:
    """Serialise every read-modify-write of ``path`` across processes (``broker-config`` and
    the enrolment endpoint may both change users at once: neither may lose the other's line)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write_password_file(path: Path, users: Mapping[str, str], *, group: int | None = None) -> None:
    """Write {user: encoded hash} as a Mosquitto password file, sorted for stable diffs.

    Every line is checked first (a user name with a ``:`` or a newline would split one line in
    two and lock everyone after it out). The file is replaced atomically and keeps the group
    and mode of the file it replaces (0640 with the broker's group, so the broker can still
    read it after an enrolment rewrote it), or gets ``group`` and 0640 when given, else 0600.
    """
    for user, encoded in users.items():
        if not _USER_RE.fullmatch(user) or not _HASH_RE.fullmatch(encoded):
            raise ValueError(f"refusing to write password line for {user!r}: not a plain name")
    text = "".join(f"{user}:{users[user]}\n" for user in sorted(users))
    mode = 0o640 if group is not None else 0o600
    if group is None and path.exists():
        st = path.stat()
        mode, group = st.st_mode & 0o640, st.st_gid
    write_secret(path, text.encode(), mode=mode, group=group)


# --------------------------------------------------------------------------- ACL


def acl_text(gateway_user: str = GATEWAY_USER) -> str:
    """The ACL: the gateway reads events/status and writes ack/config of every terminal; each
    terminal (``%u`` = its username = its terminal id) only its own four topics.

    Mosquitto 2.0's ACL file is checked when a message is delivered, never when a client
    subscribes: it cannot refuse a terminal's ``$share/...`` subscription. A terminal that
    joins the gateway's share group would be handed a share of the events and denied their
    delivery (a black hole), so the group's name is a per-site secret (:func:`share_group`)."""
    root = TOPIC_ROOT
    lines = [
        "# generated by siteclock broker-config; regenerate, do not edit",
        f"user {gateway_user}",
        f"topic read {root}/+/{Channel.EVENTS}",
        f"topic read {root}/+/{Channel.STATUS}",
        f"topic write {root}/+/{Channel.ACK}",
        f"topic write {root}/+/{Channel.CONFIG}",
        "",
        "# every other user is a terminal whose username is its terminal id",
        f"pattern write {root}/%u/{Channel.EVENTS}",
        f"pattern write {root}/%u/{Channel.STATUS}",
        f"pattern read {root}/%u/{Channel.ACK}",
        f"pattern read {root}/%u/{Channel.CONFIG}",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- mosquitto.conf


@dataclass(frozen=True)
class BrokerSettings:
    """What goes into ``mosquitto.conf``. ``plain_loopback_port`` adds a TCP listener on
    127.0.0.1 only (tests, local gateway); it still requires passwords."""

    pki: PkiPaths
    password_file: Path
    acl_file: Path
    port: int = 8883
    bind_address: str | None = None
    plain_loopback_port: int | None = None
    persistence_dir: Path | None = None
    run_as_user: str | None = None
    pid_file: Path | None = None
    debian_include: bool = False
    gateway_password_file: Path | None = None
    gateway_port: int = 8884
    gateway_bind_address: str | None = "127.0.0.1"
    """The gateway's listener: loopback by default (the gateway runs beside the broker);
    bind it to an internal address when gateways run elsewhere."""
    max_packet_bytes: int = MAX_PACKET_BYTES
    max_queued_messages: int = MAX_QUEUED_MESSAGES
    max_queued_bytes: int = MAX_QUEUED_BYTES
    max_inflight_messages: int = MAX_INFLIGHT_MESSAGES
    max_terminal_connections: int = MAX_TERMINAL_CONNECTIONS
    extra: Sequence[str] = field(default=())


def _tls_lines(s: BrokerSettings) -> list[str]:
    return [
        f"certfile {s.pki.server_cert}",
        f"keyfile {s.pki.server_key}",
        "tls_version tlsv1.2",  # the minimum; TLS 1.3 is preferred when both sides have it
        f"ciphers {TLS12_CIPHERS}",
    ]


def mosquitto_conf(s: BrokerSettings) -> str:
    """The broker configuration. With ``debian_include`` it is a ``conf.d`` snippet that leaves
    persistence, logging and the pid file to Debian's ``/etc/mosquitto/mosquitto.conf``."""
    gateway_passwords = s.gateway_password_file or s.password_file.with_name(GATEWAY_PASSWORD_FILE)
    lines = ["# generated by siteclock broker-config; regenerate, do not edit"]
    lines += [
        # Each listener names its own password file: terminals and gateway never share one.
        "per_listener_settings true",
        # Bounded everything: a stolen terminal cannot make the broker hold what it sends.
        f"max_packet_size {s.max_packet_bytes}",
        f"message_size_limit {s.max_packet_bytes}",
        # The gateway's session may be offline for a while: queue, bounded in messages and
        # bytes. Terminals still resend anything unacknowledged, so this is an optimisation.
        f"max_queued_messages {s.max_queued_messages}",
        f"max_queued_bytes {s.max_queued_bytes}",
        # Unacked QoS 1 messages towards one client: room for the gateway's group commits.
        f"max_inflight_messages {s.max_inflight_messages}",
        "set_tcp_nodelay true",
    ]
    if not s.debian_include:
        if s.persistence_dir is not None:
            lines += ["persistence true", f"persistence_location {s.persistence_dir}/"]
        else:
            lines += ["persistence false"]
        if s.pid_file is not None:
            lines.append(f"pid_file {s.pid_file}")
        lines.append("log_dest stderr")
    if s.run_as_user:
        lines.append(f"user {s.run_as_user}")

    def auth(passwords: Path) -> list[str]:
        return [
            "protocol mqtt",
            "allow_anonymous false",  # never listen without authentication
            f"password_file {passwords}",
            f"acl_file {s.acl_file}",
        ]

    bind = f" {s.bind_address}" if s.bind_address else ""
    lines += ["", "# terminals: client id forced to the username (no session takeover)"]
    lines += [f"listener {s.port}{bind}", *auth(s.password_file)]
    lines += ["use_username_as_clientid true", f"max_connections {s.max_terminal_connections}"]
    lines += _tls_lines(s)
    gateway_bind = f" {s.gateway_bind_address}" if s.gateway_bind_address else ""
    lines += ["", "# the gateway only: its own password file, so no terminal can log in here"]
    lines += [f"listener {s.gateway_port}{gateway_bind}", *auth(gateway_passwords)]
    lines += _tls_lines(s)
    if s.plain_loopback_port is not None:
        lines += ["", "# a gateway on this host, without TLS: still the gateway's passwords only"]
        lines += [f"listener {s.plain_loopback_port} 127.0.0.1", *auth(gateway_passwords)]
    lines += list(s.extra)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- site layout


@dataclass(frozen=True)
class BrokerFiles:
    conf: Path
    password_file: Path
    acl_file: Path
    pki: PkiPaths
    credentials_dir: Path
    new_credentials: dict[str, Path]
    gateway_password_file: Path
    share_group: str


def credential_path(directory: Path, user: str) -> Path:
    return directory / "credentials" / f"{user}.password"


def share_group(directory: Path) -> str:
    """The site's secret share-group name for gateways (``$share/<it>/...``), created once.

    Mosquitto 2.0 cannot refuse a subscription by ACL, so a terminal that knew the group's
    name could join it and swallow a share of the events; a random name it never sees closes
    that. It is not a password: it only has to stay off terminals (file 0600 here)."""
    path = directory / SHARE_GROUP_FILE
    if path.exists():
        return path.read_text().strip()
    name = "siteclock-" + secrets.token_hex(16)
    write_secret(path, (name + "\n").encode())
    return name


def broker_gid(group: str | None) -> int | None:
    """The gid of the broker's group, or None (files then stay 0600, owner only)."""
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no group {group!r} on this host (the broker's group)") from None


def _write_users(
    directory: Path,
    password_file: Path,
    gateway_password_file: Path,
    terminals: Iterable[str],
    revoke: Iterable[str],
    gateway_user: str,
    passwords: Mapping[str, str] | None,
    gid: int | None,
) -> dict[str, Path]:
    """Add new users (fresh passwords in ``credentials/``), drop revoked ones, rewrite both
    password files; returns the new users' credential files. Call under the file lock."""
    users = read_password_file(password_file)
    gateway_users = read_password_file(gateway_password_file)
    # A directory from before the split had the gateway in ``passwd``: move it.
    if gateway_user in users and gateway_user not in gateway_users:
        gateway_users[gateway_user] = users[gateway_user]
    users.pop(gateway_user, None)
    wanted = [check_terminal_id(t) for t in terminals]  # every id checked before any write
    new: dict[str, Path] = {}
    for user in [gateway_user, *wanted]:
        table = gateway_users if user == gateway_user else users
        chosen = (passwords or {}).get(user)
        if user in table and chosen is None:
            continue
        password = chosen or generate_password()
        table[user] = hash_password(password)
        path = credential_path(directory, user)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.parent.chmod(0o700)
        write_secret(path, password.encode())
        new[user] = path
    for user in revoke:
        users.pop(user, None)
        credential_path(directory, user).unlink(missing_ok=True)
    write_password_file(password_file, users, group=gid)
    write_password_file(gateway_password_file, gateway_users, group=gid)
    return new


def write_site(
    directory: Path,
    *,
    hostnames: Sequence[str],
    terminals: Iterable[str],
    revoke: Iterable[str] = (),
    gateway_user: str = GATEWAY_USER,
    passwords: Mapping[str, str] | None = None,
    broker_group: str | None = None,
    **settings: object,
) -> BrokerFiles:
    """Write (or update) a site's broker directory.

    Users already in a password file keep their hash; each new user gets a fresh random
    password in ``credentials/<user>.password`` (0600) for the installer to copy to the
    terminal (or to the gateway), and may be deleted from here afterwards. ``passwords`` fixes
    chosen passwords (tests). Users in ``revoke`` are removed.

    Ownership: everything is owned by whoever runs this (root or the site admin), never by the
    broker. With ``broker_group``, the files the broker must read (password files, ACL,
    config, server key) are 0640 with that group; the CA key, the share group and the
    plaintext credentials stay 0600 and the ``credentials`` directory 0700, out of its reach.
    """
    gid = broker_gid(broker_group)
    directory.mkdir(parents=True, exist_ok=True)
    pki = ensure_site_pki(directory / "pki", hostnames)
    if gid is not None:
        # The broker's user (the gateway's too, which rewrites ``passwd`` at each enrolment)
        # may replace files at the top (setgid: they keep the group) and read the server key,
        # never the CA key (0600) nor the plaintext credentials (0700 directory).
        os.chown(directory, -1, gid)
        directory.chmod(0o2770)
        os.chown(pki.server_key.parent, -1, gid)
        pki.server_key.parent.chmod(0o750)
        os.chown(pki.server_key, -1, gid)
        pki.server_key.chmod(0o640)
    password_file = directory / "passwd"
    gateway_password_file = directory / GATEWAY_PASSWORD_FILE
    acl_file = directory / "acl"
    with password_file_lock(password_file):
        new = _write_users(
            directory, password_file, gateway_password_file, terminals, revoke, gateway_user,
            passwords, gid,
        )  # fmt: skip
    group_name = share_group(directory)
    conf = directory / "mosquitto.conf"
    text = mosquitto_conf(
        BrokerSettings(
            pki=pki, password_file=password_file, acl_file=acl_file,
            gateway_password_file=gateway_password_file, **settings,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    for path, data in ((acl_file, acl_text(gateway_user)), (conf, text)):
        if gid is None:
            write_public(path, data.encode())
        else:
            write_secret(path, data.encode(), mode=0o640, group=gid)
    return BrokerFiles(
        conf, password_file, acl_file, pki, directory / "credentials", new,
        gateway_password_file, group_name,
    )  # fmt: skip


def reload(pid: int) -> None:
    """Make a running Mosquitto reread its password and ACL files (a revocation takes effect
    for new connections; a revoked terminal that is connected stays until it reconnects)."""
    os.kill(pid, signal.SIGHUP)


# --------------------------------------------------------------------------- CLI


def cli(argv: list[str]) -> int:
    """``siteclock broker-config``: write/refresh the broker directory for a site."""
    parser = argparse.ArgumentParser(prog="siteclock broker-config", description=cli.__doc__)
    parser.add_argument("--out", type=Path, required=True, help="broker directory to write")
    parser.add_argument(
        "--hostname",
        action="append",
        required=True,
        help="name or IP terminals use to reach the broker (repeatable)",
    )
    parser.add_argument("--terminal", action="append", default=[], help="terminal id to allow")
    parser.add_argument("--revoke", action="append", default=[], help="terminal id to remove")
    parser.add_argument("--port", type=int, default=8883, help="terminals' TLS listener")
    parser.add_argument("--gateway-port", type=int, default=8884, help="gateway's TLS listener")
    parser.add_argument(
        "--gateway-bind",
        default="127.0.0.1",
        help="address of the gateway's listener (default loopback: gateway on this host)",
    )
    parser.add_argument(
        "--broker-group",
        help="the broker's group (Debian: mosquitto): what it must read becomes 0640 to it",
    )
    parser.add_argument("--persistence-dir", type=Path)
    parser.add_argument(
        "--debian",
        action="store_true",
        help="write a conf.d snippet for Debian's mosquitto package",
    )
    parser.add_argument("--reload-pid", type=int, help="send SIGHUP to this mosquitto pid")
    args = parser.parse_args(argv)  # fmt: skip
    try:
        files = write_site(
            args.out,
            hostnames=args.hostname,
            terminals=args.terminal,
            revoke=args.revoke,
            port=args.port,
            gateway_port=args.gateway_port,
            gateway_bind_address=args.gateway_bind,
            broker_group=args.broker_group,
            persistence_dir=args.persistence_dir,
            debian_include=args.debian,
        )
    except ValueError as exc:
        print(f"siteclock broker-config: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {files.conf}, {files.password_file}, {files.gateway_password_file}, "
        f"{files.acl_file}"
    )
    print(f"gateway share group (mqtt.share_group, keep it off terminals): {files.share_group}")
    for user, path in sorted(files.new_credentials.items()):
        print(f"new credentials for {user}: {path} (copy it, then delete it here)")
    if args.reload_pid:
        reload(args.reload_pid)
        print(f"sent SIGHUP to {args.reload_pid}")
    return 0
