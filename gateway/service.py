"""``siteclock gateway --config PATH``: run the gateway until SIGTERM/SIGINT.

The gateway is four loops over one SQLite file:

- the **intake** (:class:`gateway.intake.Intake`) verifies, stores and acknowledges events;
- the **relay** (:class:`gateway.relay.Relay`, only when ``[ciao]`` is configured) registers each
  stored event with CIaO exactly once and hands every final verdict to the verdict publisher
  (:class:`gateway.verdicts.VerdictPublisher`), which publishes it on the terminal's ack topic;
- the **health watch** (:class:`gateway.alerts.HealthWatch`) turns silent terminals offline and
  raises, resolves and sends the console's alerts (docs/alerts.md);
- the **roster** loop republishes each terminal's signed roster whenever the worker registry
  changes (a new badge, a blocked one), so terminals greet workers by name, and whenever the
  site view of its workplace changes: the roster carries each worker's last attendance tap
  (:class:`gateway.sequence.SiteDay`), as soon as the gateway has *stored* it, whether or not
  the relay could send it to the NSSO yet, so every terminal of a site knows the others' taps.

The intake, relay and rosters talk to terminals over one MQTT connection
(:class:`gateway.link.MqttLink`): the intake listens on it, verdicts and rosters go out on it.

The broker or CIaO may be down at start: paho keeps reconnecting, the relay keeps retrying, and
terminals keep their events until the gateway acknowledges them, so nothing waits on anything.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from siteclock import log as sclog
from siteclock.config import ConfigError, load
from siteclock.gateway.alerts.watch import HealthWatch
from siteclock.gateway.ciao.auth import load_private_key
from siteclock.gateway.ciao.client import CiaoClient, Timeouts
from siteclock.gateway.ciao.environments import resolve
from siteclock.gateway.ciao.profile import load as load_profile
from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.console.server import GatewayConsole, serve_gateway_console
from siteclock.gateway.db import (
    RELAY_BUSY_TIMEOUT_S,
    GatewayDB,
    SQLiteGatewayDB,
    is_postgres_url,
    open_gateway_db,
)
from siteclock.gateway.intake import Intake
from siteclock.gateway.link import MqttLink
from siteclock.gateway.registry import Registry
from siteclock.gateway.relay import Relay
from siteclock.gateway.roster import RosterPublisher, write_gateway_keys
from siteclock.gateway.sequence import SiteDay
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminal_health import TerminalHealth
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.gateway.verdicts import VerdictPublisher
from siteclock.gateway.waits import WaitReporter, diagnose_broker
from siteclock.keys import IdentityError, load_or_create
from siteclock.log import fields
from siteclock.protocol import DayEntry, RosterEntry, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _SiteView:
    """What the roster loop last read for one workplace, and the versions it read it at."""

    stamp: tuple[int, tuple[int, int]]
    entries: list[RosterEntry]
    day: tuple[DayEntry, ...]
    generation: int
    """Changes only when the entries or the day changed: what a terminal was last sent is
    recorded as (workplace, generation), so a registry change elsewhere republishes nothing
    here."""


ROSTER_LEASE = "siteclock.rosters"
"""The lease (``GatewayDB.hold_lease``) of roster publishing: one gateway of several at a time."""


class Gateway:
    """Intake, relay and roster publishing for one site, built from its configuration."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        signer = load_or_create(cfg.signing_key_file)
        if cfg.gateway_keys_file is not None:
            write_gateway_keys(cfg.gateway_keys_file, [signer])
        # SQLite: each part has its own connection to the file. PostgreSQL: the parts share
        # one pool of connections (one database object, closed in stop()).
        self._db: GatewayDB | None = None
        store: Path | str | GatewayDB = cfg.store
        if is_postgres_url(store):
            self._db = store = open_gateway_db(store)[0]
        self.terminals = TerminalRegistry(store)
        # the registry's connection: a heartbeat and its health are written in one transaction
        self.health = TerminalHealth(self.terminals.db, cfg.health)
        # The alert watch writes beside the intake: its own connection to a SQLite file, the
        # shared pool on PostgreSQL.
        self._alerts_db: GatewayDB = (
            self._db
            if self._db is not None
            else SQLiteGatewayDB(cfg.db, busy_timeout_s=RELAY_BUSY_TIMEOUT_S)
        )
        self.watch = HealthWatch(self.health, cfg.alerts, db=self._alerts_db)
        self.link = MqttLink(cfg.mqtt)
        self.intake = Intake(
            cfg.mqtt, inbox=Inbox(store), registry=self.terminals, link=self.link,
            health=self.health,
        )  # fmt: skip
        self.verdicts = VerdictPublisher(self.link)
        self.rosters = RosterPublisher(self.link, signer)
        self.registry = Registry(store, cfg.inss_key_path)
        self._stop = threading.Event()
        self.relay: Relay | None = None
        if cfg.ciao is not None:
            self.relay = Relay(
                store, self._ciao_client(), self.registry,
                on_verdict=self._send_verdict, config=cfg.relay, shift=cfg.sequence.rule,
            )  # fmt: skip
        self._roster_thread: threading.Thread | None = None
        self._watch_thread: threading.Thread | None = None
        self.broker_wait = WaitReporter(
            "gateway waiting for the broker", report_every_s=cfg.wait_report_s
        )
        self.site_day = SiteDay(store)
        self._published: dict[str, tuple[str, int]] = {}  # terminal -> (workplace, generation)
        self._roster_lease = False
        self._views: dict[str, _SiteView] = {}
        self.console: GatewayConsole | None = None
        self._generations = 0

    def _ciao_client(self) -> CiaoClient:
        ciao = self.cfg.ciao
        assert ciao is not None
        return CiaoClient(
            resolve(ciao, source="gateway config"),
            client_id=ciao.client_id,
            private_key_pem=load_private_key(ciao.private_key),
            timeouts=Timeouts(ciao.connect_timeout_s, ciao.read_timeout_s),
            profile=load_profile(ciao.profile),
            policy=self.cfg.relay.backoff,
            shutdown=self._stop,
        )

    def _send_verdict(self, terminal_id: str, verdict: Verdict) -> None:
        self.verdicts.send(terminal_id, [verdict])

    # ----------------------------------------------------------------- rosters

    def publish_rosters(self) -> int:
        """Publish the roster of every active terminal whose roster changed. Returns how many.

        A round with nothing changed costs three small queries (the registry's and the site
        view's versions, and the active terminals with their workplaces), whatever the fleet;
        a workplace's roster is read and checked once for all its terminals."""
        version = self.registry.version
        due: dict[str, list[str]] = {}  # workplace -> its terminals whose roster is stale
        views: dict[str, _SiteView] = {}  # each workplace looked at once per round
        for terminal_id, place in self.terminals.active_places():
            if place not in views:
                views[place] = self._site_view(place, version)
            if self._published.get(terminal_id) != (place, views[place].generation):
                due.setdefault(place, []).append(terminal_id)
        sent = 0
        for place, terminal_ids in due.items():
            view = views[place]
            sent += self.rosters.publish_site(terminal_ids, view.entries, view.day)
            for terminal_id in terminal_ids:
                self._published[terminal_id] = (place, view.generation)
        return sent

    def _site_view(self, place: str, registry_version: int) -> _SiteView:
        """The workplace's roster entries and site view, read again only when the registry,
        the relay's decisions or the inbox changed since the last round (cheap checks);
        a terminal is republished only when what it would get differs."""
        stamp = (registry_version, self.site_day.version())
        kept = self._views.get(place)
        if kept is not None and kept.stamp == stamp:
            return kept
        entries = self.registry.roster_for(place)
        badges = {e.badge: e.worker for e in entries}
        day = tuple(self.site_day.day(place, badges))
        if kept is not None and kept.entries == entries and kept.day == day:
            generation = kept.generation
        else:
            self._generations += 1
            generation = self._generations
        view = _SiteView(stamp, entries, day, generation)
        self._views[place] = view
        return view

    def _holds_roster_lease(self) -> bool:
        """Whether this gateway publishes rosters now: of several gateways on one database,
        the one holding the lease does. One that takes it over republishes every roster once,
        so nothing changed while another held it is missed."""
        held = self.site_day.db.hold_lease(ROSTER_LEASE)
        if held and not self._roster_lease:
            self._published.clear()
        self._roster_lease = held
        return held

    def _roster_loop(self) -> None:
        while not self._stop.is_set():
            if self.intake.connected and self._holds_roster_lease():
                try:
                    sent = self.publish_rosters()
                except Exception:  # one bad roster must not stop the others next time
                    log.exception("roster publishing failed; retrying")
                    sent = 0
                if sent:
                    log.info("rosters published", extra=fields(terminals=sent))
            self._stop.wait(self.cfg.roster_check_s)

    # ----------------------------------------------------------------- waits

    BROKER_GRACE_S = 2.0
    """A connection this young may still be on its way: no warning before then."""

    def waiting_for(self) -> list[str]:
        """What the gateway waits for now, each with how long (empty when all is well): the
        broker, and the terminals whose taps the relay holds for a clock sync."""
        waits = [] if self.relay is None else self.relay.clock_holds.waiting()
        wait = self.broker_wait.current
        if wait is not None:
            waits.insert(0, f"broker: {wait.cause} (for {self.broker_wait.waited_s():.0f} s)")
        return waits

    def _watch_loop(self) -> None:
        """Says loudly and repeatedly what the gateway waits for (see :mod:`gateway.waits`)."""
        down_since: float | None = None
        while not self._stop.wait(0.5):
            if self.intake.connected:
                down_since = None
                self.broker_wait.update(None)
                continue
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            if now - down_since >= self.BROKER_GRACE_S:
                self.broker_wait.update(diagnose_broker(self.cfg.mqtt, self.link.last_refusal))

    # ----------------------------------------------------------------- lifecycle

    def start(self, *, wait_s: float | None = None) -> None:
        self.intake.start(wait_s=wait_s)
        if self.relay is not None:
            self.relay.start()
        self._roster_thread = threading.Thread(
            target=self._roster_loop, name="rosters", daemon=True
        )
        self._roster_thread.start()
        self._watch_thread = threading.Thread(target=self._watch_loop, name="waits", daemon=True)
        self._watch_thread.start()
        self.watch.start()
        if self.cfg.console is not None:
            self.console = serve_gateway_console(self.cfg, self.cfg.console)

    def stop(self) -> None:
        self._stop.set()
        if self.console is not None:
            self.console.stop()
        self.watch.stop()
        if self._alerts_db is not self._db:
            self._alerts_db.close()
        if self.relay is not None:
            self.relay.stop()
        for thread in (self._roster_thread, self._watch_thread):
            if thread is not None:
                thread.join(timeout=5)
        self.intake.stop()
        self.site_day.close()
        if self._db is not None:
            self._db.close()

    def counters(self) -> dict[str, int]:
        figures = {**self.intake.stats, **self.intake.counters}
        if self.relay is not None:
            figures |= {f"relay.{k}": v for k, v in self.relay.counters.items()}
        return figures


