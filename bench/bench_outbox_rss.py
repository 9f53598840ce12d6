"""Memory of a running terminal whose outbox holds a huge backlog (weeks offline).

Builds an outbox with 10,000 and then 1,000,000 unsent, signed, chained events (bulk inserts in
big transactions, ``synchronous=OFF`` while building only), starts the real ``siteclock
terminal`` process on it with the simulated reader, taps a few badges through the socket, and
reads the process's resident set size (``VmRSS``, and the peak ``VmHWM``) from ``/proc``.
Nothing in the terminal may scale with the backlog: the two figures should be the same.

Figures: ``rss_mb_10k``, ``rss_mb`` (at 1,000,000), ``hwm_mb`` (peak at 1,000,000),
``growth_mb``, ``db_mb``, ``build_s``; and, at 1,000,000, the time to open the outbox
(``quick_check``), one ``stats()`` (the heartbeat) and one 200-event ``unsent()`` page.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from siteclock.hw.sim import send_taps
from siteclock.keys import Ed25519Signer
from siteclock.protocol import ClockState, Event, Kind
from siteclock.terminal import identity
from siteclock.terminal.outbox import Outbox

SMALL, LARGE = 10_000, 1_000_000
GOAL_MB = 60.0
TERMINAL_ID, WORKPLACE = "t-bench", "ABCDEFGH12345"
BADGES = [f"nfc-a:04{i:06X}" for i in range(300)]
KINDS = (Kind.IN, Kind.OUT)


_worker_signer: Ed25519Signer | None = None


def _init_worker(private: bytes) -> None:
    global _worker_signer
    _worker_signer = Ed25519Signer.from_private_bytes(private)


def _sign_many(bodies: list[bytes]) -> list[bytes]:
    assert _worker_signer is not None
    return [_worker_signer.sign(b) for b in bodies]


def grow(path: Path, signer: Ed25519Signer, target: int) -> None:
    """Append signed, chained, unsent events until the outbox holds ``target`` of them.

    Bodies are built in order (each links to the previous digest); the signatures, the slow
    part, are made by a process pool: the chain does not depend on them.
    """
    Outbox(path, signer=signer, terminal_id=TERMINAL_ID, workplace=WORKPLACE).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")  # building a fixture, not recording taps
    db.execute("PRAGMA cache_size = -262144")
    # The counting trigger costs one UPDATE per row; the counters are recomputed at the end
    # and the trigger comes back when the Outbox schema is applied again below.
    db.execute("DROP TRIGGER events_count_insert")
    seq, prev = db.execute("SELECT last_seq, last_digest FROM head").fetchone()
    prev = bytes(prev)
    clock = ClockState(synced=True, maxerror_us=20_000, source="adjtimex")
    wall = time.time_ns() - 30 * 86400 * 10**9
    workers = max(1, os.cpu_count() or 1)
    with multiprocessing.Pool(workers, _init_worker, (signer.private_bytes(),)) as pool:
        while seq < target:
            events, bodies, digests = [], [], []
            for _ in range(min(50_000, target - seq)):
                seq += 1
                badge = BADGES[seq % len(BADGES)]
                event = Event(TERMINAL_ID, WORKPLACE, seq, prev, uuid.uuid4().hex,
                              KINDS[(seq // len(BADGES)) % 2], badge, wall + seq * 10**9,
                              "bench-boot", seq * 10**9, clock)  # fmt: skip
                body = event.canonical_bytes()
                prev = hashlib.sha256(body).digest()
                events.append(event)
                bodies.append(body)
                digests.append(prev)
            step = -(-len(bodies) // (workers * 4))
            chunks = [bodies[i : i + step] for i in range(0, len(bodies), step)]
            sigs = [sig for chunk in pool.map(_sign_many, chunks) for sig in chunk]
            rows = [
                (e.seq, e.event_id, e.badge, str(e.kind), body, signer.alg, signer.kid, sig,
                 digest, e.wall_ns)
                for e, body, sig, digest in zip(events, bodies, sigs, digests, strict=True)
            ]  # fmt: skip
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO events (seq, event_id, badge, kind, body, alg, kid, sig, digest,"
                " wall_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("UPDATE head SET last_seq = ?, last_digest = ?", (seq, prev))
            db.execute(  # each tap's worker state, as capture keeps it (unknown badges)
                "INSERT OR REPLACE INTO worker_state (workplace, worker, kind, wall_ns, seq) "
                "SELECT ?, 'badge:' || badge, kind, wall_ns, seq FROM events WHERE seq > ? "
                "ORDER BY seq",
                (WORKPLACE, seq - len(rows)),
            )
            db.execute("COMMIT")
    db.execute(
        "UPDATE head SET total = (SELECT count(*) FROM events), "
        "pending = (SELECT count(*) FROM events WHERE state = 'pending')"
    )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    Outbox(path, signer=signer, terminal_id=TERMINAL_ID, workplace=WORKPLACE).close()


def _status(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def measure(root: Path) -> dict[str, float]:
    """Run the real terminal on ``root/data``, tap, and read its memory."""
    sock, journal = root / "t.sock", root / "journal.jsonl"
    journal.unlink(missing_ok=True)
    cfg = root / "terminal.toml"
    cfg.write_text(
        f'terminal_id = "{TERMINAL_ID}"\nworkplace = "{WORKPLACE}"\ndata_dir = "{root / "data"}"\n'
        f'[reader]\nspec = "sim:{sock}"\n'
        f'[feedback]\njournal = "{journal}"\npin_factory = "mock"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "siteclock.cli", "terminal", "--config", str(cfg),
         "--log-level", "WARNING"],
        env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the terminal did not start")
            time.sleep(0.05)
        send_taps(str(sock), BADGES[:20])
        while len(journal.read_text().splitlines()) < 20 if journal.exists() else True:
            time.sleep(0.05)
        lines = [json.loads(x) for x in journal.read_text().splitlines()]
        if any(x["seq"] is None for x in lines):
            raise RuntimeError(f"a tap was not recorded: {lines}")
        time.sleep(1.0)
        return _status(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-rss-", dir=Path.cwd()) as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        signer = identity.load_or_create(root / "data" / "terminal.key")
        db = root / "data" / "outbox.db"
        started = time.monotonic()
        grow(db, signer, SMALL)
        small = measure(root)
        grow(db, signer, LARGE)
        build_s = time.monotonic() - started
        large = measure(root)
        db_mb = db.stat().st_size / 2**20
        opened = time.monotonic()  # quick_check at open reads the whole file
        box = Outbox(db, signer=signer, terminal_id=TERMINAL_ID, workplace=WORKPLACE)
        open_s = time.monotonic() - opened
        stats_started = time.perf_counter()
        for _ in range(100):
            box.stats()
        stats_ms = (time.perf_counter() - stats_started) * 10  # per call, in ms
        unsent_started = time.perf_counter()
        batch = box.unsent(after_seq=LARGE // 2, limit=200)
        unsent_ms = (time.perf_counter() - unsent_started) * 1000
        assert len(batch) == 200
        box.close()
    return {
        "events_small": SMALL,
        "events": LARGE,
        "rss_mb_10k": round(small["VmRSS"], 1),
        "rss_mb": round(large["VmRSS"], 1),
        "hwm_mb": round(large["VmHWM"], 1),
        "growth_mb": round(large["VmRSS"] - small["VmRSS"], 1),
        "db_mb": round(db_mb, 1),
        "open_s_1m": round(open_s, 2),
        "stats_ms_1m": round(stats_ms, 3),
        "unsent_200_ms_1m": round(unsent_ms, 2),
        "build_s": round(build_s, 1),
        "goal": f"rss_mb <= {GOAL_MB} with {LARGE:,} unsent events",
        "goal_met": large["VmRSS"] <= GOAL_MB,
    }
