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
    """``host``/``port``: where the console listens (HTTPS only, with ``cert_file`` and
    ``key_file``: the site's certificate). ``session_idle_s``: a session unused this long is
    closed. ``login_failures``/``login_window_s``: after this many failed logins within the
    window, for one account name or from one address, logins are refused until the window
    has passed. ``metrics_token_file``: the token of ``/metrics`` (0600)."""

    host: str = "0.0.0.0"
    """The address the console listens on (HTTPS only); `0.0.0.0` is every interface."""
    port: int = 8443
    cert_file: Path | None = None
    """The site's certificate (PEM) the console serves; with `key_file`."""
    key_file: Path | None = None
    session_idle_s: float = 8 * 3600.0
    login_failures: int = 5
    """Failed logins, for one account name or from one address, before logins are refused."""
    login_window_s: float = 15 * 60.0
    """The window in which `login_failures` count, and how long the refusal lasts."""
    default_language: str = "nl"
    """The pages' language until a person picks one: `nl`, `fr` or `en`."""
    page_size: int = 50
    """Rows per page in the terminals and registrations lists."""
    metrics_token_file: Path | None = None
    broker_password_file: Path | None = None
    """The broker's password file (Mosquitto's `password_file`). Set, a decommission from the
    console removes the terminal's broker login at once, as `siteclock provision decommission`
    does; unset, the page says to run that command. The console's user must be able to write
    it (the file keeps its owner, group and mode)."""
    broker_pid_file: Path | None = None
    """Mosquitto's pid file: after a change to `broker_password_file` the broker is told to
    reread it (SIGHUP), so the removed login stops working at once."""

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
