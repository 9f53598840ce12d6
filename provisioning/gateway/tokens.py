"""Enrolment tokens on the gateway database: random, hashed at rest, expiring, single use."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siteclock.gateway.db import GatewayDB, open_gateway_db
from siteclock.provisioning.shared.requests import (
    EnrolmentRefused,
    format_token,
    hash_token,
    unauthorized,
)
from siteclock.provisioning.shared.workplace import parse_reference

DEFAULT_TTL_S = 24 * 3600


RETRY_GRACE_S = 3600
"""After its claim, the claimant may repeat its enrolment this long even past expiry."""


TOKEN_BYTES = 15  # 120 bits -> 24 base32 characters, typed in six groups of four


@dataclass(frozen=True)
class IssuedToken:
    token: str
    """The secret: shown to the employer once, never stored."""
    workplace: str
    expires_ns: int
    token_hash: str


@dataclass(frozen=True)
class TokenInfo:
    token_hash: str
    workplace: str
    created_ns: int
    expires_ns: int
    created_by: str
    note: str
    used_ns: int | None
    used_by: str | None
    revoked_ns: int | None = None

    @property
    def id(self) -> str:
        """What a person names the token by (``token list``, ``token revoke``): the start of
        its hash, which says nothing about the token itself."""
        return self.token_hash[:10]

    def state(self, now_ns: int) -> str:
        if self.revoked_ns is not None:
            return "revoked"
        if self.used_ns is not None:
            return f"used by {self.used_by}"
        return "expired" if now_ns >= self.expires_ns else "unused"


class TokenStore:
    """Enrolment tokens on the gateway database (:mod:`siteclock.gateway.db`)."""

    def __init__(
        self, path: Path | str | GatewayDB, *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self._clock = clock
        self._db, self._owned = open_gateway_db(path)

    def close(self) -> None:
        if self._owned:
            self._db.close()

    def create(
        self,
        workplace: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        created_by: str = "",
        note: str = "",
    ) -> IssuedToken:
        """A new single-use token for ``workplace``, valid ``ttl_s`` seconds."""
        workplace = parse_reference(workplace)
        if not 60 <= ttl_s <= 30 * 86400:
            raise ValueError("a token lives between 1 minute and 30 days")
        token = format_token(secrets.token_bytes(TOKEN_BYTES))
        now = self._clock()
        expires = now + int(ttl_s * 1e9)
        digest = hash_token(token)
        self._db.add_token(digest, workplace, now, expires, created_by, note)
        return IssuedToken(token, workplace, expires, digest)

    def info(self, token: str) -> TokenInfo | None:
        row = self._db.token(hash_token(token))
        return TokenInfo(*row) if row else None

    def list(self) -> list[TokenInfo]:
        revoked = self._db.token_revocations()
        return [TokenInfo(*r, revoked_ns=revoked.get(r[0])) for r in self._db.tokens()]

    def find(self, name: str) -> TokenInfo:
        """The one token ``name`` names: an id from :meth:`list` (at least 6 characters of the
        hash), or the token itself."""
        text = (name or "").strip().lower()
        if len(text) < 6:
            raise ValueError("give at least 6 characters of the token's id (see 'token list')")
        tokens = self.list()
        by_token = hash_token(name)
        found = [t for t in tokens if t.token_hash.startswith(text) or t.token_hash == by_token]
        if not found:
            raise ValueError(f"no token with id {name!r} (see 'token list')")
        if len(found) > 1:
            raise ValueError(f"{name!r} names {len(found)} tokens: give more characters")
        return found[0]

    def revoke(self, name: str, *, by: str = "") -> TokenInfo:
        """Revoke an unused token (it can no longer enrol anything). Returns it."""
        token = self.find(name)
        if not self._db.revoke_token(token.token_hash, self._clock(), by):
            raise ValueError(
                f"token {token.id} is {token.state(self._clock())}: only an unused one is revoked"
            )
        return token

    def check(self, token: str, *, terminal_id: str, kid: str, workplace: str) -> None:
        """Raise what :meth:`claim` would, without claiming: the caller's right to hear more."""
        row = self._db.token_claim(hash_token(token))
        self._check_claim(row, self._clock(), terminal_id, kid, workplace)

    def record_location_conflict(self, workplace: str, terminal_id: str, location: Any) -> None:
        """Keep a location a terminal gave that differs from the site's (for the employer)."""
        coords, address = location.coordinates, location.address
        self._db.record_location_conflict(
            workplace, terminal_id, self._clock(),
            coords.latitude if coords else None, coords.longitude if coords else None,
            json.dumps(address.to_ciao()) if address else None,
        )  # fmt: skip

    def location_conflicts(self, workplace: str) -> list[dict[str, Any]]:
        """Locations terminals gave for ``workplace`` that were not applied, oldest first."""
        rows = self._db.location_conflicts(workplace)
        return [
            {"terminal": r[0], "at_ns": r[1], "latitude": r[2], "longitude": r[3],
             "address": json.loads(r[4]) if r[4] else None}
            for r in rows
        ]  # fmt: skip

    def claim(self, token: str, *, terminal_id: str, kid: str, workplace: str) -> bool:
        """Use the token for (terminal, key) at ``workplace``.

        Returns True on the first claim, False when the same claimant repeats (a retry after a
        lost answer). Raises :class:`EnrolmentRefused` otherwise.
        """
        digest = hash_token(token)
        now = self._clock()
        with self._db.atomic():
            row = self._db.token_claim(digest)
            first = self._check_claim(row, now, terminal_id, kid, workplace)
            if first:
                self._db.claim_token(digest, terminal_id, kid, now)
        return first

    @staticmethod
    def _check_claim(row: Any, now: int, terminal_id: str, kid: str, workplace: str) -> bool:
        if row is None:
            raise unauthorized("unknown_token")
        scope, expires, used_ns, used_by, used_kid = row
        if used_ns is not None:
            same = used_by == terminal_id and used_kid == kid
            if same and now < max(expires, used_ns + int(RETRY_GRACE_S * 1e9)):
                return False
            raise unauthorized("used")
        if now >= expires:
            raise unauthorized("expired")
        if scope != workplace:  # the caller holds a valid token: it may learn its scope
            raise EnrolmentRefused(
                "wrong_workplace",
                f"this enrolment token is for workplace {scope}, not {workplace}",
            )
        return True
