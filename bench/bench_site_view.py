"""``site_view``: what the roster loop pays for the site view, on a site with a long history.

The gateway's roster loop asks every few seconds whether anything was stored or decided
(:meth:`gateway.sequence.SiteDay.version`), and only then reads the site view again
(:meth:`gateway.sequence.SiteDay.day` with the workplace's roster): each worker's newest
attendance tap, decided or only stored. A site of 200 workers with 50,000 signed taps in the
inbox, all decided but each worker's last three (an NSSO outage: stored, not decided yet).

Figures: ``version_ms`` and ``day_ms`` (mean per call), ``count_version_ms`` (the count over
the workplace's decisions the roster loop used to run every round, for comparison), and
``day_entries`` (200: every worker, with their newest stored tap). The three timings are taken
interleaved over :data:`bench.rounds.ROUNDS` rounds (:mod:`bench.rounds`): medians, with their
spread, and ``count_ratio_to_version`` the ratio of the medians (how many times cheaper the
version is than the count it replaced).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import rounds
from siteclock.gateway.sequence import SiteDay
from tests.support.inbox import TerminalFeed, create_inbox, insert, make_events

WORKERS = 200
TAPS = 50_000
UNDECIDED_PER_WORKER = 3
SITE = "1Y1003SQ5VSSZ"
COUNT_VERSION = (
    "SELECT count(*), coalesce(max(decided_ns), 0) FROM worker_sequence WHERE workplace=?"
)


def _mean_ms(call: Callable[[], object], repeat: int = 50) -> float:
    call()  # warm the page cache
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - started) / repeat * 1000


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "gateway.db"
        create_inbox(db)
        badges = {f"nfc-a:{n:08X}": f"w-{n:03d}" for n in range(WORKERS)}
        feeds = [TerminalFeed(f"t-site-{n}", SITE) for n in range(4)]
        events = make_events(feeds, list(badges), TAPS)
        insert(db, events)
        day = SiteDay(db)
        decided = events[: TAPS - UNDECIDED_PER_WORKER * WORKERS]
        day.db.record_decisions(  # the relay's decisions, as SequenceCheck.commit writes them
            [(e.event.terminal_id, e.event.seq, SITE, badges[e.event.badge], e.event.wall_ns,
              str(e.event.kind), "in" if e.event.kind in ("in", "break_end") else "out", "",
              e.event.wall_ns) for e in decided],
        )  # fmt: skip
        entries = day.day(SITE, badges)
        reference = sqlite3.connect(db)  # the count a version could have been, own connection
        timings = rounds.interleaved({
            "version_ms": lambda: _mean_ms(day.version),
            "day_ms": lambda: _mean_ms(lambda: day.day(SITE, badges)),
            "count_version_ms": lambda: _mean_ms(
                lambda: reference.execute(COUNT_VERSION, (SITE,)).fetchone()
            ),
        })  # fmt: skip
        figures = {
            "workers": WORKERS,
            "stored_taps": TAPS,
            "decided_taps": len(decided),
            "rounds": len(timings["day_ms"]),
            **{k: v for name, ms in timings.items() for k, v in rounds.figure(name, ms, 3).items()},
            **rounds.ratio_of_medians(
                "count_ratio_to_version", timings["count_version_ms"], timings["version_ms"], 0
            ),
            "day_entries": len(entries),
            "day_entries_from_stored_taps": sum(
                1 for e in entries if e.wall_ns > decided[-1].event.wall_ns
            ),
        }
        reference.close()
        day.close()
        return figures
