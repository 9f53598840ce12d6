"""``siteclock demo``: a whole simulated worksite, end to end, and what happened to every tap.

Real parts, run as they run on a site: a Mosquitto broker with the configuration
``siteclock broker-config`` writes (TLS, one password per terminal, per-terminal ACL), the
gateway (``siteclock gateway``), two terminals (``siteclock terminal``) with simulated readers,
and the CIaO simulator standing in for the NSSO. Workers tap in, one taps twice, a stranger
taps, a subcontractor's worker whose Dimona is not in order taps; they tap out once the NSSO
has spoken. The report then follows each tap from the worker's feedback to the NSSO's verdict
and checks each terminal's signed hash chain.

The employer's console runs too (HTTPS, a demo login printed at the start), and the story uses
it as an employer would: the rejection and its problem details, the unknown badge linked to a
worker (its waiting tap is then relayed), a terminal going offline and coming back, the roll
call, a presence report, and signed evidence exported and verified offline. Then the site keeps
running for you to look around until Ctrl-C, which stops every process it started;
``--story-only`` tells the story and stops (the test suite uses it).

Everything lives in ``./demo-site`` (recreated on each run; its logs, the pages the story
fetched and the exports stay for a look).
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from siteclock.app import demo_console
from siteclock.app.demo_console import DEMO_USER, ConsoleClient, create_demo_login
from siteclock.app.demo_wire import WireTap
from siteclock.gateway.broker import GATEWAY_USER, credential_path, write_site
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.config import MqttConfig
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
NEWCOMER = Worker("w-dries", "Dries Janssens", STRANGER, _inss("010203", 45), CLEANING_CO)
"""Enrolled at setup without a badge: the employer links the unknown badge to him later."""


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
        self.argv: dict[str, list[str]] = {}
        self.sim: SimServer | None = None
        self.wiretap: WireTap | None = None

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / "logs" / f"{name}.log").open("ab")
        # Its own session: Ctrl-C reaches the demo alone, which then stops each process in
        # turn (SIGTERM, a clean stop) instead of every one dying at once mid-write.
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        log.close()
        self.procs.append((name, proc))
        self.argv[name] = argv
        return proc

    def kill(self, name: str) -> None:
        """Kill one process at once (SIGKILL: no goodbye, as when a terminal loses power)."""
        for i, (other, proc) in enumerate(self.procs):
            if other == name:
                proc.kill()
                proc.wait(timeout=10)
                del self.procs[i]
                return

    def restart(self, name: str) -> None:
        self.spawn(name, self.argv[name])

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.root / "logs" / f"{name}.log").read_text()[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.wiretap is not None:
            self.wiretap.stop()
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


def setup(site: Site, siteclock: list[str]) -> dict[str, Any]:
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
        known_ssins={w.inss for w in (*WORKERS, NEWCOMER)},
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
    _wait_for(lambda: _port_open(mqtt_port) and _port_open(gateway_mqtt_port), 10, "mosquitto")
    site.wiretap = WireTap(MqttConfig(
        host="localhost", port=gateway_mqtt_port, ca_file=broker.pki.ca_cert,
        password_file=credential_path(root / "broker", GATEWAY_USER),
        client_id="siteclock_demo_wiretap",
    ), root / "mqtt" / "capture.bin")  # fmt: skip
    if not site.wiretap.subscribed.wait(10):
        raise TimeoutError("the demo's wire tap did not subscribe within 10 s")

    # The gateway: its registry of workers (INSS encrypted at rest) and of terminals.
    gw = root / "gateway"
    db = gw / "gateway.db"
    registry = Registry(db, gw / "inss.key")
    registry.add_workplace(WORKPLACE, latitude=50.8466, longitude=4.3528)
    for w in WORKERS:
        registry.add_worker(w.ref, w.name, inss=w.inss, employer=w.employer)
        registry.enrol_badge(w.badge, w.ref)
        registry.assign(w.ref, WORKPLACE)
    registry.add_worker(NEWCOMER.ref, NEWCOMER.name, inss=NEWCOMER.inss,
                        employer=NEWCOMER.employer)  # fmt: skip
    registry.assign(NEWCOMER.ref, WORKPLACE)
    registry.close()
    signer = identity.load_or_create(gw / "gateway-signing.key")
    write_gateway_keys(gw / "gateway-keys.json", [signer])
    terminals = TerminalRegistry(db)
    ca = broker.pki.ca_cert
    console_port = _free_port()
    metrics_token = gw / "metrics.token"
    fd = os.open(metrics_token, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(os.urandom(16).hex())
    gw_config = _write_toml(gw / "gateway.toml", f"""\
