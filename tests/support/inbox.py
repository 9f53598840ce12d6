"""Test helper: the intake's ``inbox`` table, filled with real signed protocol events.

The intake (another module) fills this table in production; tests of the relay fill it here,
through the gateway data layer, with rows built from genuinely signed :mod:`siteclock.protocol`
events, one hash chain per terminal.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from siteclock import protocol as p
from siteclock.gateway.db import open_gateway_db
from siteclock.gateway.store import inbox_row
from siteclock.keys import Ed25519Signer


def create_inbox(db_path: Path | str) -> None:
    """Create the gateway database at ``db_path`` (a file or a database URL: every table,
    through its migrations)."""
    open_gateway_db(db_path)[0].close()


KEYS: dict[str, bytes] = {}
"""Public keys of every test terminal, by key id (what the intake's terminal registry holds)."""


class TerminalFeed:
    """One terminal's signed, chained events."""

    def __init__(self, terminal_id: str, workplace: str) -> None:
        self.terminal_id = terminal_id
        self.workplace = workplace
        self.signer = Ed25519Signer.generate()
        KEYS[self.signer.kid] = self.signer.public_key_bytes()
        self.seq = 0
        self.prev = p.GENESIS_HASH

    def event(
        self,
        kind: p.Kind | str,
        badge: str,
        wall_ns: int,
        *,
        boot_id: str = "boot-1",
        boot_ns: int | None = None,
        clock: p.ClockState = p.ClockState(True, 1000, "test"),  # noqa: B008 - frozen value
        flags: tuple[str, ...] = (),
    ) -> p.SignedEvent:
        """The next signed event on this terminal's chain (synced clock unless told)."""
        self.seq += 1
        event = p.Event(
            terminal_id=self.terminal_id,
            workplace=self.workplace,
            seq=self.seq,
            prev_hash=self.prev,
            event_id=uuid.uuid4().hex,
            kind=p.Kind(kind),
            badge=badge,
            wall_ns=wall_ns,
            boot_id=boot_id,
            boot_ns=wall_ns % 10**12 if boot_ns is None else boot_ns,
            clock=clock,
            flags=flags,
        )
        signed = p.sign_event(event, self.signer)
        self.prev = signed.digest
        return signed


def insert(db_path: Path | str, events: list[p.SignedEvent]) -> None:
    """Store events as the intake would (signature checked first, as it does)."""
    rows = []
    for signed in events:
        signed.verify(KEYS)
        rows.append(inbox_row(signed.event.terminal_id, signed, signed.event, time.time_ns()))
    db, _ = open_gateway_db(db_path)
    try:
        db.store_events(rows)
    finally:
        db.close()


CYCLE = (p.Kind.IN, p.Kind.BREAK_START, p.Kind.BREAK_END, p.Kind.OUT)


def make_events(
    feeds: list[TerminalFeed], badges: list[str], count: int, *, start_ns: int | None = None
) -> list[p.SignedEvent]:
    """``count`` events round-robin over terminals and badges, one second apart (so no two
    are the same declaration), each badge cycling in -> break -> out. Starts a day ago."""
    start = start_ns if start_ns is not None else time.time_ns() - 86_400 * 10**9
    out = []
    for i in range(count):
        feed = feeds[i % len(feeds)]
        badge = badges[i % len(badges)]
        kind = CYCLE[(i // len(badges)) % len(CYCLE)]
        out.append(feed.event(kind, badge, start + i * 10**9))
    return out
