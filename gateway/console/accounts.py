"""Employer accounts: Argon2-hashed passwords, roles and the worksites a site manager has.

Two roles: an **administrator** sees every worksite and manages users; a **site manager** sees
the worksites given to them, and on those every registration, whichever employer's worker
tapped (a main contractor answers for its subcontractors' workers on its site).

Example::

    accounts = Accounts(db)
    accounts.add("an", "correct horse battery", role=Role.SITE_MANAGER,
                 worksites=["1Y1003SQ5VSSZ"])
    user = accounts.check_password("an", "correct horse battery")   # User or None
    user.can_see("1Y1003SQ5VSSZ")      # True
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from siteclock.gateway.console.config import LANGUAGES
from siteclock.gateway.db import GatewayDB
from siteclock.gateway.identifiers import InvalidIdentifier, normalize_workplace

USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MIN_PASSWORD = 12

_HASHER = PasswordHasher()  # argon2id with the library's current (RFC 9106 low-memory) profile
_DUMMY_HASH = _HASHER.hash("siteclock-no-such-account")
"""Checked against when the account does not exist, so timing does not tell names apart."""


class AccountError(ValueError):
    """An account request that cannot be done as asked (the message says why)."""


class Role(StrEnum):
    ADMIN = "admin"
    SITE_MANAGER = "site_manager"


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: Role
    worksites: frozenset[str]
    language: str = "en"

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def can_see(self, workplace: str | None) -> bool:
        """Whether this user may see what happened on ``workplace``."""
        return self.is_admin or (workplace is not None and workplace in self.worksites)

    def scope(self) -> tuple[str, ...] | None:
        """The worksites this user may see; ``None`` means every worksite (administrator)."""
        return None if self.is_admin else tuple(sorted(self.worksites))


def check_username(username: str) -> str:
    if not USERNAME_RE.fullmatch(username):
        raise AccountError(
            "a user name is 1-64 lower-case letters, digits, '.', '_', '@' or '-', "
            f"starting with a letter or digit (got {username!r})"
        )
    return username


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def check_worksites(role: Role, worksites: Iterable[str]) -> list[str]:
    try:
        refs = sorted({normalize_workplace(w) for w in worksites})
    except InvalidIdentifier as exc:
        raise AccountError(str(exc)) from None
    if role is Role.SITE_MANAGER and not refs:
        raise AccountError("a site manager needs at least one worksite (--worksite REF)")
    if role is Role.ADMIN and refs:
        raise AccountError("an administrator sees every worksite: give no worksites")
    return refs


class Accounts:
    """The console's accounts in the gateway database."""

    def __init__(self, db: GatewayDB, *, clock_ns: object = time.time_ns) -> None:
        self.db = db
        self._now_ns = clock_ns

    def add(
        self, username: str, password: str, *, role: Role | str,
        worksites: Iterable[str] = (), language: str = "nl",
    ) -> User:  # fmt: skip
        role = Role(role)
        check_username(username)
        check_password(password)
        sites = check_worksites(role, worksites)
        if language not in LANGUAGES:
            raise AccountError(f"language {language!r} is not one of {', '.join(LANGUAGES)}")
        try:
            self.db.add_console_user(
                username,
                _HASHER.hash(password),
                str(role),
                sites,
                language,
                self._now_ns(),  # type: ignore[operator]
            )
        except sqlite3.IntegrityError:
            raise AccountError(f"user {username!r} exists already") from None
        return User(username, role, frozenset(sites), language)

    def get(self, username: str) -> User | None:
        """The enabled account of that name, or None."""
        row = self.db.console_user(username)
        if row is None or row[4]:
            return None
        return User(row[0], Role(row[2]), frozenset(row[5]), row[3])

    def all(self) -> list[tuple[User, bool]]:
        """Every account and whether it is disabled."""
        return [
            (User(r[0], Role(r[2]), frozenset(r[5]), r[3]), bool(r[4]))
            for r in self.db.console_users()
        ]

    def check_password(self, username: str, password: str) -> User | None:
        """The user when the password is theirs (and the account enabled), else None."""
        row = self.db.console_user(username)
        stored = row[1] if row is not None else _DUMMY_HASH
        try:
            _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row[4]:
            return None
        if _HASHER.check_needs_rehash(stored):
            self.db.set_console_user(username, password_hash=_HASHER.hash(password))
        return self.get(username)

    def set_password(self, username: str, password: str) -> None:
        check_password(password)
        if not self.db.set_console_user(username, password_hash=_HASHER.hash(password)):
            raise AccountError(f"no user {username!r}")

    def update(
        self, username: str, *, role: Role | str | None = None,
        worksites: Iterable[str] | None = None, disabled: bool | None = None,
        language: str | None = None,
    ) -> None:  # fmt: skip
        current = self.db.console_user(username)
        if current is None:
            raise AccountError(f"no user {username!r}")
        new_role = Role(role) if role is not None else Role(current[2])
        sites = None
        if worksites is not None or role is not None:
            sites = check_worksites(new_role, worksites if worksites is not None else current[5])
        if language is not None and language not in LANGUAGES:
            raise AccountError(f"language {language!r} is not one of {', '.join(LANGUAGES)}")
        self.db.set_console_user(
            username, role=str(role) if role is not None else None, worksites=sites,
            disabled=disabled, language=language,
        )  # fmt: skip

    def remove(self, username: str) -> None:
        if not self.db.remove_console_user(username):
            raise AccountError(f"no user {username!r}")
