"""The gateway's configuration file (TOML), read with :func:`siteclock.config.load`.

Example ``/etc/siteclock/gateway.toml``::

    db = "/var/lib/siteclock/gateway.db"
    # database_url = "postgresql://siteclock@db-host/siteclock"  # docs/postgresql.md
    signing_key_file = "/etc/siteclock/gateway-signing.key"
    gateway_keys_file = "/etc/siteclock/gateway-keys.json"   # given to terminals

    [mqtt]
    host = "localhost"           # the broker's gateway listener (loopback by default)
    port = 8884
    ca_file = "/etc/siteclock/broker/pki/ca.pem"
    password_file = "/etc/siteclock/broker/credentials/siteclock_gateway.password"
    client_id = "siteclock_gateway-1"    # one per process, always starting with "siteclock"
    share_group = "siteclock-…"  # the site's secret group (broker-config prints it)

    [ciao]                       # without it the gateway stores and acks, but relays nothing
    environment = "local-sim"    # or "simulation", or "production" (+ allow_production = true)
    base_url = "http://127.0.0.1:8787"
    client_id = "self_service_chaman_123_abc"
    private_key = "/etc/siteclock/ciao-key.pem"

    [sequence]                   # the site's shift rule: the same as its terminals' [capture]
    shift_gap_h = 14.0           # a tap this long after the worker's last one starts a shift
    shift_calendar_day = false   # true: the first tap of a new local day starts one too

    [health]                     # a terminal silent this long is offline (docs/alerts.md)
    heartbeat_s = 30.0           # expected interval when a terminal does not report its own
    margin_s = 10.0

    [alerts]
    urls_file = "/etc/siteclock/alert-urls"   # Apprise URLs, one a line, mode 0600
    console_url = "https://gateway.example:8443"
    backlog_age_s = 300.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from siteclock.gateway.alerts.config import AlertConfig
from siteclock.gateway.ciao.environments import CiaoConfig
from siteclock.gateway.console.config import ConsoleConfig
from siteclock.gateway.relay_config import RelayConfig
from siteclock.gateway.sequence import SequenceConfig
from siteclock.gateway.terminal_health import HealthConfig

DEFAULT_INSS_KEY = Path("/etc/siteclock/keys/inss.key")
"""Where the INSS key lives unless configured: not beside the database (docs/provisioning.md)."""
GATEWAY_USER = "siteclock_gateway"  # same as gateway.broker.GATEWAY_USER (no import: no cycle)


@dataclass(frozen=True)
class MqttConfig:
    """How the gateway reaches the broker (its own listener, see docs/uplink.md).
    ``client_id`` must differ per gateway process and start with ``siteclock``, which no terminal
    id may: the broker then never lets a terminal take over a gateway's session.
    ``share_group`` makes the events subscription a shared one (``$share/<group>/...``); use the
    site's secret group name that ``broker-config`` prints."""

    host: str = "localhost"
    """The broker's name or address as seen from the gateway (the gateway listener is on
    loopback unless ``broker-config --gateway-bind`` says otherwise)."""
    port: int = 8884
    """The broker's gateway listener (``broker-config --gateway-port``), not the terminals'."""
    tls: bool = True
    """TLS to the broker; off only for the plain loopback listener of tests."""
    ca_file: Path | None = None
    """The site CA that signed the broker's certificate (``<broker dir>/pki/ca.pem``)."""
    username: str = GATEWAY_USER
    """The gateway's broker login (``broker-config`` creates it)."""
    password_file: Path | None = None
    """A file holding the gateway's broker password (0600), as ``broker-config`` wrote it in
    ``<broker dir>/credentials/siteclock_gateway.password``."""
    client_id: str = "siteclock_gateway"
    """The MQTT client id: different for each gateway process, starting with ``siteclock``."""
    share_group: str | None = None
    """The site's secret shared-subscription group (``broker-config`` prints it); set it when
    several gateway processes share the events."""
    session_expiry_s: int = 3600
    """How long the broker keeps the gateway's session (and queues its events) while it is away."""
    keepalive_s: int = 30
    """MQTT keepalive: a dead connection is noticed within about 1.5 times this."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"mqtt.port {self.port} is not a TCP port")
        if not self.client_id.startswith("siteclock"):
            raise ValueError(
                f"mqtt.client_id {self.client_id!r} must start with 'siteclock' (terminal ids "
                "cannot, so no terminal can take over the gateway's session)"
            )
        if self.session_expiry_s < 0:
            raise ValueError("mqtt.session_expiry_s must be >= 0")


@dataclass(frozen=True)
class GatewayConfig:
    """``db``: the SQLite file (inbox, terminal registry, and other gateway tables).
    ``signing_key_file``: the gateway's Ed25519 key (0600) that signs rosters; created on first
    start. ``gateway_keys_file``: where to write its public key as JSON for terminals."""

    db: Path
    signing_key_file: Path
    database_url: str = ""
    """When set, the gateway database is this one instead of the ``db`` file: a
    ``postgresql://user@host:port/dbname`` URL (several gateways on one database; the password
    from ``~/.pgpass`` or ``PGPASSFILE``, never written here), or ``sqlite:///path/to/file``.
    See docs/postgresql.md."""
    gateway_keys_file: Path | None = None
    log_level: str = "INFO"
    """``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``; one ``key=value`` line per record."""
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    inss_key_file: Path | None = None
    """The key that encrypts INSS numbers at rest (0600); default :data:`DEFAULT_INSS_KEY`, in
    its own directory apart from the database, so a copy or backup of the data directory holds
    ciphertext only."""
    roster_check_s: float = 5.0
    """How often the gateway looks for registry changes to republish terminals' rosters."""
    wait_report_s: float = 30.0
    """While the gateway waits for something (the broker unreachable or refusing it), it logs
    a WARNING with the cause and the next step at once and again this often."""
    ciao: CiaoConfig | None = None
    relay: RelayConfig = field(default_factory=RelayConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    """The shift rule of the sequence check (docs/direction.md): 14 h by default."""
    health: HealthConfig = field(default_factory=HealthConfig)
    """When a silent terminal counts as offline (docs/alerts.md)."""
    alerts: AlertConfig = field(default_factory=AlertConfig)
    """Alert thresholds, the console's address for links, Apprise URLs (docs/alerts.md)."""
    console: ConsoleConfig | None = None
    """The employer's console over HTTPS (docs/console.md); without it, none is served."""

    def __post_init__(self) -> None:
        schemes = ("postgresql://", "postgres://", "sqlite://")
        if self.database_url and not self.database_url.startswith(schemes):
            raise ValueError(
                f"database_url must start with postgresql:// or sqlite://, got "
                f"{self.database_url.split('://')[0]!r}"  # never echo a password
            )

    @property
    def store(self) -> Path | str:
        """Where the gateway database is: ``database_url`` when set, else the ``db`` file."""
        return self.database_url or self.db

    @property
    def inss_key_path(self) -> Path:
        return self.inss_key_file or DEFAULT_INSS_KEY
