"""``console``: server time of the employer's console on a big store.

A gateway database holding :data:`TERMINALS` terminals on :data:`SITES` worksites and
:data:`REGISTRATIONS` registrations (:data:`WORKERS` workers, four taps per working day: in,
break start, break end, out, over :data:`DAYS` working days), every one relayed (2 % refused
with remarks). The store is filled through the data layer in bulk (``store_events``,
``take_new_events``, ``set_registrations``), not through MQTT: the figure is the console's,
not the intake's. The measured worker's taps are really signed, on their own terminal (so the
export's chain links and signatures are checked for real); the other events carry a stand-in
body, which no measured page decodes.

Figures (server time per request, nearest-rank p95 over :data:`REQUESTS` requests each, taken
interleaved over :data:`bench.rounds.ROUNDS` rounds): ``evidence_export_p95_ms`` (one worker,
one month: built, verified and sealed as JSON), and - when the console app is present - the
terminals page and the registrations page filtered by worksite, day and state, in-process
through Flask's test client. ``p95_ms`` is the worst of them. Goal: p95_ms <= 300.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench import rounds
from siteclock import protocol as p
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.registry import Registry
from siteclock.gateway.site_time import day_start_ns
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer

TERMINALS = 10_000
SITES = 500
WORKERS = 5_000
DAYS = 50
TAPS_PER_DAY = (("in", 7 * 60), ("break_start", 12 * 60), ("break_end", 12 * 60 + 30),
                ("out", 16 * 60))  # fmt: skip
REGISTRATIONS = WORKERS * DAYS * len(TAPS_PER_DAY)
REQUESTS = 20
GOAL_P95_MS = 300
FIRST_DAY = date(2026, 9, 1)
MONTH = (date(2026, 10, 1), date(2026, 11, 1))  # the exported month
MEASURED = "w-00000"
CHUNK = 100_000
CLOCK = p.ClockState(True, 2000, "ntp")
STAND_IN_BODY = b"\xa0"  # an empty CBOR map: not an event; never decoded by a measured page


def site_ref(n: int) -> str:
    return f"WP{n:06d}SQ5VS"


def terminal_id(n: int) -> str:
    return f"t-{n:05d}"


def working_days() -> list[date]:
    days, day = [], FIRST_DAY
    while len(days) < DAYS:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def _enterprise() -> str:
    from siteclock.gateway.identifiers import enterprise_check_digits

    return "04031234" + enterprise_check_digits("04031234")


def _inss(n: int) -> str:
    from siteclock.gateway.identifiers import inss_check_digits

    first9 = f"850730{n % 1000:03d}"
    return first9 + inss_check_digits(first9)


class Seeder:
    """Fills one gateway database as a large employer's would be after a few months."""

    def __init__(self, path: Path) -> None:
        self.db = SQLiteGatewayDB(path)
        self.registry = Registry(self.db, path.parent / "inss.key")
        self.signer = Ed25519Signer.generate()  # the measured worker's terminal: t-00000
        self.seqs = [0] * TERMINALS
        self.prev = p.GENESIS_HASH

    def close(self) -> None:
        self.registry.close()
        self.db.close()

    def people_and_terminals(self) -> None:
        employer = _enterprise()
        with self.db.atomic():
            for s in range(SITES):
                self.registry.add_workplace(site_ref(s), latitude=50.8, longitude=4.3)
            for w in range(WORKERS):
                ref = f"w-{w:05d}"
                self.registry.add_worker(ref, f"Worker {w}", inss=_inss(w), employer=employer)
                self.registry.enrol_badge(f"nfc-a:{w:08X}", ref)
                self.registry.assign(ref, site_ref(w % SITES))
        terminals = TerminalRegistry(self.db)
        now = time.time_ns()
        with self.db.atomic():
            for t in range(TERMINALS):
                key = self.signer.public_key_bytes() if t == 0 else os.urandom(32)
                terminals.register(terminal_id(t), site_ref(t % SITES), public_key=key)
                # a heartbeat each (1 in 20 offline), as the terminals page shows them
                figures = {"queue_depth": t % 7, "oldest_unsent_age_s": t % 7 * 3.0,
                           "clock_synced": 1, "clock_maxerror_us": 2000, "reader": "ok",
                           "disk_free_mb": 900, "version": "0.1.0", "heartbeat_s": 30.0,
                           "alerts": "[]"}  # fmt: skip
                self.db.save_terminal_online(terminal_id(t), now, now + 40 * 10**9, figures)
                if t % 20 == 7:
                    self.db.save_terminal_offline(terminal_id(t), now, "connection lost")

    def _terminal_for(self, worker: int, tap: int) -> int:
        """The measured worker taps alone on t-00000; the others on their site's other
        terminals (site s has terminals s, s + SITES, s + 2 * SITES, ...)."""
        if worker == 0:
            return 0
        per_site = TERMINALS // SITES
        return (worker % SITES) + SITES * (1 + tap % (per_site - 1))

    def _rows(self) -> Iterator[tuple[Any, ...]]:
        now = time.time_ns()
        for day in working_days():
            start = day_start_ns(day)
            for w in range(WORKERS):
                badge, site = f"nfc-a:{w:08X}", site_ref(w % SITES)
                for i, (kind, minute) in enumerate(TAPS_PER_DAY):
                    t = self._terminal_for(w, i + w)
                    self.seqs[t] += 1
                    wall = start + (minute * 60 + w % 600) * 10**9
                    if t == 0:
                        yield self._signed_row(kind, badge, site, wall, now)
                        continue
                    yield (terminal_id(t), self.seqs[t], f"ev-{t}-{self.seqs[t]}", bytes(32),
                           STAND_IN_BODY, "ed25519", "stand-in", b"", site, kind, badge, wall,
                           "[]", now, p.COSE_SIGN1_ENVELOPE)  # fmt: skip

    def _signed_row(self, kind: str, badge: str, site: str, wall: int, now: int) -> tuple:
        from siteclock.gateway.store import inbox_row

        event = p.Event(terminal_id(0), site, self.seqs[0], self.prev, f"ev-0-{self.seqs[0]}",
                        p.Kind(kind), badge, wall, "boot", wall % 10**12, CLOCK)  # fmt: skip
        signed = p.sign_event(event, self.signer)
        self.prev = signed.digest
        return inbox_row(terminal_id(0), signed, event, now)

    def registrations(self) -> None:
        """Store the events a chunk at a time, each chunk then taken in by the relay's own
        operation and given its outcome (worker, employer, NSSO id and verdict)."""
        employer = json.dumps({"enterpriseNumber": _enterprise()})
        chunk: list[tuple[Any, ...]] = []
        for row in self._rows():
            chunk.append(row)
            if len(chunk) == CHUNK:
                self._relay(chunk, employer)
                chunk = []
        if chunk:
            self._relay(chunk, employer)
        self.db.index_inbox_by_badge()

    def _relay(self, rows: list[tuple[Any, ...]], employer: str) -> None:
        now = time.time_ns()
        self.db.store_events(rows)
        self.db.take_new_events(now, full=False)
        updates = []
        for terminal, seq, *_, workplace, kind, badge, _wall, _flags, _rx, _v in rows:
            refused = (int(terminal[2:]) + seq) % 50 == 0
            updates.append(((terminal, seq), {
                "state": "refused" if refused else "registered", "ciao_id": f"c-{terminal}-{seq}",
                "validity": "invalid" if refused else "valid",
                "remarks": json.dumps(["RELATED DIMONA NOT OK"] if refused else []),
                "worker_ref": f"w-{int(badge[6:], 16):05d}", "employer": employer,
                "workplace": workplace, "ciao_type": "in" if kind in ("in", "break_end") else "out",
                "updated_ns": now, "final_ns": now,
            }))  # fmt: skip
        self.db.set_registrations(updates)