SUBCOMMANDS = {
    "init": ("siteclock.gateway.init", "write a working, commented gateway and broker setup"),
    "check": ("siteclock.gateway.selftest", "self-test: broker login, CIaO reachable"),
}


def cli(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
        return int(module.cli(argv[1:]))
    parser = argparse.ArgumentParser(
        prog="siteclock gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="other commands: "
        + "; ".join(
            f"siteclock gateway {name}: {help_}" for name, (_, help_) in SUBCOMMANDS.items()
        ),
    )
    parser.add_argument("--config", type=Path, required=True, help="gateway TOML file")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config, GatewayConfig)
    except ConfigError as exc:
        print(f"siteclock gateway: {exc}", file=sys.stderr)
        return 2
    sclog.setup(cfg.log_level)
    try:
        gateway = Gateway(cfg)
    except (IdentityError, ConfigError, OSError, ValueError) as exc:
        print(f"siteclock gateway: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    gateway.start(wait_s=None)
    # "started", not "running": until the broker takes the gateway in, the watch says, every
    # wait_report_s, what it waits for (gateway.waits); "connected to the broker" follows.
    log.info(
        "gateway started, connecting to the broker",
        extra=fields(
            db=str(gateway.terminals.path),  # a PostgreSQL URL without its password
            broker=f"{cfg.mqtt.host}:{cfg.mqtt.port}",
            relay="on" if gateway.relay else "off (no [ciao] section)",
        ),
    )
    while not stop.wait(60.0):
        log.info(
            "gateway counters",
            extra=fields(**gateway.counters(), waiting_for=gateway.waiting_for() or "nothing"),
        )
    gateway.stop()
    log.info("gateway stopped")
    return 0
