"""The terminal service: reader -> repeat filter -> capture -> outbox -> feedback, plus health.

:class:`Terminal` assembles the parts from a :class:`~terminal.config.TerminalConfig`. The reader
runs in its own thread (its ``reads()`` blocks); each badge read goes through
``hw.repeat.mark_repeats`` to :meth:`Capture.tap`, which records it in the outbox and answers the
worker. When ``[uplink]`` is configured, ``terminal.uplink.Uplink`` ships the outbox to the
gateway in the background, is woken after each recorded tap, and hands new rosters to capture.

``siteclock terminal --config PATH`` runs it until SIGTERM/SIGINT. It tells systemd it is ready
(``READY=1``) and alive (``WATCHDOG=1``) when ``NOTIFY_SOCKET`` is set, and it never waits for
time sync: a terminal without network must still record taps (events carry the clock's trust).

``siteclock terminal tap --socket PATH BADGE...`` presents badges to a simulated reader.

Exit codes: 0 after a clean stop, 2 for anything the installer must fix (bad config, data
directory not writable, damaged outbox, insecure key file, unknown reader), each with one
clear line on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from gpiozero import Button, GPIOZeroError

from siteclock import log as log_mod
from siteclock.config import ConfigError
from siteclock.files import make_dir_durably
from siteclock.hw.base import BadgeRead, Reader, ReaderState, ReaderStatus
from siteclock.hw.repeat import mark_repeats
from siteclock.log import fields
from siteclock.shift import ShiftRule
from siteclock.terminal import config as config_mod
from siteclock.terminal import identity
from siteclock.terminal.capture import BreakWindow, Capture
from siteclock.terminal.config import TerminalConfig
from siteclock.terminal.direction import Direction
from siteclock.terminal.feedback import Feedback
from siteclock.terminal.health import Health
from siteclock.terminal.outbox import Outbox, OutboxError
from siteclock.terminal.outbox_file import read_only_message

log = logging.getLogger(__name__)

READER_RETRY_S = 2.0


class StartupError(Exception):
    """Something the installer must fix before the terminal can run; the message says what."""


def _ensure_writable(data_dir: Path) -> None:
    """Create ``data_dir`` if needed and prove that this user can write files in it."""
    try:
        make_dir_durably(data_dir, 0o700)  # its name must survive a power cut too
        probe = data_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if exc.errno == errno.EROFS:  # the kernel remounts a failing SD card read-only
            raise StartupError(read_only_message(data_dir)) from None
        raise StartupError(
            f"data directory {data_dir} is not writable by this user ({exc.strerror}); "
            "fix its owner or mode, or set data_dir in the config"
        ) from None


def _pin_factory(name: str | None) -> Any:
    if name is None:
        return None  # gpiozero chooses (GPIOZERO_PIN_FACTORY, then lgpio on a Pi)
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    raise StartupError(f"feedback.pin_factory {name!r} is unknown (use 'mock' or leave it out)")


def _display(spec: str | None) -> Any:
    """A luma device from ``dummy`` or ``ssd1306:<i2c port>:<address>``; None when absent."""
    if spec is None:
        return None
    if spec == "dummy":
        from luma.core.device import dummy

        return dummy(width=128, height=64)
    kind, _, rest = spec.partition(":")
    if kind == "ssd1306":
        port, _, address = rest.partition(":")
        try:
            from luma.core.interface.serial import i2c
            from luma.oled.device import ssd1306

            return ssd1306(i2c(port=int(port or 1), address=int(address or "0x3C", 0)))
        except (ImportError, OSError, ValueError) as exc:
            # A broken display must not stop taps from being recorded: LEDs still answer.
            log.warning("display unavailable", extra=fields(spec=spec, error=exc))
            return None
    raise StartupError(f"feedback.display {spec!r} is unknown (use ssd1306:PORT:ADDRESS)")


class Terminal:
    """One running terminal. ``start()`` opens everything, ``stop()`` closes it (safe twice).

    :param config: the loaded configuration.
    :param reader: an already open reader (tests); default ``hw.open_reader(reader.spec)``.
    :param pin_factory: a gpiozero pin factory overriding ``feedback.pin_factory``.
    """

    def __init__(
        self, config: TerminalConfig, *, reader: Reader | None = None, pin_factory: Any = None
    ) -> None:
        self.config = config
        _ensure_writable(config.data_dir)
        try:
            signer = identity.load_or_create(config.key_path)
        except (identity.IdentityError, OSError) as exc:
            raise StartupError(f"signing key {config.key_path}: {exc}") from None
        self.signer = signer
        try:
            self.outbox = Outbox(
                config.outbox_path,
                signer=signer,
                terminal_id=config.terminal_id,
                workplace=config.workplace,
            )
        except OutboxError as exc:
            raise StartupError(str(exc)) from None
        factory = pin_factory if pin_factory is not None else _pin_factory(
            config.feedback.pin_factory
        )
        # Capture is made below; the heartbeat asks it for its roster only when it is sent.
        self.health = Health(
            self.outbox, config.data_dir, roster_version=lambda: self.capture.roster_version
        )
        fb = config.feedback
        break_key = None
        try:
            self.feedback = Feedback(
                fb.green_pin, fb.red_pin, fb.buzzer_pin,
                pin_factory=factory, display=_display(fb.display), journal=fb.journal,
                language=fb.language,
            )  # fmt: skip
            if config.capture.break_pin is not None:
                break_key = Button(config.capture.break_pin, pin_factory=factory)
        except (GPIOZeroError, OSError) as exc:
            self.outbox.close()
            raise StartupError(f"feedback or break key: {exc}") from None
        self._break_key = break_key
        self.capture = Capture(
            self.outbox, feedback=self.feedback, break_key=break_key,
            on_disk_full=self.health.disk_full,
            break_windows=[BreakWindow.parse(w) for w in config.capture.break_windows],
            direction=Direction(config.capture.direction),
            shift=ShiftRule(config.capture.shift_gap_h, config.capture.shift_calendar_day),
            # Without a connected uplink the terminal lacks the site's view: its taps guess.
            site_view=lambda: self.uplink is not None and self.uplink.connected,
        )  # fmt: skip
        self._reader = reader
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.uplink: Any = None
        self._stopped = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._reader is None:
            from siteclock import hw

            try:
                self._reader = hw.open_reader(self.config.reader.spec)
            except (ValueError, OSError) as exc:
                raise StartupError(f"reader {self.config.reader.spec!r}: {exc}") from None
        self._start_uplink()
        self._thread = threading.Thread(target=self._run_reader, name="reader", daemon=True)
        self._thread.start()
        log.info("terminal started", extra=fields(
            terminal=self.config.terminal_id, last_seq=self.outbox.stats().last_seq,
            kid=self.signer.kid,
        ))  # fmt: skip

    def _start_uplink(self) -> None:
        if self.config.uplink is None:
            return
        try:
            module = importlib.import_module("siteclock.terminal.uplink")
        except ModuleNotFoundError as exc:
            if exc.name != "siteclock.terminal.uplink":
                raise
            log.warning("uplink not installed; recording offline only")
            return
        try:
            self.uplink = self._make_uplink(module)
        except (OSError, ValueError) as exc:  # e.g. an unreadable password or keys file
            raise StartupError(f"uplink: {exc}") from None
        self.uplink.start()

    def _make_uplink(self, module: Any) -> Any:
        return module.Uplink(
            self.config.uplink,
            terminal_id=self.config.terminal_id,
            outbox=self.outbox,
            status=self.health.snapshot,
            on_roster=self.capture.apply_roster,
            # The uplink prunes (only it marks events delivered); it keeps them this long.
            evidence_window_s=self.config.evidence_days * 86400.0,
        )

    def _run_reader(self) -> None:
        """The reader thread: read, mark repeats, record, answer. Survives reader crashes."""
        assert self._reader is not None
        while not self._stopping.is_set():
            try:
                items = mark_repeats(self._reader.reads(), self.config.reader.repeat_window_s)
                for item in items:
                    if self._stopping.is_set():
                        return
                    self._handle(item)
                return  # reads() ended: the reader was closed
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.exception("reader failed; retrying")
                self._handle(ReaderStatus(ReaderState.FAULT, f"reader crashed: {exc}"))
                self._stopping.wait(READER_RETRY_S)

    def _handle(self, item: object) -> None:
        if isinstance(item, BadgeRead):
            result = self.capture.tap(item)
            if result.signed is not None and self.uplink is not None:
                self.uplink.wake()
        elif isinstance(item, ReaderStatus):
            if item.state is ReaderState.OK:
                self.health.set_reader("ok")
                self.feedback.reader_ok()
            else:
                self.health.set_reader(f"fault: {item.detail}")
                self.feedback.reader_fault(item.detail)

    def alive(self) -> bool:
        """True while the reader thread runs (what the systemd watchdog vouches for)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self.uplink is not None:
            with contextlib.suppress(Exception):
                self.uplink.stop()
        if self._reader is not None:
            self._reader.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.feedback.close()
        if self._break_key is not None:
            self._break_key.close()
        self.outbox.close()
        log.info("terminal stopped")

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- CLI


