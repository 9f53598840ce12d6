"""In-process terminals that tap through faults, and the history checker for the gateway's inbox.

A :class:`Tapper` taps on one terminal (real Outbox and Uplink) until told to stop, recording
each committed (seq, event_id). After the faults, :func:`saved_histories` checks that each
outbox, the system of record, holds exactly what was committed, and :func:`classify` judges
every committed event against the gateway's inbox: *stored*, *lost* or *duplicated*, plus
*unexpected* for inbox rows nobody committed.

Example::

    tapper = make_tapper(root, "t-1", signer, cfg, reconnect_max_s=1)
    tapper.uplink.start(); threading.Thread(target=tapper.run, daemon=True).start()
    ...                                         # faults
    tapper.stop.set()
    committed = saved_histories([tapper])
    assert classify(committed, Inbox(db)) == Counter(stored=len(committed["t-1"]))
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siteclock.gateway.store import Inbox
from siteclock.keys import Ed25519Signer
from siteclock.protocol import ClockState, Kind
from siteclock.terminal.config import UplinkConfig
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.uplink import Uplink

WORKPLACE = "1Y1003SQ5VSSZ"
CLOCK = ClockState(synced=True, maxerror_us=2000, source="test")
TAP_INTERVAL_S = 0.03


@dataclass
class Tapper:
    """Taps on one in-process terminal until told to stop; records what was committed."""

    box: Outbox
    uplink: Uplink
    committed: list[tuple[int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            signed = self.box.append(kind=Kind.OUT, badge="nfc-a:0A", clock=CLOCK)
            self.committed.append((signed.event.seq, signed.event.event_id))
            self.uplink.wake()
            time.sleep(TAP_INTERVAL_S)


def make_tapper(
    root: Path, tid: str, signer: Ed25519Signer, cfg: UplinkConfig, **uplink_options: Any
) -> Tapper:
    """A tapper on ``root/<tid>.db`` whose uplink is built but not started (the caller starts
    it where its sockets must live)."""
    box = Outbox(root / f"{tid}.db", signer=signer, terminal_id=tid, workplace=WORKPLACE)
    up = Uplink(cfg, terminal_id=tid, outbox=box, status=dict, on_roster=lambda r: None,
                **uplink_options)  # fmt: skip
    return Tapper(box, up)


def saved_histories(tappers: list[Tapper]) -> dict[str, list[tuple[int, str]]]:
    """Each tapper's committed events, once its outbox is checked to hold exactly those and to
    be drained; closes the outboxes."""
    committed = {t.uplink.terminal_id: t.committed for t in tappers}
    for tapper in tappers:  # the in-memory history agrees with the outbox, the system of record
        held = [(s.event.seq, s.event.event_id) for s in tapper.box.events()]
        assert held == tapper.committed
        assert tapper.box.stats().depth == 0
        tapper.box.close()
    return committed


def classify(committed: dict[str, list[tuple[int, str]]], inbox: Inbox) -> Counter[str]:
    """stored / lost / duplicated per committed event, unexpected for foreign inbox rows."""
    verdicts: Counter[str] = Counter()
    for tid, events in committed.items():
        rows = inbox.rows(tid)
        held = Counter(event_id for _, event_id, _ in rows)
        by_seq = {seq: event_id for seq, event_id, _ in rows}
        for seq, event_id in events:
            if held[event_id] > 1:
                verdicts["duplicated"] += 1
            elif by_seq.get(seq) == event_id:
                verdicts["stored"] += 1
            else:
                verdicts["lost"] += 1
        known = {event_id for _, event_id in events}
        verdicts["unexpected"] += sum(1 for _, event_id, _ in rows if event_id not in known)
    return verdicts
