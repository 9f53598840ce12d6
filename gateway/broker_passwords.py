"""Mosquitto 2.0 password files, written without ``mosquitto_passwd``.

The format is Mosquitto's own ``$7$`` (PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt,
base64), so the hashes of existing terminals survive a regeneration of the broker's files, and
every read-modify-write of a password file takes one lock shared by ``broker-config`` and the
enrolment endpoint.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

from siteclock.files import write_secret

PBKDF2_ITERATIONS = 101  # Mosquitto 2.0's default (src/password_mosq.c): keep it compatible
SALT_BYTES = 12
_USER_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HASH_RE = re.compile(r"\$7\$[0-9]{1,7}\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*")


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
    # Read-only is enough for flock: a lock file root created (0644) still serves the
    # enrolment endpoint, which runs as the service user in the broker's group.
    fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_password_file(
    path: Path,
    users: Mapping[str, str],
    *,
    group: int | None = None,
    owner: int | None = None,
) -> None:
    """Write {user: encoded hash} as a Mosquitto password file, sorted for stable diffs.

    Every line is checked first (a user name with a ``:`` or a newline would split one line in
    two and lock everyone after it out). The file is replaced atomically and stays readable by
    the broker's own user, whoever rewrites it (``broker-config``, an enrolment, a
    decommission, as root or not): it keeps the owner, group and mode of the file it replaces
    (``root:mosquitto 0640`` or ``mosquitto:mosquitto 0600`` alike), unless ``owner``/``group``
    (uid/gid, from ``broker-config --run-as-user``) say otherwise. A new file gets ``group``
    and 0640 when given, else 0600 for ``owner`` (or whoever writes it).
    """
    for user, encoded in users.items():
        if not _USER_RE.fullmatch(user) or not _HASH_RE.fullmatch(encoded):
            raise ValueError(f"refusing to write password line for {user!r}: not a plain name")
    text = "".join(f"{user}:{users[user]}\n" for user in sorted(users))
    write_secret(path, text.encode(), **kept_ownership(path, group=group, owner=owner))


def kept_ownership(
    path: Path, *, group: int | None = None, owner: int | None = None
) -> dict[str, int | None]:
    """``mode``, ``group`` and ``owner`` for rewriting ``path`` (see :func:`write_password_file`).

    Only root can give a file away: another writer keeps the owner only when it is itself
    (its new file is then its own, with the old group and mode: still readable by the group)."""
    mode = 0o640 if group is not None else 0o600
    if path.exists():
        st = path.stat()
        mode = st.st_mode & 0o640 if group is None else 0o640
        group = st.st_gid if group is None else group
        owner = st.st_uid if owner is None else owner
    if owner is not None and os.geteuid() not in (0, owner):
        owner = None
    return {"mode": mode, "group": group, "owner": owner}
