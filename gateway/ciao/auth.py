"""OAuth2 client credentials with a signed JWT client assertion, and the token cache.

The NSSO's REST services authenticate a client (a "REST channel" set up in Chaman) with an
RFC 7523 client assertion: a JWT signed RS256 with the channel's private key, ``iss`` = ``sub`` =
the client id, ``aud`` = the token endpoint URL, a fresh ``jti`` and a short ``exp``. The token
endpoint answers ``{access_token, token_type: "Bearer", expires_in}``. No client secret exists.

:class:`ClientAssertion` builds assertions (a new ``jti`` every time: a retried token request
must never replay one). :class:`TokenCache` keeps one access token and renews it *before* it
expires, so a long relay run never sends a dead token on purpose; :meth:`TokenCache.invalidate`
drops it when the server says 401 anyway (clock skew, server restart).
"""

from __future__ import annotations

import os
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class AuthConfigError(ValueError):
    """The client's credentials are unusable (missing key, key readable by others)."""


def load_private_key(path: Path | str) -> bytes:
    """Read a PEM private key; refuse a file that group or others can read."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        raise AuthConfigError(f"{path}: private key not found") from None
    if mode & 0o077:
        raise AuthConfigError(f"{path}: private key mode {mode:o} is not 0600")
    return path.read_bytes()


@dataclass(frozen=True)
class ClientAssertion:
    """Builds RS256 client assertions for one client id and one token endpoint."""

    client_id: str
    private_key_pem: bytes
    audience: str
    ttl_s: int = 300
    clock: Callable[[], float] = time.time

    def build(self, **overrides: Any) -> str:
        """A fresh signed assertion. ``overrides`` replace claims (tests of the server's checks)."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.audience,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + self.ttl_s,
        }
        claims.update(overrides)
        return jwt.encode(claims, self.private_key_pem, algorithm="RS256")

    def form(self) -> dict[str, str]:
        """The form fields of a token request."""
        return {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.build(),
        }


@dataclass(frozen=True)
class Token:
    value: str
    expires_in_s: float


class TokenCache:
    """One access token, fetched on first use and renewed ahead of its expiry.

    ``fetch`` performs the token request (with its own retries) and returns a :class:`Token`.
    The renewal margin is ``renew_margin_s`` but never more than a quarter of the lifetime, so a
    short-lived token (a test's 3 s) is still used for most of its life.
    """

    def __init__(
        self,
        fetch: Callable[[], Token],
        *,
        renew_margin_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._margin = renew_margin_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._renew_at = 0.0
        self.fetches = 0

    def get(self) -> str:
        with self._lock:
            if self._value is None or self._clock() >= self._renew_at:
                started = self._clock()
                token = self._fetch()
                self.fetches += 1
                margin = min(self._margin, token.expires_in_s / 4)
                self._value = token.value
                self._renew_at = started + token.expires_in_s - margin
            return self._value

    def invalidate(self, value: str | None = None) -> None:
        """Forget the token (only if it is still ``value``, when given: another thread may
        already have renewed it)."""
        with self._lock:
            if value is None or value == self._value:
                self._value = None
