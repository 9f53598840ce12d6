"""The terminal's configuration file (TOML), as typed, frozen dataclasses.

Everything an installer sets on a terminal lives in one file, usually
``/var/lib/siteclock/terminal.toml`` (provisioning writes it)::

    terminal_id = "t-0001"
    workplace = "ABCDEFGH12345"          # the Declaration of Works reference
    data_dir = "/var/lib/siteclock"      # outbox.db and the key live here (writable partition)

    [reader]
    spec = "tty:AMA0:pn532"

    [feedback]
    green_pin = 27
    red_pin = 22
    buzzer_pin = 17
    display = "ssd1306:1:0x3C"           # optional

    language = "nl"                      # display words: en (default), nl, fr, de

    [capture]
    break_pin = 5                        # optional break key
    direction = "inferred"               # or "in" / "out": an entry or exit reader
    shift_gap_h = 14.0                   # a tap this long after the last `in` starts a shift
    shift_calendar_day = false           # true: a new local day also starts a new shift

    [uplink]                             # optional: without it the terminal records offline
    host = "gateway.example.be"
    ca_file = "/var/lib/siteclock/ca.pem"
    password_file = "/var/lib/siteclock/mqtt.password"
    gateway_keys_file = "/var/lib/siteclock/gateway-keys.json"   # verifies rosters: required
                                         # to greet workers and flag blocked badges

Every key: docs/config.md (generated from this module).

A wrong file gives a :class:`~siteclock.config.ConfigError` that names the file and the key
(``terminal.toml: reader.spec: required key is missing``); the CLI prints it and exits 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from siteclock import config as config_mod
from siteclock.config import ConfigError
from siteclock.protocol import ProtocolError, check_terminal_id, check_workplace
from siteclock.terminal.capture import BreakWindow
from siteclock.terminal.direction import Direction
from siteclock.terminal.messages import LANGUAGES


@dataclass(frozen=True)
class ReaderConfig:
    spec: str
    """The reader, as ``hw.open_reader`` names it (``tty:AMA0:pn532``, ``sim:/run/x.sock``)."""
    repeat_window_s: float = 10.0
    """The same badge again within this many seconds is a repeat: answered, not recorded."""


@dataclass(frozen=True)
class FeedbackConfig:
    green_pin: int | str = 27
    """GPIO (BCM number, or a gpiozero pin name) of the green LED: saved."""
    red_pin: int | str = 22
    """GPIO of the red LED: refused or not saved."""
    buzzer_pin: int | str = 17
    """GPIO of the buzzer."""
    display: str | None = None
    """``ssd1306:<i2c port>:<address>`` for a small OLED, ``dummy`` for an in-memory one."""
    journal: Path | None = None
    """A file that gets one JSON line per feedback given (demo and tests)."""
    pin_factory: str | None = None
    """``mock`` to run without GPIO (demo, tests); None lets gpiozero choose (lgpio on a Pi)."""
    language: str = "en"
    """The display's words: ``en``, ``nl``, ``fr`` or ``de``; set the same on all of a site's
    terminals (terminal.messages)."""


@dataclass(frozen=True)
class CaptureConfig:
    break_pin: int | str | None = None
    """GPIO of a break key; without one (and without windows), taps are in/out only."""
    break_windows: list[str] = field(default_factory=list)
    """Local-time spans such as ``"12:00-13:00"``: a working worker's tap there starts a break."""
    direction: str = "inferred"
    """``inferred`` from the worker's day on the site, or fixed: ``in`` (entry reader or
    turnstile) or ``out`` (exit). Fixed-direction taps are flagged ``fixed_direction``."""
    shift_gap_h: float = 14.0
    """A tap more than this many hours after the worker's last tap starts a new shift with
    ``in``; a missing ``out`` before it is flagged ``missing_out`` for the employer."""
    shift_calendar_day: bool = False
    """Also start a new shift at the first tap of a new local calendar day."""


