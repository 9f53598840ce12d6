"""One soak terminal in its own process: a real Outbox and Uplink, tapping its own workers.

``python -m bench.soak_terminal '<json>'`` with keys ``tid``, ``db``, ``key``, ``cfg`` (the
``UplinkConfig`` fields), ``badges``, ``status`` (a JSON file rewritten every second with the
outbox's depth and oldest unsent event), ``tap_every_s``, ``seed`` and ``witness`` (a file
off the terminal's disk where each tap is written once it is committed: what the worker was
told was saved). It taps until killed,
or until a file named like ``status`` with the suffix ``.stop`` appears (then it only drains);
the soak kills it with SIGKILL and starts it again on the same outbox, which is all that
survives.

Two more faults reach it through files. A clock jump: ``status`` with the suffix ``.clock``
holds ``{"offset_s": X}`` while the wall clock is X seconds off; its taps are then stamped
with the wrong time and flagged ``clock_unsynced``, and its heartbeats say the clock is not
synced, until the file goes (NTP is back): the next heartbeat carries a signed sync point
again, from which the gateway dates those taps. A full or read-only disk (the soak turns the
power-loss filesystem under the outbox so): a tap that cannot be stored is refused, as the
real terminal refuses it (no *saved*, nothing witnessed), and tapping goes on.

Each worker's taps alternate ``in`` and ``out`` (the last kind is read back from the
outbox after a restart) and are at least :data:`MIN_GAP_S` apart, so no two are the same
declaration.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

from siteclock.keys import Ed25519Signer
from siteclock.protocol import ClockState, Flag, Kind
from siteclock.terminal import clock as kernel
from siteclock.terminal.config import UplinkConfig
from siteclock.terminal.outbox import Outbox, OutboxFull
from siteclock.terminal.uplink import Uplink

WORKPLACE = "1Y1003SQ5VSSZ"
CLOCK = ClockState(synced=True, maxerror_us=2000, source="soak")
STEPPED = ClockState(synced=False, maxerror_us=16_000_000, source="soak")
"""The kernel's word after a step: not synced, 16 s of error, until NTP confirms the time."""


class JumpedClock:
    """The wall clock, off by the offset the soak wrote in the ``.clock`` file (if any)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset_ns(self) -> int:
        try:
            return int(float(json.loads(self.path.read_text())["offset_s"]) * 1e9)
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def status(self) -> dict[str, object]:
        """The heartbeat's clock fields, as the terminal's health probe reports them: a synced
        reading is signed by the uplink and becomes the gateway's sync point for this boot."""
        offset = self.offset_ns()
        state = STEPPED if offset else CLOCK
        return {"clock": state.to_map(), "boot_id": kernel.boot_id(),
                "boot_ns": kernel.boot_ns(), "wall_ns": time.time_ns() + offset}  # fmt: skip
MIN_GAP_S = 2.0


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    signer = Ed25519Signer.from_private_bytes(Path(spec["key"]).read_bytes())
    box = Outbox(Path(spec["db"]), signer=signer, terminal_id=spec["tid"], workplace=WORKPLACE)
    last: dict[str, tuple[Kind, float]] = {}
    for signed in box.events():  # after a restart: each worker's last tap, from the outbox
        last[signed.event.badge] = (Kind(signed.event.kind), 0.0)
    wall = JumpedClock(Path(spec["status"]).with_suffix(".clock"))
    paths = {k: Path(v) for k, v in spec["cfg"].items() if k.endswith("_file") and v is not None}
    uplink = Uplink(UplinkConfig(**{**spec["cfg"], **paths}), terminal_id=spec["tid"],
                    outbox=box, status=wall.status, on_roster=lambda r: None, keepalive_s=5,
                    reconnect_max_s=2)  # fmt: skip
    uplink.start()
    rng = random.Random(spec["seed"] + os.getpid())
    status = Path(spec["status"])
    stop = status.with_suffix(".stop")
    written = 0.0
    with Path(spec["witness"]).open("a", buffering=1) as witness:  # a line per saved tap
        while True:
            now = time.monotonic()
            ready = [] if stop.exists() else [
                b for b in spec["badges"] if now - last.get(b, (Kind.OUT, -1e9))[1] >= MIN_GAP_S
            ]  # fmt: skip
            if ready:
                badge = rng.choice(ready)
                kind = Kind.OUT if last.get(badge, (Kind.OUT, 0.0))[0] is Kind.IN else Kind.IN
                offset = wall.offset_ns()
                try:
                    signed = box.append(
                        kind=kind, badge=badge, clock=STEPPED if offset else CLOCK,
                        wall_ns=time.time_ns() + offset,
                        flags=(Flag.CLOCK_UNSYNCED,) if offset else (),
                    )  # fmt: skip
                except (OutboxFull, sqlite3.Error, OSError) as exc:  # a full or read-only disk
                    print(f"tap refused, not saved: {exc}", flush=True)
                    last[badge] = (last.get(badge, (Kind.OUT, 0.0))[0], now)
                    time.sleep(0.5)
                    continue
                witness.write(f"{signed.event.seq} {signed.event.event_id}\n")
                last[badge] = (kind, now)
                uplink.wake()
            if now - written >= 1.0:
                write_status(box, status)
                written = now
            time.sleep(rng.uniform(0.5, 1.5) * spec["tap_every_s"])


def write_status(box: Outbox, status: Path) -> None:
    """The outbox's backlog, for the soak's resource samples (replaced atomically)."""
    stats = box.stats()
    oldest = stats.oldest_unsent_wall_ns
    age = 0.0 if oldest is None else (time.time_ns() - oldest) / 1e9
    report = {"depth": stats.depth, "total": stats.total, "oldest_unsent_age_s": age}
    status.with_suffix(".tmp").write_text(json.dumps(report))
    os.replace(status.with_suffix(".tmp"), status)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
