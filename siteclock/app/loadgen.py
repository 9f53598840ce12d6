"""``siteclock loadgen``: thousands of simulated terminals in one asyncio loop, as the gateway
sees real ones.

Each simulated terminal has its own identity: an Ed25519 key registered in the gateway's
terminal registry and its own broker password (the broker's ``credentials/<id>.password``, as
``siteclock broker-config --terminal`` writes them), so it logs in on the terminals' listener
under the per-terminal ACL. Its events are real protocol events (:mod:`siteclock.protocol`):
a sequence number, the hash chain, a signature, and they are kept *pending* until the
gateway's ``Ack(stored=...)`` names them, then resent every ``resend_after_s`` as a real
terminal's outbox would be. Heartbeats go to the retained status topic.

What it plays (:class:`LoadGen`): connecting every terminal (:meth:`LoadGen.connect_all`),
a morning peak in which every worker taps once spread over ``peak_s`` (:meth:`LoadGen.peak`),
and an outage: terminals disconnected, a backlog taken while away, then all reconnecting at
once and draining it (:meth:`LoadGen.disconnect_all`, :meth:`LoadGen.queue_backlog`). It
measures tap-to-ack latency per event, the time until the pending set is empty, and counts
acks for events it never sent or acked twice (``stray_acks``).

Example (a site's broker directory ``broker/``, gateway database ``gateway.db``)::

    siteclock loadgen prepare --dir lg --count 2000 --workplace 1Y1003SQ5VSSZ --db gateway.db
    siteclock broker-config --out broker --terminal ...   # ids from lg/terminals.txt
    siteclock loadgen run --dir lg --credentials broker/credentials --ca broker/pki/ca.pem \\
        --port 8883 --peak-s 300 --heartbeat-s 30
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import contextlib
import json
import ssl
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siteclock.app.loadgen_mqtt import MqttConnection, MqttError
from siteclock.files import write_secret
from siteclock.keys import Ed25519Signer
from siteclock.protocol import (
    GENESIS_HASH,
    Ack,
    Channel,
    ClockState,
    Event,
    Kind,
    ProtocolError,
    encode_batch,
    encode_status,
    sign_event,
    topic,
)

TLS_READ_BUFFER = 32 * 1024
"""asyncio gives every TLS connection a 256 KiB read buffer (``SSLProtocol.max_size``): 5 GB
for 20,000 simulated terminals. A TLS record is at most 16 KiB, and a terminal receives only
acks and rosters, so 32 KiB reads lose nothing."""
BATCH_EVENTS = 50
"""Events per message when a terminal (re)sends its backlog, as a real terminal batches."""
RESEND_MAX_S = 120.0
CLOCK = ClockState(synced=True, maxerror_us=2_000, source="loadgen")
BOOT_ID = "loadgen-" + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class Identity:
    terminal_id: str
    private_key: bytes
    badge: str


@dataclass
class SimTerminal:
    """One simulated terminal: its chain state, its pending events (seq -> (payload of the
    one signed event, monotonic time of the tap)) and its connection."""

    identity: Identity
    workplace: str
    password: str
    signer: Ed25519Signer
    seq: int = 0
    prev: bytes = GENESIS_HASH
    next_kind: Kind = Kind.IN
    pending: dict[int, tuple[Any, float]] = field(default_factory=dict)
    last_sent: float = 0.0
    resend_wait: float = 0.0
    """Seconds without an ack before resending; doubles at each resend (up to
    :data:`RESEND_MAX_S`), so a backlog queued at a busy gateway is not sent again and again."""
    conn: MqttConnection | None = None

    @property
    def terminal_id(self) -> str:
        return self.identity.terminal_id

    def take_tap(self, now: float) -> tuple[int, Any]:
        """Record one signed tap (in, out, in...) in the pending set; returns (seq, signed)."""
        self.seq += 1
        wall = time.time_ns()
        event = Event(
            terminal_id=self.terminal_id,
            workplace=self.workplace,
            seq=self.seq,
            prev_hash=self.prev,
            event_id=uuid.uuid4().hex,
            kind=self.next_kind,
            badge=self.identity.badge,
            wall_ns=wall,
            boot_id=BOOT_ID,
            boot_ns=time.monotonic_ns(),
            clock=CLOCK,
        )
        signed = sign_event(event, self.signer)
        self.prev = signed.digest
        self.next_kind = Kind.OUT if self.next_kind is Kind.IN else Kind.IN
        self.pending[self.seq] = (signed, now)
        return self.seq, signed


@dataclass
class Figures:
    """What one run measured. Latencies are tap-to-stored-ack, in milliseconds."""

    latencies_ms: list[float] = field(default_factory=list)
    acked: int = 0
    stray_acks: int = 0
    connect_failures: int = 0
    resent_messages: int = 0
    heartbeats: int = 0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "acked": self.acked,
            "stray_acks": self.stray_acks,
            "connect_failures": self.connect_failures,
            "resent_messages": self.resent_messages,
            "p50_ms": round(statistics.median(lat), 1) if lat else 0.0,
            "p99_ms": round(self.percentile(99), 1),
            "max_ms": round(max(lat), 1) if lat else 0.0,
        }


class LoadGen:
    """Simulated terminals on one broker listener. All methods run in one event loop."""

    def __init__(
        self,
        terminals: Sequence[SimTerminal],
        host: str,
        port: int,
        *,
        ca_file: Path | None = None,
        resend_after_s: float = 5.0,
        keepalive_s: int = 120,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.terminals = list(terminals)
        self.host, self.port = host, port
        self.ssl = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER  # see TLS_READ_BUFFER
        self.resend_after_s = resend_after_s
        self.keepalive_s = keepalive_s
        self.clock = clock
        self.figures = Figures()
        self.recording = True
        """Whether acked events add to :attr:`Figures.latencies_ms` (off during the drain)."""
        self._settled = asyncio.Event()
        self._resender: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ connections

    async def connect_all(self, concurrency: int = 200) -> float:
        """Connect (and subscribe) every terminal not connected, ``concurrency`` at a time,
        retrying refused or failed connections; returns the seconds it took."""
        started = self.clock()
        gate = asyncio.Semaphore(concurrency)

        async def one(t: SimTerminal) -> None:
            async with gate:
                while t.conn is None or t.conn.closed.is_set():
                    try:
                        await self._connect(t)
                    except (MqttError, OSError, TimeoutError):
                        self.figures.connect_failures += 1
                        await asyncio.sleep(0.5)

        await asyncio.gather(*(one(t) for t in self.terminals))
        if self._resender is None:
            self._resender = asyncio.create_task(self._resend_loop())
        return self.clock() - started

    async def _connect(self, t: SimTerminal) -> None:
        conn = await MqttConnection.open(
            self.host,
            self.port,
            t.terminal_id,
            t.password,
            ssl=self.ssl,
            keepalive_s=self.keepalive_s,
            on_publish=lambda _topic, payload, t=t: self._on_ack(t, payload),
        )
        await conn.subscribe(topic(t.terminal_id, Channel.ACK))
        t.conn = conn
        self._send_pending(t)

    async def disconnect_all(self) -> None:
        for t in self.terminals:
            if t.conn is not None:
                await t.conn.close()
                t.conn = None

    @property
    def connected(self) -> int:
        return sum(1 for t in self.terminals if t.conn is not None and not t.conn.closed.is_set())

    # ------------------------------------------------------------------ traffic

    def tap(self, t: SimTerminal) -> None:
        """One tap: signed, pending, and sent at once when connected."""
        _seq, signed = t.take_tap(self.clock())
        if t.conn is not None and not t.conn.closed.is_set():
            t.conn.publish(topic(t.terminal_id, Channel.EVENTS), encode_batch([signed]))
            t.last_sent = self.clock()

    def queue_backlog(self, per_terminal: int) -> None:
        """Taps taken while offline (the terminal is disconnected): they wait in the pending
        set and go out in batches when it reconnects. Not recorded as latencies."""
        for t in self.terminals:
            for _ in range(per_terminal):
                t.take_tap(self.clock())

    def heartbeat(self, t: SimTerminal) -> None:
        if t.conn is None or t.conn.closed.is_set():
            return
        status = {
            "state": "online", "queue_depth": len(t.pending), "last_seq": t.seq,
            "clock": CLOCK.to_map(), "reader": "ok", "version": "loadgen",
            "boot_id": BOOT_ID, "wall_ns": time.time_ns(), "alerts": [],
        }  # fmt: skip
        t.conn.publish(topic(t.terminal_id, Channel.STATUS), encode_status(status), retain=True)
        self.figures.heartbeats += 1

    async def heartbeats(self, every_s: float, stop: asyncio.Event) -> None:
        """Each terminal heartbeats every ``every_s``, spread evenly over the period.

        Scheduled against the clock, as :meth:`peak` is: waiting ``step`` after each heartbeat
        stretched the period by the loop's own overhead (43 s instead of 30 at 20,000
        terminals, past the gateway's 40 s deadline, so every terminal flapped offline and
        back in every period)."""
        step = every_s / max(1, len(self.terminals))
        start, beat = self.clock(), 0
        while not stop.is_set():
            for t in self.terminals:
                self.heartbeat(t)
                beat += 1
                delay = max(0.0, start + beat * step - self.clock())  # 0: behind, catch up
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    return
                except TimeoutError:
                    pass

    async def peak(self, over_s: float, taps_per_terminal: int = 1) -> None:
        """The morning peak: every terminal taps ``taps_per_terminal`` times, the taps spread
        evenly over ``over_s`` seconds (in shuffled terminal order each round)."""
        order = [t for _ in range(taps_per_terminal) for t in self.terminals]
        step = over_s / max(1, len(order))
        start = self.clock()
        for i, t in enumerate(order):
            delay = start + i * step - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            self.tap(t)

    def _on_ack(self, t: SimTerminal, payload: bytes) -> None:
        try:
            ack = Ack.decode(payload)
        except ProtocolError:
            return
        now = self.clock()
        for seq in ack.stored:
            held = t.pending.pop(seq, None)
            if held is None:
                self.figures.stray_acks += 1  # acked twice or never sent: counted
                continue
            self.figures.acked += 1
            t.last_sent, t.resend_wait = now, self.resend_after_s  # progress: patience again
            if self.recording:
                self.figures.latencies_ms.append((now - held[1]) * 1000)
        if not t.pending and self.pending == 0:
            self._settled.set()

    def _send_pending(self, t: SimTerminal) -> None:
        if not t.pending or t.conn is None or t.conn.closed.is_set():
            return
        items = [signed for signed, _ in t.pending.values()]
        for i in range(0, len(items), BATCH_EVENTS):
            t.conn.publish(
                topic(t.terminal_id, Channel.EVENTS), encode_batch(items[i : i + BATCH_EVENTS])
            )
            self.figures.resent_messages += 1
        t.last_sent = self.clock()

    async def _resend_loop(self) -> None:
        """Resend a terminal's pending events when none was acked for ``resend_after_s``
        (then twice as long after each resend without progress)."""
        while True:
            await asyncio.sleep(min(1.0, self.resend_after_s / 2))
            now = self.clock()
            for t in self.terminals:
                if t.pending and now - t.last_sent >= (t.resend_wait or self.resend_after_s):
                    self._send_pending(t)
                    t.resend_wait = min(RESEND_MAX_S, 2 * (t.resend_wait or self.resend_after_s))

    @property
    def pending(self) -> int:
        return sum(len(t.pending) for t in self.terminals)

    async def settled(self, timeout: float) -> bool:
        """Wait until every terminal's pending set is empty; False after ``timeout``."""
        deadline = self.clock() + timeout
        while self.pending:
            self._settled.clear()
            left = deadline - self.clock()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), min(left, 1.0))
        return True

    async def close(self) -> None:
        if self._resender is not None:
            self._resender.cancel()
            self._resender = None
        await self.disconnect_all()