@dataclass(frozen=True)
class UplinkConfig:
    """How the terminal reaches the gateway over MQTT (used by ``terminal.uplink``)."""

    host: str = "localhost"
    """The broker's name or address as terminals reach it (the one its certificate names)."""
    port: int = 8883
    """The broker's terminal listener (TLS)."""
    tls: bool = True
    """TLS to the broker; leave it on."""
    ca_file: Path | None = None
    """The site CA that signed the broker's certificate (provisioning writes it)."""
    username: str | None = None
    """The broker login; defaults to the terminal id (the broker forces it to be)."""
    password_file: Path | None = None
    """A file holding this terminal's broker password (0600; provisioning writes it)."""
    gateway_keys_file: Path | None = None
    """The gateway's roster-signing public keys (JSON, written by provisioning from the
    gateway's ``gateway_keys_file``). Without it every roster is refused: workers are not
    greeted by name and blocked badges are not flagged (the terminal says so in its status)."""
    heartbeat_s: float = 30.0
    """Seconds between two status messages (queue depth, clock, reader, roster) to the gateway."""
    max_batch: int = 200
    """Most events in one MQTT message when the terminal drains a backlog."""
    max_inflight_batches: int = 4
    """Batches sent and not yet acknowledged by the gateway, at most."""
    resend_after_s: float = 10.0
    """An event the gateway has not acknowledged after this long is sent again."""


@dataclass(frozen=True)
class TerminalConfig:
    terminal_id: str
    """This terminal's id (3-63 of ``a-z0-9-``), its broker login too."""
    workplace: str
    """The Declaration of Works reference (13 characters) the terminal is bound to."""
    data_dir: Path
    """Where the outbox (``outbox.db``) and the key live: a writable, persistent directory,
    absolute (a relative one would depend on where the terminal was started)."""
    reader: ReaderConfig
    key_file: Path | None = None
    """The Ed25519 signing key; defaults to ``<data_dir>/terminal.key``."""
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    evidence_days: int = 45
    """Delivered events are kept this long (the NSSO takes corrections within 30 days)."""
    uplink: UplinkConfig | None = None

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.db"

    @property
    def key_path(self) -> Path:
        return self.key_file if self.key_file is not None else self.data_dir / "terminal.key"


def load(path: Path | str) -> TerminalConfig:
    """Read and check a terminal configuration file. Raises ``ConfigError`` naming the key."""
    cfg = config_mod.load(path, TerminalConfig)
    checks = (
        ("terminal_id", lambda: check_terminal_id(cfg.terminal_id)),
        ("workplace", lambda: check_workplace(cfg.workplace)),
    )
    for key, check in checks:
        try:
            check()
        except ProtocolError as exc:
            raise ConfigError(path, key, str(exc)) from None
    if cfg.capture.direction not in {d.value for d in Direction}:
        raise ConfigError(path, "capture.direction", "must be 'inferred', 'in' or 'out'")
    if cfg.capture.shift_gap_h <= 0:
        raise ConfigError(path, "capture.shift_gap_h", "must be positive")
    if cfg.feedback.language not in LANGUAGES:
        raise ConfigError(path, "feedback.language", f"must be one of {', '.join(LANGUAGES)}")
    for i, window in enumerate(cfg.capture.break_windows):
        try:
            BreakWindow.parse(window)
        except ValueError as exc:
            raise ConfigError(path, f"capture.break_windows[{i}]", str(exc)) from None
    if cfg.evidence_days < 1:
        raise ConfigError(path, "evidence_days", "must be at least 1")
    if cfg.reader.repeat_window_s < 0:
        raise ConfigError(path, "reader.repeat_window_s", "must not be negative")
    if cfg.uplink is not None:
        for key in ("heartbeat_s", "max_batch", "max_inflight_batches", "resend_after_s"):
            if getattr(cfg.uplink, key) <= 0:
                raise ConfigError(path, f"uplink.{key}", "must be positive")
    return cfg