PAGES = {
    "terminals_p95_ms": ("terminals.index", "/terminals/", {}),
    "registrations_p95_ms": ("registrations.index", "/registrations/",
                             {"worksite": site_ref(1), "day": "2026-10-14", "state": "registered"}),
    "evidence_export_p95_ms": ("evidence.export", "/evidence/export",
                               {"worker": MEASURED, "worksite": site_ref(0), "from": "2026-10-01",
                                "to": "2026-10-31"}),
}  # fmt: skip
"""Each measured page: its endpoint (measured only when the console has it), path and query."""
PASSWORD = "bench password 12345"


def _console_client(seeder: Seeder, tmp: Path) -> tuple[Any, set[str]]:
    """An administrator logged in to the console app over Flask's test client (HTTPS: the
    cookies are Secure), and the endpoints the app has."""
    from flask.testing import FlaskClient

    from siteclock.gateway.console import ConsoleConfig, create_app
    from siteclock.gateway.console.accounts import Accounts, Role
    from siteclock.keys import create

    Accounts(seeder.db).add("bench", PASSWORD, role=Role.ADMIN)
    key = tmp / "gateway-signing.key"
    create(key)
    app = create_app(seeder.db, ConsoleConfig(), inss_key_file=tmp / "inss.key",
                     extras={"signing_key_file": key})  # fmt: skip

    class HttpsClient(FlaskClient):
        def open(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("base_url", "https://localhost")
            return super().open(*args, **kwargs)

    app.test_client_class = HttpsClient
    client = app.test_client()
    form = client.get("/login").data.decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    form_data = {"username": "bench", "password": PASSWORD,
                 "csrf_token": token.group(1) if token else ""}  # fmt: skip
    answer = client.post("/login", data=form_data)
    if answer.status_code != 302:
        raise RuntimeError(f"bench login refused: {answer.status_code}")
    return client, {rule.endpoint for rule in app.url_map.iter_rules()}


def _page_call(client: Any, path: str, query: dict[str, str]) -> Callable[[], object]:
    def get() -> bytes:
        answer = client.get(path, query_string=query)
        if answer.status_code != 200:
            raise RuntimeError(f"{path} answered {answer.status_code}")
        return answer.data

    return get


def _p95_ms(call: Callable[[], object]) -> float:
    return rounds.percentile(rounds.times_ms(call, REQUESTS), 0.95)


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        seeder = Seeder(Path(tmp) / "gateway.db")
        started = time.perf_counter()
        seeder.people_and_terminals()
        seeder.registrations()
        seed_s = time.perf_counter() - started
        client, endpoints = _console_client(seeder, Path(tmp))
        calls = {
            name: _page_call(client, path, query)
            for name, (endpoint, path, query) in PAGES.items() if endpoint in endpoints
        }  # fmt: skip
        timings = rounds.interleaved({
            name: (lambda call=call: _p95_ms(call)) for name, call in calls.items()
        })  # fmt: skip
        export = json.loads(calls["evidence_export_p95_ms"]())["evidence"]
        if export["report"]["result"] != "intact" or not export["events"]:
            raise RuntimeError(f"the measured export is not intact: {export['report']}")
        listed = calls["registrations_p95_ms"]().count(b"<tr data-id=")
        figures: dict[str, Any] = {
            "terminals": TERMINALS,
            "registrations": seeder.db.count_events(),
            "seed_s": round(seed_s, 1),
            "requests_per_round": REQUESTS,
            "rounds": len(next(iter(timings.values()))),
            **{k: v for name, ms in timings.items() for k, v in rounds.figure(name, ms).items()},
            "not_measured": sorted(set(PAGES) - set(calls)),
            "evidence_events": len(export["events"]),
            "registrations_listed": listed,
        }
        figures["p95_ms"] = round(max(rounds.median(ms) for ms in timings.values()), 1)
        figures["goal"] = f"p95_ms <= {GOAL_P95_MS}"
        figures["goal_met"] = figures["p95_ms"] <= GOAL_P95_MS
        seeder.close()
        return figures
