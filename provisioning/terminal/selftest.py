"""The installer's self-test: one clear PASS / FAIL / WARN line per check, before leaving a site.

Checks, in the order an installer fixes problems:

1. **reader**: the configured reader opens and a test badge tapped within the time limit is read;
2. **broker**: the broker is reached over TLS and accepts this terminal's new identity;
3. **end to end**: the test tap is recorded in the outbox, signed, sent, and acknowledged by the
   gateway (stored in its inbox): the whole path a worker's tap takes. The event carries the
   flag ``selftest`` so the gateway and the dashboard can tell it from a real registration;
4. **clock**: synchronised or not (a WARN, not a FAIL: taps are recorded regardless and flagged;
   DESIGN decision 4);
5. **disk**: enough free space for the outbox.

Run it with the terminal service stopped: the reader device can have one owner only.

Example::

    report = run_selftest(cfg)
    print(report.text())          # PASS reader  tty:AMA0:pn532, badge nfc-a:04A1B2C3 read
    report.passed                 # False if any check FAILed
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from siteclock.hw.base import BadgeRead, Reader, ReaderState, ReaderStatus
from siteclock.protocol import ClockState, Kind, Roster
from siteclock.terminal import identity
from siteclock.terminal.config import TerminalConfig, UplinkConfig

SELFTEST_FLAG = "selftest"
MIN_FREE_MB = 200.0


class Verdict(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str

    def line(self) -> str:
        return f"{self.verdict.value:4}  {self.name:<11} {self.detail}"


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.verdict is not Verdict.FAIL for c in self.checks)

    def text(self) -> str:
        lines = [c.line() for c in self.checks]
        lines.append(f"self-test {'PASSED' if self.passed else 'FAILED'}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- checks


def watch_reader(
    reader: Reader, until: Callable[[object], bool], timeout_s: float
) -> tuple[list[object], list[str]]:
    """What ``reader`` yields until an item satisfies ``until`` (kept, last) or ``timeout_s``
    passes; then the reader is closed. Returns the items and the driver's exceptions as text
    (a driver failure is a FAIL line, not a crash)."""
    items: list[object] = []
    errors: list[str] = []
    done = threading.Event()

    def pump() -> None:
        try:
            for item in reader.reads():
                items.append(item)
                if until(item):
                    break
        except Exception as exc:  # noqa: BLE001 - any driver failure is a FAIL line, not a crash
            errors.append(str(exc))
        finally:
            done.set()

    thread = threading.Thread(target=pump, name="selftest-reader", daemon=True)
    thread.start()
    done.wait(timeout_s)
    reader.close()
    thread.join(5)
    return list(items), errors


def check_reader(reader: Reader, spec: str, timeout_s: float) -> tuple[Check, str | None]:
    """Wait for one badge on ``reader``; returns the check and the badge read (or None)."""
    items, errors = watch_reader(reader, lambda i: isinstance(i, BadgeRead), timeout_s)
    found = [i for i in items if isinstance(i, BadgeRead)]
    faults = [
        i.detail for i in items if isinstance(i, ReaderStatus) and i.state is ReaderState.FAULT
    ] + errors
    if found:
        badge = found[0].badge
        return Check("reader", Verdict.PASS, f"{spec}: test badge {badge} read"), badge
    if faults:
        return Check("reader", Verdict.FAIL, f"{spec}: {faults[-1]}"), None
    return (
        Check("reader", Verdict.FAIL, f"{spec}: no badge read within {timeout_s:.0f} s"),
        None,
    )


def check_broker(cfg: UplinkConfig, terminal_id: str, timeout_s: float = 10.0) -> Check:
    """Log in to the broker with the terminal's identity over TLS, then leave."""
    result: dict[str, Any] = {}
    connected = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{terminal_id}-selftest",
        protocol=mqtt.MQTTv5,
    )

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result["rc"] = rc
        connected.set()

    client.on_connect = on_connect
    where = f"{cfg.host}:{cfg.port}"
    try:
        if cfg.tls:
            client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None)
        password = Path(cfg.password_file).read_text().strip() if cfg.password_file else None
        client.username_pw_set(cfg.username or terminal_id, password)
        client.connect(cfg.host, cfg.port, keepalive=10)
    except (OSError, ValueError) as exc:
        return Check("broker", Verdict.FAIL, f"{where}: cannot connect: {exc}")
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            return Check("broker", Verdict.FAIL, f"{where}: no answer within {timeout_s:.0f} s")
        rc = result["rc"]
        if rc.is_failure:
            return Check("broker", Verdict.FAIL, f"{where}: login refused ({rc})")
        tls = "TLS" if cfg.tls else "no TLS (!)"
        verdict = Verdict.PASS if cfg.tls else Verdict.WARN
        return Check("broker", verdict, f"{where} over {tls} as {cfg.username or terminal_id}")
    finally:
        client.disconnect()
        client.loop_stop()


