"""``make soak``: a long run of random faults across terminals, broker, gateway and simulator,
then a history check and the resources over time.

Not part of ``make test`` nor ``make bench``: it runs ``SOAK_SECONDS`` (default 3600) of faults,
then drains. Three network namespaces, built here and removed whatever happens: the site
(terminal processes), the server (Mosquitto with the project's config, the gateway process) and
the NSSO (the CIaO simulator), joined by two impaired links (:mod:`tests.support.netns`: netem
when the kernel has it, a userspace forwarder otherwise). Faults, one at a time, at random
(seeded by ``SOAK_SEED``): a terminal killed (SIGKILL) and restarted on its outbox, the broker
killed and restarted (it loses every session), the gateway killed and restarted, loss, delay,
jitter, reordering and duplication on either link, either link down for a while, and a CIaO
outage (503 with Retry-After).

Then taps stop, every fault is lifted, and the soak waits until every outbox has drained and
the relay has nothing left. The history checker compares every event the terminals saved (read
back from their outboxes, the system of record) with the simulator's own record: ``lost``
(saved, never registered), ``duplicated`` (registered more than once), ``unexpected``
(registered, never saved) and ``late`` (tap to NSSO verdict longer than ``late_s``).

Every ``sample_s`` it records each process's RSS and open file descriptors, the WAL sizes, the
terminals' backlog (depth, age of the oldest unsent event): ``bench/results/soak.json`` holds
the figures and the series, and ``soak_*.png`` beside it plot them (matplotlib, Agg backend).
Power cuts (a terminal's outbox on the power-loss filesystem of ``tests/support/powerfs.py``)
join the faults when FUSE is available; each terminal writes what it told its workers was saved
to a witness file off that disk, and ``saved_lost`` and ``seq_reused`` compare it with the
outbox. With FUSE, a terminal's disk also fills up or turns read-only for a while (its taps
are refused, not lost). A clock jump sends a terminal's wall clock 2 minutes to 2 hours back or
forward until NTP puts it right: its taps are flagged ``clock_unsynced`` and the gateway dates
them from a sync point of the boot; the checker expects each at its true time. Each worker taps
at one terminal only, so ``type_changed`` (an ``in`` sent as ``out`` or the reverse) must be 0
too.

    sudo make soak                             # an hour
    SOAK_SECONDS=120 make soak                 # two minutes
    SOAK_FAULTS=gateway_kill make soak         # only these kinds of fault
    SOAK_KEEP=/tmp/soak-site make soak         # keep the site's files (databases, logs)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.soak_terminal import WORKPLACE
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.registry import Registry
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Flag
from siteclock.terminal.outbox import Outbox
from tests.support.ciao import CLIENT_ID, populate, rsa_pair, write_private_key
from tests.support.inbox import create_inbox
from tests.support.mosquitto import MosquittoBroker, terminal_config, write_gateway_toml
from tests.support.netns import Link, Netns, impaired_link, unavailable
from tests.support.powerfs import MODES, PowerFS, fuse_available

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TERMINALS = ["t-soak1", "t-soak2", "t-soak3"]
WORKERS_EACH = 12
TAP_EVERY_S = 0.25
LATE_S = 120.0
DRAIN_S = 600.0
FAULTS = (
    "terminal_kill", "broker_restart", "gateway_kill", "uplink_netem", "relay_netem",
    "uplink_down", "relay_down", "ciao_outage", "clock_jump",
)  # fmt: skip
POWER_CUT = "power_cut"
"""A terminal's power goes (SIGKILL, then the power-loss filesystem under its outbox keeps only
what was synced, ``drop``, ``torn`` or ``random``) and comes back: drawn as often as each other
fault when FUSE is available."""
DISK_FAULTS = ("disk_full", "disk_readonly")
"""A terminal's disk fills up (the filesystem's capacity set to what it holds) or turns
read-only, for a while: on the power-loss filesystem, so only when FUSE is available."""
JUMP_S = (120.0, 7200.0)
"""How far a clock jump sends a terminal's wall clock, back or forward (seconds)."""