# ---------------------------------------------------------------------- identities


def make_identities(count: int, prefix: str = "lg") -> list[Identity]:
    """``count`` fresh terminal identities (``lg-00001``...), one worker badge each."""
    return [
        Identity(
            f"{prefix}-{i:05d}",
            Ed25519Signer.generate().private_bytes(),
            f"nfc-a:{0x10000000 + i:08X}",
        )
        for i in range(1, count + 1)
    ]


def save_identities(path: Path, identities: Iterable[Identity], workplace: str) -> None:
    """The identities with their private keys: a secret file (0600)."""
    data = {
        "workplace": workplace,
        "terminals": [
            {"id": i.terminal_id, "key": i.private_key.hex(), "badge": i.badge} for i in identities
        ],
    }
    write_secret(path, json.dumps(data).encode())


def load_identities(path: Path) -> tuple[str, list[Identity]]:
    data = json.loads(path.read_text())
    return data["workplace"], [
        Identity(t["id"], bytes.fromhex(t["key"]), t["badge"]) for t in data["terminals"]
    ]


def sim_terminals(
    identities: Iterable[Identity], workplace: str, credentials: Path
) -> list[SimTerminal]:
    """Simulated terminals with their broker passwords from ``credentials/<id>.password``."""
    return [
        SimTerminal(
            i,
            workplace,
            (credentials / f"{i.terminal_id}.password").read_text().strip(),
            Ed25519Signer.from_private_bytes(i.private_key),
        )
        for i in identities
    ]