db = "{db}"
signing_key_file = "{gw / 'gateway-signing.key'}"
inss_key_file = "{gw / 'inss.key'}"
gateway_keys_file = "{gw / 'gateway-keys.json'}"
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

[health]
# The demo's terminals beat every 2 s: one that falls silent is offline within 2 + 1 + 0.5 s
margin_s = 1.0
sweep_s = 0.5

[alerts]
console_url = "https://localhost:{console_port}"

[console]
host = "127.0.0.1"
port = {console_port}
cert_file = "{broker.pki.server_cert}"
key_file = "{broker.pki.server_key}"
default_language = "en"
metrics_token_file = "{metrics_token}"
""")

    # Two terminals bound to the workplace, each with its own key and broker password.
    configs: dict[str, Any] = {"gateway": gw_config, "db": db, "ca": ca,
                               "console_url": f"https://localhost:{console_port}",
                               "metrics_token": metrics_token,
                               "password": create_demo_login(db)}  # fmt: skip
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
    _wait_for(lambda: (site.check_alive(), _port_open(console_port))[1], 20, "the console")
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


def run_day(site: Site, configs: dict[str, Any], say) -> None:  # type: ignore[no-untyped-def]
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
    client = configs["client"]
    say("\nThe employer's console: the rejection, with the NSSO's remarks and problem details")
    demo_console.show_rejection(client, say)
    say("\nThe visitor was Dries Janssens, new today: the employer links his badge")
    linked = demo_console.link_unknown_badge(client, STRANGER, NEWCOMER.ref, say)
    _wait_for(lambda: demo_console.registration_state(client, *linked) == "registered", 60,
              "the linked badge's tap to be registered")  # fmt: skip
    say(f"  tap {linked[0]} #{linked[1]}: registered by the NSSO")
    say("\nRoll call (an inspector arrives): who is on the worksite now, from every terminal")
    demo_console.roll_call(client, WORKPLACE, say)
    _offline_and_back(site, configs, say)
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


def _offline_and_back(site: Site, configs: dict[str, Any], say) -> None:  # type: ignore[no-untyped-def]
    """t-roof loses power (killed: its Last Will speaks for it) and comes back."""
    client = configs["client"]
    say("\nThe roof terminal loses power, then comes back")
    started = time.monotonic()
    site.kill("t-roof")
    _wait_for(lambda: demo_console.terminal_state(client, "t-roof") == "offline", 20,
              "t-roof shown offline")  # fmt: skip
    say(f"  t-roof offline on the terminals page after {time.monotonic() - started:.1f} s, "
        "with an alert")  # fmt: skip
    client.get("/terminals/")
    client.get("/alerts/")
    started = time.monotonic()
    site.restart("t-roof")
    registry = TerminalRegistry(configs["db"])
    try:
        _wait_for(lambda: (site.check_alive(), demo_console.terminal_state(client, "t-roof")
                           == "online" and _rosters_held(registry))[1], 30,
                  "t-roof back online with its roster")  # fmt: skip
    finally:
        registry.close()
    say(f"  t-roof back online after {time.monotonic() - started:.1f} s; the alert resolved itself")


def exports(site: Site, configs: dict[str, Any], say) -> bool:  # type: ignore[no-untyped-def]
    """A presence report for payroll, and Ana's signed evidence checked offline."""
    client, root = configs["client"], site.root
    day = time.strftime("%Y-%m-%d")
    say("\nPayroll: today's presence per worker (first in, last out, breaks, hours)")
    report_csv = client.get("/reports/presence.csv", worksite=WORKPLACE, sep="semicolon",
                            **{"from": day, "to": day})  # fmt: skip
    for line in report_csv.text.splitlines()[1:]:
        cells = line.split(";")
        say(f"  {cells[3]:<16} in {cells[4]:<5} out {cells[5]:<5} {cells[6]} h")
    evidence = root / "evidence" / "evidence-w-ana.json"  # holds Ana's INSS: the one place
    evidence.parent.mkdir()
    answer = client.get("/evidence/export", keep=False, worker="w-ana", worksite=WORKPLACE,
                        **{"from": day, "to": day, "format": "json"})  # fmt: skip
    evidence.write_bytes(answer.content)
    evidence.chmod(0o600)
    say(f"\nEvidence: Ana's signed taps exported ({evidence}), then checked offline")
    proc = subprocess.run([sys.executable, "-m", "siteclock.cli", "evidence", "verify",
                           str(evidence)], capture_output=True, text=True, check=False)  # fmt: skip
    for line in proc.stdout.splitlines():
        say(f"  {line}")
    token = configs["metrics_token"].read_text().strip()
    metrics = client.session.get(f"{client.url}/metrics", timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    (client.save_dir / "metrics.txt").write_bytes(metrics.content)
    return proc.returncode == 0 and metrics.status_code == 200


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


def report(site: Site, configs: dict[str, Any], say) -> bool:  # type: ignore[no-untyped-def]
    root = site.root
    names = {w.badge: w.name for w in (*WORKERS, NEWCOMER)}
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
    ok = ok and final == expected_final == 7 and len(records) == 7
    say(f"\n{'OK' if ok else 'NOT OK'}: {final} of {expected_final} enrolled taps have the "
        f"NSSO's verdict; logs in {root / 'logs'}")  # fmt: skip
    return ok


def _guide(configs: dict[str, Any], root: Path, say) -> None:  # type: ignore[no-untyped-def]
    say(f"""
Where to look
  console      {configs['console_url']}   login {DEMO_USER} / {configs['password']}
               (the site's own CA signed it: {configs['ca']})
  logs         {root / 'logs'}
  pages        {root / 'console'}   (what the story fetched)
  evidence     {root / 'evidence'}  (siteclock evidence verify FILE)
What to try next
  - Terminals: kill a terminal process and watch it turn red within 3.5 s, its alert open.
  - Registrations: filter by state "rejected"; open one for the NSSO's problem details,
    mark it resolved with a comment (the audit trail keeps who and when).
  - Roll call: print it; Reports: download the presence CSV; Evidence: export, change one
    byte of the file, and check it on the same page.
  - Tap a badge at the lobby, in another shell:
      {sys.executable} -c "from siteclock.hw.sim import send_taps; \\
        print(send_taps('{root / 't-lobby' / 'taps.sock'}', ['{WORKERS[0].badge}']))"
""")


def _wait_for_ctrl_c(site: Site, say) -> None:  # type: ignore[no-untyped-def]
    """Keep the site running until Ctrl-C (or SIGTERM), watching that its processes live."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    say("The site keeps running. Ctrl-C stops every process.")
    try:
        # The signal ends the wait at once; the timeout is how often the children are checked.
        while not stop.wait(0.5):
            site.check_alive()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("\nstopping the site...")


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="siteclock demo", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("demo-site"), help="site folder")
    parser.add_argument("--story-only", action="store_true",
                        help="tell the story, then stop the site (no wait for Ctrl-C)")  # fmt: skip
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    say = lambda text: print(text, flush=True)  # noqa: E731
    siteclock = [sys.executable, "-m", "siteclock.cli"]
    site = Site(root)
    say(f"siteclock demo: one worksite ({WORKPLACE}), terminals {', '.join(TERMINALS)}, "
        "broker, gateway with its console, and the CIaO simulator")  # fmt: skip
    try:
        configs = setup(site, siteclock)
        say(f"console: {configs['console_url']}  login {DEMO_USER} / {configs['password']}")
        client = ConsoleClient(configs["console_url"], configs["ca"], root / "console")
        client.log_in(DEMO_USER, configs["password"])
        configs["client"] = client
        run_day(site, configs, say)
        ok = exports(site, configs, say)
        ok = report(site, configs, say) and ok
        if not args.story_only:
            _guide(configs, root, say)
            _wait_for_ctrl_c(site, say)
    except (TimeoutError, RuntimeError, OSError) as exc:
        say(f"\ndemo failed: {exc}\nlogs are in {root / 'logs'}")
        ok = False
    finally:
        site.stop()
    say("every process of the site stopped")
    return 0 if ok else 1
