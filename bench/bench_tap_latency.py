"""Tap latency: from a badge read delivered by the driver to the worker's feedback fired.

Runs the real path (``Capture.tap``: roster lookup, kind inference, verdict lookup, event build,
Ed25519 signature, one ``BEGIN IMMEDIATE`` ... ``COMMIT`` in WAL with ``synchronous=FULL`` on a
file on disk, then ``Feedback.saved`` on gpiozero mock pins with the JSON journal) and, in the
same run and interleaved with it, the *floor*: one signature plus one WAL/FULL commit of the
same row into a bare table, nothing else. The commit's fsync dominates both; the goal is that
everything the terminal adds keeps p99 within 4x of the floor.

Figures: ``p50_ms``, ``p99_ms``, ``floor_p50_ms``, ``floor_p99_ms``, ``p99_ratio_to_floor``.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from siteclock.hw.base import BadgeRead
from siteclock.keys import Ed25519Signer
from siteclock.protocol import ClockState, Roster, RosterEntry, seal
from siteclock.terminal.capture import Capture
from siteclock.terminal.feedback import Feedback
from siteclock.terminal.outbox import Outbox

TAPS = 400
WARMUP = 20
GOAL_RATIO = 4.0
BADGES = [f"nfc-a:04{i:06X}" for i in range(25)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _floor_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB, alg TEXT,"
        " kid TEXT, sig BLOB)"
    )
    return db


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-tap-", dir=Path.cwd()) as tmp:
        root = Path(tmp)
        signer = Ed25519Signer.generate()
        outbox = Outbox(root / "outbox.db", signer=signer, terminal_id="t-bench",
                        workplace="ABCDEFGH12345")  # fmt: skip
        feedback = Feedback(27, 22, 17, pin_factory=MockFactory(), journal=root / "j.jsonl")
        clock = ClockState(synced=True, maxerror_us=20_000, source="adjtimex")
        capture = Capture(outbox, feedback=feedback, clock=lambda: clock)
        capture.apply_roster(
            Roster("t-bench", 1, tuple(RosterEntry(b, f"w-{b}", "Worker") for b in BADGES))
        )
        floor_db = _floor_db(root / "floor.db")

        taps: list[float] = []
        floor: list[float] = []
        for i in range(TAPS + WARMUP):
            read = BadgeRead(BADGES[i % len(BADGES)], time.monotonic_ns())
            result = capture.tap(read)
            done = time.monotonic_ns()
            assert result.pattern == "saved", result
            body = result.signed.envelope.body  # the same row, for the floor

            started = time.monotonic_ns()
            env = seal(body, signer)
            floor_db.execute("BEGIN IMMEDIATE")
            floor_db.execute(
                "INSERT INTO events (body, alg, kid, sig) VALUES (?, ?, ?, ?)",
                (env.body, env.alg, env.kid, env.sig),
            )
            floor_db.execute("COMMIT")
            floor_done = time.monotonic_ns()
            if i >= WARMUP:
                taps.append((done - read.at_ns) / 1e6)
                floor.append((floor_done - started) / 1e6)

        feedback.close()
        outbox.close()
        floor_db.close()

    ratio = _percentile(taps, 0.99) / _percentile(floor, 0.99)
    return {
        "taps": len(taps),
        "p50_ms": round(statistics.median(taps), 3),
        "p99_ms": round(_percentile(taps, 0.99), 3),
        "floor_p50_ms": round(statistics.median(floor), 3),
        "floor_p99_ms": round(_percentile(floor, 0.99), 3),
        "p99_ratio_to_floor": round(ratio, 2),
        "goal": f"p99_ratio_to_floor <= {GOAL_RATIO}",
        "goal_met": ratio <= GOAL_RATIO,
        "disk": "file DB in a temporary directory under the current directory",
    }
