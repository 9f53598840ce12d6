"""Terminals' broker logins: one line each in Mosquitto's password file, reloaded by SIGHUP."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from siteclock.gateway.broker import (
    generate_password,
    hash_password,
    password_file_lock,
    read_password_file,
    write_password_file,
)
from siteclock.gateway.broker import reload as reload_broker


def pid_file_reloader(pid_file: Path) -> Callable[[], None]:
    """Reload a Mosquitto whose pid is in ``pid_file`` (its ``pid_file`` setting) by SIGHUP."""

    def reload() -> None:
        reload_broker(int(Path(pid_file).read_text().strip()))

    return reload


class BrokerAccounts:
    """Adds, replaces and removes one user's line in Mosquitto's password file, then reloads.

    Only this user's line changes; the others keep their hashes. A lock file serialises writers
    across processes (the enrolment server and an employer's CLI on the same host). ``reload``
    makes the running broker reread the file (SIGHUP: new logins use it at once, no restart).
    """

    def __init__(self, password_file: Path, reload: Callable[[], None]) -> None:
        self.password_file = Path(password_file)
        self._reload = reload

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, str]]:
        with password_file_lock(self.password_file):  # the lock broker-config takes too
            users = read_password_file(self.password_file)
            yield users
            write_password_file(self.password_file, users)

    def set_password(self, user: str) -> str:
        """Give ``user`` a new random password (old one stops working); returns it."""
        password = generate_password()
        with self._locked() as users:
            users[user] = hash_password(password)
        self._reload()
        return password

    def remove(self, user: str) -> bool:
        """Remove ``user``: the broker refuses its next login. Returns whether it existed."""
        with self._locked() as users:
            existed = users.pop(user, None) is not None
        self._reload()
        return existed

    def has(self, user: str) -> bool:
        return user in read_password_file(self.password_file)