# --------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class Tap:
    """A saved event as the NSSO should see it: whose (INSS), ``in``/``out`` and when (s)."""

    terminal: str
    seq: int
    ssin: str
    type: str
    wall_s: float


def true_wall_ns(event: Any, boot_offset_ns: int) -> int:
    """When a saved tap really happened. A tap taken during a clock jump carries a wrong stamp
    (flagged ``clock_unsynced``); its boot-clock reading is right, and the machine's real clock
    never moves in the soak, so its boot reading plus the machine's wall-minus-boot offset
    (``boot_offset_ns``) is the instant the gateway's correction from a sync point gives."""
    if Flag.CLOCK_UNSYNCED not in event.flags:
        return int(event.wall_ns)
    return int(event.boot_ns) + boot_offset_ns


def _key(ssin: str, wall_s: float) -> tuple[str, int]:
    return ssin, int(wall_s)


def _ciao_type(kind: str) -> str:
    """The CIaO type a terminal kind is sent as: a break starts with ``out``, ends with ``in``."""
    return {"break_start": "out", "break_end": "in"}.get(kind.lower(), kind.lower())


def check_history(
    taps: list[Tap], registrations: list[dict[str, Any]], *, late_s: float = LATE_S
) -> dict[str, Any]:
    """Lost, duplicated, unexpected and late, from the saved taps and the simulator's record.

    A registration is ``{"ssin", "type", "registrationDate", "validate_at"}`` (``validate_at``:
    wall seconds of the NSSO's verdict). Taps are matched on INSS and second (a worker's taps
    are seconds apart); ``type_changed`` counts matches whose ``in``/``out`` differ, which the
    gateway does on purpose when a worker's sequence across terminals calls for it.
    ``duplicated_same_type`` counts only repeats that are the same declaration (type too).
    """
    registered: Counter[tuple[str, int]] = Counter()
    declarations: Counter[tuple[str, int, str]] = Counter()
    first: dict[tuple[str, int], dict[str, Any]] = {}
    for r in registrations:
        when = dt.datetime.fromisoformat(r["registrationDate"]).timestamp()
        key = _key(r["ssin"], when)
        registered[key] += 1
        declarations[(*key, r["type"].lower())] += 1
        first.setdefault(key, r)
    saved = {_key(t.ssin, t.wall_s): t for t in taps}
    matched = [(t, first[k]) for k, t in saved.items() if k in first]
    waits = sorted(r["validate_at"] - t.wall_s for t, r in matched)
    return {
        "taps": len(taps),
        "registered": len(matched),
        "lost": len(saved) - len(matched),
        "duplicated": sum(n - 1 for n in registered.values() if n > 1),
        "duplicated_same_type": sum(n - 1 for n in declarations.values() if n > 1),
        "unexpected": sum(n for k, n in registered.items() if k not in saved),
        "type_changed": sum(1 for t, r in matched if r["type"].lower() != _ciao_type(t.type)),
        "late": sum(1 for w in waits if w > late_s),
        "late_s": late_s,
        "p50_tap_to_verdict_s": round(_percentile(waits, 0.50), 2),
        "p99_tap_to_verdict_s": round(_percentile(waits, 0.99), 2),
    }


def check_saved(
    witnessed: dict[str, list[tuple[int, str]]], held: dict[str, list[tuple[int, str]]]
) -> dict[str, int]:
    """What each terminal told its workers was saved against what its outbox holds at the end:
    ``saved_lost`` (a saved tap missing) and ``seq_reused`` (its seq now holds another event)."""
    lost = reused = 0
    for tid, saved in witnessed.items():
        by_seq = dict(held.get(tid, []))
        for seq, event_id in saved:
            if by_seq.get(seq) == event_id:
                continue
            if seq in by_seq:
                reused += 1
            else:
                lost += 1
    return {"saved_lost": lost, "seq_reused": reused}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