def check_end_to_end(cfg: TerminalConfig, badge: str, timeout_s: float) -> Check:
    """Record the test tap and wait until the gateway acknowledges it (outbox depth back)."""
    from siteclock.terminal.clock import read_clock
    from siteclock.terminal.outbox import Outbox
    from siteclock.terminal.uplink import Uplink

    if cfg.uplink is None:
        return Check("end to end", Verdict.FAIL, "no [uplink] in the configuration")
    signer = identity.load(cfg.key_path)
    with Outbox(
        cfg.outbox_path, signer=signer, terminal_id=cfg.terminal_id, workplace=cfg.workplace
    ) as box:
        signed = box.append(kind=Kind.IN, badge=badge, clock=read_clock(), flags=[SELFTEST_FLAG])
        seq = signed.event.seq

        def ignore_roster(_roster: Roster) -> None:
            pass

        uplink = Uplink(
            cfg.uplink,
            terminal_id=cfg.terminal_id,
            outbox=box,
            status=lambda: {"state": "online", "selftest": True},
            on_roster=ignore_roster,
        )
        uplink.start()
        try:
            started = time.monotonic()
            uplink.wake()  # send it now, not at the uplink's next turn

            def acknowledged() -> bool:
                return not any(e.event.seq == seq for e in box.unsent(after_seq=seq - 1, limit=1))

            if box.wait_until(acknowledged, timeout_s):  # woken by each ack committed
                took = time.monotonic() - started
                return Check(
                    "end to end",
                    Verdict.PASS,
                    f"event seq {seq} stored and acknowledged by the gateway in {took:.1f} s",
                )
            return Check(
                "end to end",
                Verdict.FAIL,
                f"event seq {seq} not acknowledged within {timeout_s:.0f} s (it stays queued and "
                "is sent when the gateway answers)",
            )
        finally:
            uplink.stop()


def check_clock(read: Callable[[], ClockState] | None = None) -> Check:
    if read is None:
        from siteclock.terminal.clock import read_clock as read
    state = read()
    if state.synced:
        return Check(
            "clock", Verdict.PASS, f"synchronised ({state.source}, ±{state.maxerror_us} µs)"
        )
    return Check(
        "clock",
        Verdict.WARN,
        f"not synchronised ({state.source}); taps are recorded and flagged until NTP is "
        "reachable: check the network or the time server",
    )


def check_disk(data_dir: Path, min_free_mb: float = MIN_FREE_MB) -> Check:
    try:
        free_mb = shutil.disk_usage(data_dir).free / 2**20
    except OSError as exc:
        return Check("disk", Verdict.FAIL, f"{data_dir}: {exc}")
    detail = f"{free_mb:.0f} MB free in {data_dir}"
    if free_mb < min_free_mb:
        return Check("disk", Verdict.FAIL, f"{detail}, need {min_free_mb:.0f} MB")
    return Check("disk", Verdict.PASS, detail)


def run_selftest(
    cfg: TerminalConfig,
    *,
    reader: Reader | None = None,
    badge_timeout_s: float = 60.0,
    ack_timeout_s: float = 30.0,
    on_check: Callable[[Check], None] | None = None,
) -> Report:
    """All checks in order; ``on_check`` sees each as it completes (to print it at once)."""
    report = Report()

    def add(check: Check) -> None:
        report.checks.append(check)
        if on_check is not None:
            on_check(check)

    badge: str | None = None
    if reader is None:
        from siteclock import hw

        try:
            reader = hw.open_reader(cfg.reader.spec)
        except (ValueError, OSError) as exc:
            add(Check("reader", Verdict.FAIL, f"{cfg.reader.spec}: {exc}"))
    if reader is not None:
        check, badge = check_reader(reader, cfg.reader.spec, badge_timeout_s)
        add(check)
    if cfg.uplink is None:
        add(Check("broker", Verdict.FAIL, "no [uplink] in the configuration"))
    else:
        add(check_broker(cfg.uplink, cfg.terminal_id))
    if badge is None:
        add(Check("end to end", Verdict.FAIL, "skipped: needs a test badge read"))
    elif report.checks[-1].verdict is Verdict.FAIL:
        add(Check("end to end", Verdict.FAIL, "skipped: the broker is not reachable"))
    else:
        add(check_end_to_end(cfg, badge, ack_timeout_s))
    add(check_clock())
    add(check_disk(cfg.data_dir))
    return report
