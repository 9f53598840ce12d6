"""A site's terminals as ``siteclock terminal`` builds them, with injected wall clocks, for
integration tests that replay taps on a worksite through a real broker and gateway.

Each :class:`Terminal` has its own outbox, :class:`terminal.uplink.Uplink` and
:class:`terminal.capture.Capture`; :func:`knows` says whether its newest roster's site view has
a worker's tap. :func:`site_gateway_config` is the site's gateway (relay to the CIaO simulator,
rosters checked every 50 ms); :func:`at` dates the replayed day, two days back so the simulator
takes every registration date.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siteclock.gateway.ciao.environments import CiaoConfig
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.relay import RelayConfig
from siteclock.hw.base import BadgeRead
from siteclock.keys import Ed25519Signer
from siteclock.protocol import ClockState, Roster
from siteclock.terminal.capture import Capture, TapResult
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.uplink import Uplink
from tests.support.ciao import CLIENT_ID, FAST_RELAY, rsa_pair, write_private_key
from tests.support.mosquitto import MosquittoBroker, gateway_config, terminal_config
from tests.support.waiting import wait_for

SYNCED = ClockState(synced=True, maxerror_us=20_000, source="test")
DAY = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(
    days=2
)


def at(hhmm: str, *, day: int = 0) -> int:
    """Nanoseconds of ``hhmm`` (UTC) on the replayed day (``day=-1``: the day before)."""
    hours, minutes = map(int, hhmm.split(":"))
    moment = DAY + dt.timedelta(days=day, hours=hours, minutes=minutes)
    return int(moment.timestamp()) * 10**9


def site_gateway_config(tmp_path: Path, broker: MosquittoBroker, sim: SimServer) -> GatewayConfig:
    """The gateway of the site: ``gateway.db``, ``inss.key`` and ``gateway-keys.json`` (for the
    terminals) in ``tmp_path``, relaying to ``sim`` with the fast test timings."""
    key = write_private_key(tmp_path / "ciao.pem", rsa_pair()[0])
    return GatewayConfig(
        db=tmp_path / "gateway.db", signing_key_file=tmp_path / "gateway-signing.key",
        gateway_keys_file=tmp_path / "gateway-keys.json", mqtt=gateway_config(broker),
        roster_check_s=0.05, inss_key_file=tmp_path / "inss.key",
        ciao=CiaoConfig(client_id=CLIENT_ID, base_url=sim.url, private_key=key),
        relay=RelayConfig(**FAST_RELAY),  # type: ignore[arg-type]
    )  # fmt: skip


@dataclass
class Terminal:
    """One terminal as ``siteclock terminal`` builds it, with an injected wall clock."""

    terminal_id: str
    path: Path
    signer: Ed25519Signer
    workplace: str
    clock: list[int]
    broker: MosquittoBroker
    keys_file: Path
    outbox: Outbox = field(init=False)
    capture: Capture = field(init=False)
    uplink: Uplink | None = None
    rosters: list[Roster] = field(default_factory=list)
    feedback: Any = None  # a terminal.feedback.Feedback, to see what the worker was told

    def __post_init__(self) -> None:
        self.open()

    def open(self) -> None:
        self.outbox = Outbox(self.path, signer=self.signer, terminal_id=self.terminal_id,
                             workplace=self.workplace)  # fmt: skip
        self.capture = Capture(
            self.outbox, feedback=self.feedback, clock=lambda: SYNCED,
            wall_ns=lambda: self.clock[0],
            site_view=lambda: self.uplink is not None and self.uplink.connected,
        )  # fmt: skip
        if self.rosters:
            self.capture.apply_roster(self.rosters[-1])

    def receive(self, roster: Roster) -> None:
        self.rosters.append(roster)
        self.capture.apply_roster(roster)

    def online(self) -> None:
        self.uplink = Uplink(
            terminal_config(self.broker, self.terminal_id, gateway_keys_file=self.keys_file),
            terminal_id=self.terminal_id, outbox=self.outbox, status=dict, on_roster=self.receive,
        )  # fmt: skip
        self.uplink.start()
        wait_for(lambda: self.uplink is not None and self.uplink.connected, "uplink up")

    def offline(self) -> None:
        if self.uplink is not None:
            self.uplink.stop()
            self.uplink = None

    def rebind(self, workplace: str) -> None:
        """What ``siteclock provision rebind`` leaves behind: the same outbox file and key,
        bound to another workplace; the terminal service restarts."""
        self.offline()
        self.outbox.close()
        self.workplace = workplace
        self.rosters.clear()
        self.open()
        self.online()

    def tap(self, badge: str, when: int) -> TapResult:
        self.clock[0] = when
        result = self.capture.tap(BadgeRead(badge, time.monotonic_ns()))
        assert result.signed is not None, result
        return result

    def close(self) -> None:
        self.offline()
        self.outbox.close()


def knows(terminal: Terminal, worker_ref: str, wall_ns: int) -> bool:
    roster = terminal.rosters[-1] if terminal.rosters else None
    return roster is not None and any(
        d.worker == worker_ref and d.wall_ns >= wall_ns for d in roster.day
    )
