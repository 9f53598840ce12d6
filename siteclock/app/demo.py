"""``siteclock demo``: a whole simulated worksite, end to end, and what happened to every tap.

Real parts, run as they run on a site: a Mosquitto broker with the configuration
``siteclock broker-config`` writes (TLS, one password per terminal, per-terminal ACL), the
gateway (``siteclock gateway``), two terminals (``siteclock terminal``) with simulated readers,
and the CIaO simulator standing in for the NSSO. Workers tap in, one taps twice, a stranger
taps, a subcontractor's worker whose Dimona is not in order taps; they tap out once the NSSO
has spoken. The report then follows each tap from the worker's feedback to the NSSO's verdict
and checks each terminal's signed hash chain.

Everything lives in ``./demo-site`` (recreated on each run; its logs stay for a look).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from siteclock.gateway.broker import GATEWAY_USER, credential_path, write_site
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.identifiers import enterprise_check_digits, inss_check_digits
from siteclock.gateway.registry import Registry
from siteclock.gateway.roster import write_gateway_keys
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.hw.sim import send_taps
from siteclock.terminal import identity
from siteclock.terminal.outbox import verdicts_held

WORKPLACE = "1Y1003SQ5VSSZ"
TERMINALS = ("t-lobby", "t-roof")
CLIENT_ID = "self_service_chaman_10001_demo"
REPEAT_WINDOW_S = 3.0
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _inss(birth: str, serial: int) -> str:
    first9 = f"{birth}{serial:03d}"
    return first9 + inss_check_digits(first9)


def _enterprise(first8: str) -> str:
    return first8 + enterprise_check_digits(first8)


@dataclass(frozen=True)
class Worker:
    ref: str
    name: str
    badge: str
    inss: str
    employer: str


CLEANING_CO = _enterprise("04031234")  # the contractor
SUBCONTRACTOR = _enterprise("07654321")
WORKERS = (
    Worker("w-ana", "Ana Peeters", "nfc-a:04A1B2C3D4E5F6", _inss("850730", 33), CLEANING_CO),
    Worker("w-bram", "Bram Claes", "nfc-a:1A2B3C4D", _inss("920214", 101), CLEANING_CO),
    Worker("w-chloe", "Chloe Dubois", "em4100:62E3086CED", _inss("990511", 207), SUBCONTRACTOR),
)
STRANGER = "nfc-a:DEADBEEF"


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        # A poll: the terminals and the gateway are other processes, seen only through their
        # files and sockets, which offer nothing to wait on.
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Site:
    """The processes of one simulated site, started and stopped together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.sim: SimServer | None = None

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / "logs" / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.root / "logs" / f"{name}.log").read_text()[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.sim is not None:
            self.sim.stop()


# --------------------------------------------------------------------------- setup


def _write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def setup(site: Site, siteclock: list[str]) -> dict[str, Path]:
    root = site.root
    (root / "logs").mkdir(parents=True)
    mqtt_port = _free_port()
    gateway_mqtt_port = _free_port()  # the gateway's own broker listener

    # The NSSO, simulated: knows the Declaration of Works, both employers on it, the workers'
    # INSS numbers, and that the subcontractor's Dimona for Chloe is not in order.
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ciao_key = root / "gateway" / "ciao-key.pem"
    ciao_key.parent.mkdir(parents=True)
    fd = os.open(ciao_key, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))  # fmt: skip
    site.sim = SimServer(validation_delay_s=1.0).start()
    site.sim.register_client(
        CLIENT_ID,
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    site.sim.set_reference_data(
        dows={WORKPLACE: {CLEANING_CO, SUBCONTRACTOR}},
        known_ssins={w.inss for w in WORKERS},
        dimona_not_ok={(WORKERS[2].inss, SUBCONTRACTOR)},
    )

    # The broker, configured as `siteclock broker-config` would.
    broker = write_site(
        root / "broker", hostnames=["localhost", "127.0.0.1"], terminals=TERMINALS,
        port=mqtt_port, gateway_port=gateway_mqtt_port,
        # Mosquitto started as root drops to user "mosquitto", who may not read our 0600
        # files; the demo's broker simply stays the user who runs the demo.
        run_as_user="root" if os.geteuid() == 0 else None,
    )  # fmt: skip
    site.spawn("mosquitto", [MOSQUITTO, "-c", str(broker.conf)])
    _wait_for(lambda: _port_open(mqtt_port), 10, "mosquitto")

    # The gateway: its registry of workers (INSS encrypted at rest) and of terminals.
    gw = root / "gateway"
    db = gw / "gateway.db"
    registry = Registry(db, gw / "inss.key")
    registry.add_workplace(WORKPLACE, latitude=50.8466, longitude=4.3528)
    for w in WORKERS:
        registry.add_worker(w.ref, w.name, inss=w.inss, employer=w.employer)
        registry.enrol_badge(w.badge, w.ref)
        registry.assign(w.ref, WORKPLACE)
    registry.close()
    signer = identity.load_or_create(gw / "gateway-signing.key")
    write_gateway_keys(gw / "gateway-keys.json", [signer])
    terminals = TerminalRegistry(db)
    ca = broker.pki.ca_cert
    gw_config = _write_toml(
        gw / "gateway.toml",
        f"""\
db = "{db}"
signing_key_file = "{gw / "gateway-signing.key"}"
inss_key_file = "{gw / "inss.key"}"
gateway_keys_file = "{gw / "gateway-keys.json"}"
roster_check_s = 0.5

[mqtt]
host = "localhost"
port = {gateway_mqtt_port}
ca_file = "{ca}"
password_file = "{credential_path(root / "broker", GATEWAY_USER)}"

[ciao]
environment = "local-sim"
base_url = "{site.sim.url}"
client_id = "{CLIENT_ID}"
private_key = "{ciao_key}"

[relay]
idle_s = 0.1
poll_interval_s = 0.5
ambiguous_settle_s = 1.0
# The demo's terminals use this machine's clock, which may never be NTP-synced: do not hold
# their taps waiting for a sync that will not come (a site keeps the default).
unsynced_hold_s = 0.0
""",
    )

    # Two terminals bound to the workplace, each with its own key and broker password.
    configs: dict[str, Path] = {"gateway": gw_config, "db": db}
    for tid in TERMINALS:
        data = root / tid
        data.mkdir()
        key = identity.load_or_create(data / "terminal.key")
        terminals.register(tid, WORKPLACE, public_key=key.public_key_bytes())
        configs[tid] = _write_toml(
            data / "terminal.toml",
            f"""\
terminal_id = "{tid}"
workplace = "{WORKPLACE}"
data_dir = "{data}"

[reader]
spec = "sim:{data / "taps.sock"}"
repeat_window_s = {REPEAT_WINDOW_S}

[feedback]
pin_factory = "mock"
journal = "{data / "feedback.jsonl"}"

[uplink]
host = "localhost"
port = {mqtt_port}
ca_file = "{ca}"
password_file = "{credential_path(root / "broker", tid)}"
gateway_keys_file = "{gw / "gateway-keys.json"}"
heartbeat_s = 2.0
resend_after_s = 2.0
""",
        )
    terminals.close()

    site.spawn("gateway", [*siteclock, "gateway", "--config", str(gw_config)])
    for tid in TERMINALS:
        site.spawn(tid, [*siteclock, "terminal", "--config", str(configs[tid])])
    for tid in TERMINALS:
        sock = root / tid / "taps.sock"
        _wait_for(sock.exists, 15, f"{tid}'s reader")
    return configs


# --------------------------------------------------------------------------- the day


def _tap(root: Path, terminal: str, badge: str, who: str, say) -> None:  # type: ignore[no-untyped-def]
    reply = send_taps(str(root / terminal / "taps.sock"), [badge])
    say(f"  {time.strftime('%H:%M:%S')}  {who:<14} taps {badge:<22} at {terminal:<8} {reply[0]}")
    time.sleep(0.3)  # pacing: a worker's taps are moments apart, and a reader follows the story


def _relay_states(db: Path) -> dict[tuple[str, int], Any]:
    gateway_db = SQLiteGatewayDB(db)
    try:
        rows = gateway_db.event_journeys()
    finally:
        gateway_db.close()
    return {(r["terminal"], r["seq"]): r for r in rows}


def _settled(db: Path, expected: int) -> bool:
    rows = _relay_states(db)
    waiting = {"unknown_badge", "blocked_badge", "unknown_workplace"}  # for the employer
    final = {"registered", "rejected", "refused"} | waiting
    return len(rows) >= expected and all(
        r["state"] in final and (r["state"] in waiting or r["notified"]) for r in rows.values()
    )


def _journal(root: Path, terminal: str) -> list[dict]:
    path = root / terminal / "feedback.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_day(site: Site, configs: dict[str, Path], say) -> None:  # type: ignore[no-untyped-def]
    root = site.root
    ana, bram, chloe = WORKERS
    say("\nMorning: the first shift arrives")
    registry = TerminalRegistry(configs["db"])
    try:
        _wait_for(
            lambda: (site.check_alive(), _terminals_online(registry))[1], 20, "terminals online"
        )
        # Greeted by name only once a terminal holds a roster; each heartbeat says which it
        # holds. Every roster the gateway sends was built after setup enrolled the workers,
        # so holding any roster is holding the current one.
        _wait_for(
            lambda: (site.check_alive(), _rosters_held(registry))[1], 20, "rosters on terminals"
        )
    finally:
        registry.close()
    _tap(root, "t-lobby", ana.badge, ana.name, say)
    _tap(root, "t-lobby", ana.badge, ana.name + " again", say)  # a nervous double tap
    _tap(root, "t-lobby", bram.badge, bram.name, say)
    _tap(root, "t-roof", chloe.badge, chloe.name, say)
    _tap(root, "t-roof", STRANGER, "a visitor", say)
    say("  ... waiting for the NSSO's verdicts")
    _wait_for(lambda: (site.check_alive(), _settled(configs["db"], 4))[1], 60, "verdicts")
    # The story's hours pass: the terminals' repeat filter is a window of real time.
    time.sleep(max(0.0, REPEAT_WINDOW_S - 1.0))
    say("\nEnd of the shift: each tap out shows the NSSO's word on the tap in; Bram leaves by the "
        "roof, which knows from the gateway that he came in at the lobby")  # fmt: skip
    _tap(root, "t-lobby", ana.badge, ana.name, say)
    _tap(root, "t-roof", chloe.badge, chloe.name, say)
    _tap(root, "t-roof", bram.badge, bram.name, say)
    _wait_for(lambda: (site.check_alive(), _settled(configs["db"], 7))[1], 60, "verdicts")
    notified = sum(1 for r in _relay_states(configs["db"]).values() if r["notified"])
    _wait_for(lambda: _verdicts_held(root) >= notified, 10, "verdicts on the terminals")


def _verdicts_held(root: Path) -> int:
    """Verdicts the terminals have recorded in their outboxes."""
    return sum(verdicts_held(root / tid / "outbox.db") for tid in TERMINALS)


def _terminals_online(registry: TerminalRegistry) -> bool:
    """True once both terminals have reported ``online`` to the gateway."""
    return _every_heartbeat(registry, lambda beat: beat.get("state") == "online")


def _rosters_held(registry: TerminalRegistry) -> bool:
    """True once both terminals' last heartbeats name the roster they hold."""
    return _every_heartbeat(registry, lambda beat: beat.get("roster_version") is not None)


def _every_heartbeat(registry: TerminalRegistry, holds: Callable[[dict[str, Any]], bool]) -> bool:
    beats = [registry.last_heartbeat(t) for t in TERMINALS]
    return all(beat is not None and holds(beat) for beat in beats)


# --------------------------------------------------------------------------- report


def report(site: Site, configs: dict[str, Path], say) -> bool:  # type: ignore[no-untyped-def]
    root = site.root
    names = {w.badge: w.name for w in WORKERS}
    states = _relay_states(configs["db"])
    ok = True
    say("\nWhat the workers saw (feedback journal of each terminal)")
    for tid in TERMINALS:
        for entry in _journal(root, tid):
            if entry["pattern"] in ("reader_ok", "reader_fault"):
                continue
            who = names.get(entry.get("badge") or "", entry.get("badge") or "")
            say(f"  {tid:<8} {who:<14} {entry['pattern']:<13} {entry.get('text', '')}")

    say("\nEach recorded tap, from the terminal to the NSSO")
    say(f"  {'terminal':<8} {'seq':>3}  {'kind':<11} {'worker':<14} {'gateway':<8} "
        f"{'NSSO id':<8} verdict")  # fmt: skip
    for (tid, seq), row in sorted(states.items()):
        who = names.get(row["badge"], "unknown badge")
        verdict = row["state"] or "queued"
        if row["state"] == "rejected":
            verdict += ": " + "; ".join(json.loads(row["remarks"] or "[]"))
        elif row["state"] == "unknown_badge":
            verdict += " (badge not enrolled: the employer must link it)"
        say(f"  {tid:<8} {seq:>3}  {row['kind']:<11} {who:<14} {'stored':<8} "
            f"{row['ciao_id'] or '-':<8} {verdict}")  # fmt: skip

    notes = sorted({r["clock_note"] for r in states.values() if r["clock_note"]})
    if notes:
        say("  clock: taps made before this machine's clock was NTP-synced are flagged; "
            "the gateway says: " + "; ".join(notes))  # fmt: skip

    records = site.sim.registrations() if site.sim else []
    say(f"\nThe NSSO simulator holds {len(records)} registrations "
        f"(one per enrolled tap, none twice): "
        + ", ".join(f"{r['type']}" for r in records))  # fmt: skip
    keys_seen = {(r["ssin"], r["registrationDate"], r["type"]) for r in records}
    if len(keys_seen) != len(records):
        say("  !! a registration was sent twice")
        ok = False

    say("\nEvidence: each terminal's signed hash chain, checked offline with its public key")
    for tid in TERMINALS:
        proc = subprocess.run(
            [sys.executable, "-m", "siteclock.cli", "verify-chain",
             "--db", str(root / tid / "outbox.db"),
             "--public-key", str(root / tid / "terminal.key.pub")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        say(f"  {tid:<8} {(proc.stdout or proc.stderr).strip()}")
        ok = ok and proc.returncode == 0

    expected_final = sum(1 for r in states.values() if r["badge"] in names)
    final = sum(1 for r in states.values() if r["state"] in ("registered", "rejected"))
    ok = ok and final == expected_final == 6 and len(records) == 6
    say(f"\n{'OK' if ok else 'NOT OK'}: {final} of {expected_final} enrolled taps have the "
        f"NSSO's verdict; logs in {root / 'logs'}")  # fmt: skip
    return ok


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="siteclock demo", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("demo-site"), help="site folder")
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    say = lambda text: print(text, flush=True)  # noqa: E731
    siteclock = [sys.executable, "-m", "siteclock.cli"]
    site = Site(root)
    say(f"siteclock demo: one worksite ({WORKPLACE}), terminals {', '.join(TERMINALS)}, "
        "broker, gateway and the CIaO simulator")  # fmt: skip
    try:
        configs = setup(site, siteclock)
        run_day(site, configs, say)
        ok = report(site, configs, say)
    except (TimeoutError, RuntimeError) as exc:
        say(f"\ndemo failed: {exc}\nlogs are in {root / 'logs'}")
        ok = False
    finally:
        site.stop()
    return 0 if ok else 1
