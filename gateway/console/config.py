"""The console's settings: the ``[console]`` table of ``gateway.toml``.

Example::

    [console]
    port = 8443
    cert_file = "/etc/siteclock/broker/pki/server.pem"    # the site's certificate
    key_file = "/etc/siteclock/broker/pki/server.key"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LANGUAGES = ("nl", "fr", "en")
"""The console's languages; English is the text in the code, the others are catalogs."""


@dataclass(frozen=True)
class ConsoleConfig:
    """The employer's console, served by the gateway over HTTPS (docs/console.md)."""

    host: str = "0.0.0.0"
    """Address the console listens on (HTTPS only)."""
    port: int = 8443
    """Its TCP port; 0 picks a free one."""
    cert_file: Path | None = None
    """The site's TLS certificate (PEM), e.g. the broker's ``pki/server.pem``: required."""
    key_file: Path | None = None
    """The certificate's private key (0600): required."""
    session_idle_s: float = 8 * 3600.0
    """A session unused this long is closed (seconds)."""
    login_failures: int = 5
    """Failed logins for one account name, within ``login_window_s``, before its logins are
    refused (four times as many from one address)."""
    login_window_s: float = 15 * 60.0
    """The window of the login limit (seconds); a blocked name waits until its oldest failure
    leaves it."""
    default_language: str = "nl"
    """``nl``, ``fr`` or ``en``: when neither the user nor the browser chooses."""
    page_size: int = 50
    """Registrations per page (1-500)."""
    metrics_token_file: Path | None = None
    """The token ``/metrics`` asks for (a file of mode 0600)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"console.port {self.port} is not a TCP port")
        if self.default_language not in LANGUAGES:
            raise ValueError(
                f"console.default_language {self.default_language!r} is not one of "
                + ", ".join(LANGUAGES)
            )
        if self.login_failures < 1 or self.login_window_s <= 0:
            raise ValueError("console.login_failures and login_window_s must be positive")
        if not 1 <= self.page_size <= 500:
            raise ValueError("console.page_size must be 1..500")
