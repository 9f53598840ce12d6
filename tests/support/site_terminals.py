"""A site's terminals as ``siteclock terminal`` builds them, with injected wall clocks, for
integration tests that replay taps on a worksite through a real broker and gateway.

Each :class:`Terminal` has its own outbox, :class:`terminal.uplink.Uplink` and
:class:`terminal.capture.Capture`; :func:`knows` says whether its newest roster's site view has
a worker's tap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hw.base import BadgeRead
from siteclock.protocol import ClockState, Ed25519Signer, Roster
from terminal.capture import Capture, TapResult
from terminal.outbox import Outbox
from terminal.uplink import Uplink
from tests.support.mosquitto import MosquittoBroker, terminal_config
from tests.support.waiting import wait_for

SYNCED = ClockState(synced=True, maxerror_us=20_000, source="test")


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