# --------------------------------------------------------------------------- the site


@dataclass
class Samples:
    """Resources over time: one list per series, with the seconds since start."""

    started: float = field(default_factory=time.monotonic)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.series.setdefault(name, []).append((round(time.monotonic() - self.started, 1), value))


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _size_mb(path: Path) -> float:
    try:
        return path.stat().st_size / 2**20
    except OSError:
        return 0.0


class Site:
    """Namespaces, links, broker, gateway, terminals and simulator of one soak."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.seed = seed
        self.stack = contextlib.ExitStack()
        self.samples = Samples()
        self.faults: Counter[str] = Counter()
        self.terminals: dict[str, subprocess.Popen[bytes]] = {}
        self.gateway: subprocess.Popen[bytes] | None = None
        self.disks: dict[str, PowerFS] = {}
        """Each terminal's data directory on a power-loss filesystem, when FUSE is available."""
        self.kinds = FAULTS + ((POWER_CUT, *DISK_FAULTS) if fuse_available() else ())
        self.only = tuple(k for k in os.environ.get("SOAK_FAULTS", "").split(",") if k)
        """``SOAK_FAULTS=gateway_kill,power_cut``: only these kinds (to chase one finding)."""
        self._sampling = threading.Event()

    # ------------------------------------------------------------------ building

    def __enter__(self) -> Site:
        try:
            self._build()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._sampling.set()
        for proc in [*self.terminals.values(), self.gateway]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for disk in self.disks.values():
            disk.stop()
        self.stack.close()

    def _build(self) -> None:
        stack, root = self.stack, self.root
        self.site, self.server = stack.enter_context(Netns.pair("soak"))
        self.nsso = Netns("soakN")
        stack.callback(self.nsso.delete)
        self.uplink: Link = stack.enter_context(
            impaired_link(self.site, self.server, subnet=1, device="imp0")
        )
        self.relay_link: Link = stack.enter_context(
            impaired_link(self.server, self.nsso, subnet=2, device="imp1")
        )
        with self.nsso.entered():
            self.sim = SimServer(
                host=self.relay_link.right_ip, validation_delay_s=0.5, seed=self.seed,
                clock=time.time,
            )  # fmt: skip
        self.sim.register_client(CLIENT_ID, rsa_pair()[1])
        self.sim.start()
        stack.callback(self.sim.stop)
        self.broker = MosquittoBroker(root / "broker", terminals=TERMINALS,
                                      host=self.uplink.right_ip)  # fmt: skip
        with self.server.entered():
            self.broker.start()
        stack.callback(self.broker.stop)
        self._gateway_db()
        self.start_gateway()
        for i, tid in enumerate(TERMINALS):
            self.badges[tid] = [p.badge for p in self.people][
                i * WORKERS_EACH : (i + 1) * WORKERS_EACH
            ]
            if POWER_CUT in self.kinds:
                self.disks[tid] = PowerFS(root / f"{tid}.mnt", root / f"{tid}.img").start()
            self.start_terminal(tid)
        threading.Thread(target=self._sample, name="soak-sampler", daemon=True).start()

    def _gateway_db(self) -> None:
        root = self.root
        self.db = root / "gateway.db"
        create_inbox(self.db)
        registry = Registry(self.db, root / "inss.key")
        self.people = populate(registry, WORKERS_EACH * len(TERMINALS), workplace=WORKPLACE)
        registry.close()
        terminals = TerminalRegistry(self.db)
        self.signers = {tid: Ed25519Signer.generate() for tid in TERMINALS}
        for tid, signer in self.signers.items():
            terminals.register(tid, WORKPLACE, public_key=signer.public_key_bytes())
            (root / f"{tid}.key").write_bytes(signer.private_bytes())
        terminals.close()
        self.badges: dict[str, list[str]] = {}
        ciao_key = write_private_key(root / "ciao.pem", rsa_pair()[0])
        self.gateway_toml = write_gateway_toml(root, self.broker, "siteclock_gateway-soak",
                                               keepalive_s=5)  # fmt: skip
        with self.gateway_toml.open("a") as toml:  # then the relay to the simulator
            toml.write(
                "[ciao]\n"
                'environment = "local-sim"\n'
                f'base_url = "{self.sim.url}"\n'
                f'client_id = "{CLIENT_ID}"\n'
                f'private_key = "{ciao_key}"\n'
                "[relay]\n"
                "idle_s = 0.1\npoll_interval_s = 0.5\nambiguous_settle_s = 1.0\n"
                "unsynced_hold_s = 120.0\nunsynced_recheck_s = 1.0\n"
            )

    def start_gateway(self) -> None:
        log = (self.root / "gateway.log").open("ab")
        with self.server.entered():
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "siteclock.cli", "gateway", "--config",
                 str(self.gateway_toml)], stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        log.close()

    def start_terminal(self, tid: str) -> None:
        cfg = terminal_config(self.broker, tid, resend_after_s=3.0)
        spec = {
            "tid": tid, "db": str(self.outbox_path(tid)), "key": str(self.root / f"{tid}.key"),
            "cfg": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()},
            "badges": self.badges[tid], "status": str(self.root / f"{tid}.status"),
            "tap_every_s": TAP_EVERY_S, "seed": self.seed,
            "witness": str(self.root / f"{tid}.saved"),
        }  # fmt: skip
        log = (self.root / f"{tid}.log").open("ab")
        with self.site.entered():
            self.terminals[tid] = subprocess.Popen(
                [sys.executable, "-m", "bench.soak_terminal", json.dumps(spec)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip
        log.close()

    def outbox_path(self, tid: str) -> Path:
        disk = self.disks.get(tid)
        return (disk.mount if disk else self.root) / f"{tid}.db"

    # ------------------------------------------------------------------ faults

    def fault(self) -> None:
        """One random fault, held for a random while, then lifted."""
        kind = self.rng.choice(self.only or self.kinds)
        hold = self.rng.uniform(1.0, 3.0) if kind.endswith(("kill", "restart")) else (
            self.rng.uniform(5.0, 20.0))  # fmt: skip
        self.faults[kind] += 1
        if kind in ("terminal_kill", POWER_CUT):
            tid = self.rng.choice(TERMINALS)
            self.terminals[tid].send_signal(signal.SIGKILL)
            self.terminals[tid].wait(10)
            if kind == POWER_CUT:
                self.disks[tid].cut(self.rng.choice(MODES), seed=self.rng.randrange(2**31))
                self.disks[tid].start()
            time.sleep(hold)
            self.start_terminal(tid)
        elif kind == "broker_restart":
            self.broker.kill()
            time.sleep(hold)
            with self.server.entered():
                self.broker.start()
        elif kind == "gateway_kill":
            assert self.gateway is not None
            self.gateway.kill()
            self.gateway.wait(10)
            time.sleep(hold)
            self.start_gateway()
        elif kind.endswith("_netem"):
            link = self.uplink if kind.startswith("uplink") else self.relay_link
            link.impair(
                loss=self.rng.uniform(0, 0.3), delay_s=self.rng.uniform(0, 0.3),
                jitter_s=self.rng.uniform(0, 0.1), reorder=self.rng.uniform(0, 0.3),
                duplicate=self.rng.uniform(0, 0.2),
            )  # fmt: skip
            time.sleep(hold)
            link.up()
        elif kind.endswith("_down"):
            link = self.uplink if kind.startswith("uplink") else self.relay_link
            link.down()
            time.sleep(hold)
            link.up()
        elif kind == "clock_jump":  # the wall clock steps; NTP puts it right after `hold`
            jump = self.rng.choice((-1, 1)) * self.rng.uniform(*JUMP_S)
            path = self.root / f"{self.rng.choice(TERMINALS)}.clock"
            path.with_suffix(".tmp").write_text(json.dumps({"offset_s": jump}))
            os.replace(path.with_suffix(".tmp"), path)
            time.sleep(hold)
            path.unlink()
        elif kind in DISK_FAULTS:
            disk = self.disks[self.rng.choice(TERMINALS)]
            if kind == "disk_full":
                st = os.statvfs(disk.mount)
                disk.control(f"capacity {(st.f_blocks - st.f_bfree) * st.f_frsize}")
            else:
                disk.control("readonly on")
            time.sleep(hold)
            disk.control("capacity none" if kind == "disk_full" else "readonly off")
        else:  # ciao_outage
            self.sim.outage(hold, status=503, retry_after_s=1)
            time.sleep(hold)

    # ------------------------------------------------------------------ resources

    def status(self, tid: str) -> dict[str, Any]:
        try:
            return json.loads((self.root / f"{tid}.status").read_text())
        except (OSError, ValueError):
            return {}

    def _sample(self, every_s: float = 2.0) -> None:
        while not self._sampling.wait(every_s):
            procs = {"gateway": self.gateway, "broker": self.broker.process, **self.terminals}
            for name, proc in procs.items():
                if proc is None or proc.poll() is not None:
                    continue
                rss, fds = _rss_mb(proc.pid), _fds(proc.pid)
                if rss is not None:
                    self.samples.add(f"rss_mb.{name}", round(rss, 1))
                if fds is not None:
                    self.samples.add(f"fds.{name}", fds)
            self.samples.add("wal_mb.gateway", round(_size_mb(Path(f"{self.db}-wal")), 2))
            wal = max(_size_mb(Path(f"{self.outbox_path(tid)}-wal")) for tid in TERMINALS)
            self.samples.add("wal_mb.terminal_max", round(wal, 2))
            statuses = [self.status(tid) for tid in TERMINALS]
            self.samples.add("backlog.depth", sum(s.get("depth", 0) for s in statuses))
            age = max(s.get("oldest_unsent_age_s", 0.0) for s in statuses)
            self.samples.add("backlog.oldest_unsent_age_s", round(age, 1))

    # ------------------------------------------------------------------ the end

    def drain(self) -> float:
        """Stop tapping, lift every fault, wait until every outbox and the relay are done."""
        for tid in TERMINALS:
            (self.root / f"{tid}.status").with_suffix(".stop").touch()
            if self.terminals[tid].poll() is not None:
                self.start_terminal(tid)
        self.uplink.up()
        self.relay_link.up()
        with self.server.entered():
            self.broker.start()
        if self.gateway is None or self.gateway.poll() is not None:
            self.start_gateway()
        started = time.monotonic()
        time.sleep(2.0)  # every terminal writes its status once it has stopped tapping
        while time.monotonic() - started < DRAIN_S:
            done = all(self.status(t).get("depth", 1) == 0 for t in TERMINALS)
            if done and len(self.registrations()) >= sum(
                self.status(t).get("total", 0) for t in TERMINALS
            ):
                break
            time.sleep(1.0)
        time.sleep(3.0)  # a late duplicate, if there is one, has time to show
        return time.monotonic() - started

    def registrations(self) -> list[dict[str, Any]]:
        """The simulator's record, with the wall time of each verdict (no INSS leaves here)."""
        state = self.sim.state
        with state.lock:
            state.settle()
            return [
                {**r.item, "validate_at": r.validate_at} for r in state.registrations.values()
            ]

    def held(self) -> dict[str, list[Any]]:
        """Every event each outbox holds at the end (its terminal stopped first)."""
        for proc in self.terminals.values():
            proc.kill()
            proc.wait(10)
        out = {}
        for tid in TERMINALS:
            box = Outbox(self.outbox_path(tid), signer=self.signers[tid], terminal_id=tid,
                         workplace=WORKPLACE)  # fmt: skip
            out[tid] = [signed.event for signed in box.events()]
            box.close()
        return out

    def witnessed(self) -> dict[str, list[tuple[int, str]]]:
        """What each terminal told its workers was saved (its witness file, off its disk)."""
        out = {}
        for tid in TERMINALS:
            lines = (self.root / f"{tid}.saved").read_text().split("\n")
            # A kill can cut the last line short: a tap is witnessed once its line is whole.
            out[tid] = [(int(a), b) for a, b in (x.split() for x in lines[:-1] if x)]
        return out


# --------------------------------------------------------------------------- results


def summarise(samples: Samples) -> dict[str, Any]:
    """First, max and last of each series (growth shows as last well above first)."""
    return {
        name: {"first": points[0][1], "max": max(v for _, v in points), "last": points[-1][1]}
        for name, points in sorted(samples.series.items())
        if points
    }


def plot(samples: Samples, directory: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for group, unit in (("rss_mb", "RSS (MiB)"), ("fds", "open file descriptors"),
                        ("wal_mb", "WAL size (MiB)"), ("backlog", "backlog")):  # fmt: skip
        series = {k: v for k, v in samples.series.items() if k.split(".")[0] == group}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(9, 4))
        for name, points in sorted(series.items()):
            ax.plot([t for t, _ in points], [v for _, v in points], label=name.split(".", 1)[1])
        ax.set_xlabel("seconds")
        ax.set_ylabel(unit)
        ax.legend(fontsize="small")
        ax.set_title(f"soak: {unit} over time")
        path = directory / f"soak_{group}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path.name)
    return written


def run(seconds: float, seed: int) -> dict[str, Any]:
    keep = os.environ.get("SOAK_KEEP")  # a directory to keep the site's files in, to inspect
    place = contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="soak-")
    with place as tmp, Site(Path(tmp), seed) as site:
        deadline = time.monotonic() + seconds
        time.sleep(min(5.0, seconds / 10))  # a calm start, as a reference
        while time.monotonic() < deadline:
            site.fault()
            time.sleep(min(site.rng.uniform(2.0, 10.0), max(0.0, deadline - time.monotonic())))
        drain_s = site.drain()
        held = site.held()
        ssin = {p.badge: p.inss for p in site.people}
        offset = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        taps = [Tap(tid, e.seq, ssin[e.badge], str(e.kind), true_wall_ns(e, offset) / 1e9)
                for tid, events in held.items() for e in events]  # fmt: skip
        history = check_history(taps, site.registrations())
        ids = {tid: [(e.seq, e.event_id) for e in events] for tid, events in held.items()}
        history.update(check_saved(site.witnessed(), ids))
        figures = {
            "seconds": seconds, "seed": seed, "link_backend": site.uplink.backend,
            **history, "drain_s": round(drain_s, 1), "faults": dict(site.faults),
            "resources": summarise(site.samples),
        }  # fmt: skip
        RESULTS.mkdir(parents=True, exist_ok=True)
        figures["plots"] = plot(site.samples, RESULTS)
        figures["series"] = site.samples.series
    # Each worker taps at one terminal only, so its own record is the whole sequence: the
    # gateway has nothing to correct, and a type changed is a wrong decision.
    must_be_zero = ("lost", "duplicated", "unexpected", "type_changed", "saved_lost", "seq_reused")
    figures["goal"] = f"{', '.join(must_be_zero)} all 0"
    figures["goal_met"] = not any(history[k] for k in must_be_zero)
    return figures


def main() -> int:
    reason = unavailable()
    if reason:
        print(f"soak needs network namespaces: {reason}")
        return 2
    seconds = float(os.environ.get("SOAK_SECONDS", "3600"))
    seed = int(os.environ.get("SOAK_SEED", "14"))
    figures = run(seconds, seed)
    figures["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (RESULTS / "soak.json").write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        if key not in ("series", "resources"):
            print(f"   {key:24} {value}")
    return 0 if figures["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