def register(identities: Iterable[Identity], workplace: str, store: Path | str) -> None:
    """Register each identity's public key in the gateway database, in one transaction."""
    from siteclock.gateway.terminals import TerminalRegistry  # the gateway's side only here

    registry = TerminalRegistry(store)
    try:
        with registry.db.atomic():
            for i in identities:
                key = Ed25519Signer.from_private_bytes(i.private_key).public_key_bytes()
                registry.register(i.terminal_id, workplace, public_key=key)
    finally:
        registry.close()


# ---------------------------------------------------------------------- command line


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workplace, identities = load_identities(args.dir / "terminals.json")
    terminals = sim_terminals(identities, workplace, args.credentials)
    gen = LoadGen(terminals, args.host, args.port, ca_file=args.ca, resend_after_s=args.resend_s)
    stop = asyncio.Event()
    report: dict[str, Any] = {"terminals": len(terminals)}
    try:
        report["connect_s"] = round(await gen.connect_all(), 1)
        beats = asyncio.create_task(gen.heartbeats(args.heartbeat_s, stop))
        await gen.peak(args.peak_s)
        report["settled"] = await gen.settled(args.settle_s)
        stop.set()
        await beats
        report |= gen.figures.summary()
        report["pending"] = gen.pending
    finally:
        await gen.close()
    return report


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="siteclock loadgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    prep = sub.add_parser("prepare", help="make identities and register them in the gateway db")
    prep.add_argument("--dir", type=Path, required=True)
    prep.add_argument("--count", type=int, required=True)
    prep.add_argument("--workplace", required=True, help="Declaration of Works reference")
    prep.add_argument("--db", required=True, help="gateway database: a path or a URL")
    go = sub.add_parser("run", help="connect, heartbeat, play the morning peak, report")
    go.add_argument("--dir", type=Path, required=True)
    go.add_argument(
        "--credentials",
        type=Path,
        required=True,
        help="the broker directory's credentials/ (one <id>.password each)",
    )
    go.add_argument("--host", default="127.0.0.1")
    go.add_argument("--port", type=int, default=8883)
    go.add_argument("--ca", type=Path, help="broker CA certificate (TLS); none: plain TCP")
    go.add_argument("--peak-s", type=float, default=300.0)
    go.add_argument("--heartbeat-s", type=float, default=30.0)
    go.add_argument("--resend-s", type=float, default=5.0)
    go.add_argument("--settle-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.action == "prepare":
        identities = make_identities(args.count)
        args.dir.mkdir(parents=True, exist_ok=True)
        save_identities(args.dir / "terminals.json", identities, args.workplace)
        (args.dir / "terminals.txt").write_text("".join(f"{i.terminal_id}\n" for i in identities))
        register(identities, args.workplace, args.db)
        print(
            f"{args.count} terminals in {args.dir}/terminals.json; give the broker "
            f"{args.dir}/terminals.txt (broker-config --terminal each)"
        )
        return 0
    try:
        report = asyncio.run(run(args))
    except (OSError, MqttError, KeyError, ValueError) as exc:
        print(f"siteclock loadgen: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0 if report.get("settled") else 1