def _watchdog_interval() -> float:
    usec = os.environ.get("WATCHDOG_USEC")
    return max(int(usec) / 2e6, 0.5) if usec and usec.isdigit() else 10.0


def run(config: TerminalConfig, stop: threading.Event) -> None:
    """Run a terminal until ``stop`` is set, pinging systemd's watchdog along the way."""
    notifier = None
    if os.environ.get("NOTIFY_SOCKET"):
        import sdnotify

        notifier = sdnotify.SystemdNotifier()
    with Terminal(config) as terminal:
        terminal.start()
        if notifier is not None:
            notifier.notify("READY=1")
        interval = _watchdog_interval()
        while not stop.is_set():
            # Only a terminal whose reader thread still runs is alive: if it died, the missed
            # watchdog makes systemd restart the service.
            if notifier is not None and terminal.alive():
                notifier.notify("WATCHDOG=1")
            stop.wait(interval)
        if notifier is not None:
            notifier.notify("STOPPING=1")


def _tap_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="siteclock terminal tap", description="Present badges to a simulated reader."
    )
    parser.add_argument("--socket", type=Path, required=True, help="the sim reader's socket")
    parser.add_argument("badges", nargs="+", help="badges such as sim:0A1B2C3D")
    args = parser.parse_args(argv)
    from siteclock.hw import sim

    try:
        sim.send_taps(str(args.socket), args.badges)
    except OSError as exc:
        print(f"siteclock terminal tap: {args.socket}: {exc}", file=sys.stderr)
        return 2
    return 0


def cli(argv: list[str]) -> int:
    """``siteclock terminal --config PATH`` | ``siteclock terminal tap --socket PATH BADGE...``."""
    if argv and argv[0] == "tap":
        return _tap_cli(argv[1:])
    parser = argparse.ArgumentParser(prog="siteclock terminal", description="Run a badge terminal.")
    parser.add_argument("--config", type=Path, required=True, help="terminal TOML file")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    log_mod.setup(args.log_level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        run(config_mod.load(args.config), stop)
    except (ConfigError, StartupError) as exc:
        print(f"siteclock terminal: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
