"""What the worker sees and hears after a tap: LEDs, buzzer, an optional small display.

:class:`Feedback` is a gpiozero ``CompositeDevice`` of a green LED, a red LED and a buzzer with
one method per pattern, so every answer the terminal can give is named in one place and each
is told apart by eye and ear:

===================  ==========================  ==================================
pattern              LEDs                        buzzer
===================  ==========================  ==================================
``saved`` (IN)       green, one long flash       one short beep
``saved`` (OUT)      green, two long flashes     one long beep
``saved`` (BREAK)    green, three quick flashes  two short beeps
``repeat``           green, two quick flashes    silent
``unknown_badge``    green once + red twice      two beeps
``blocked``          green once + red three x    three beeps
``refused``          red, three long flashes     three long beeps
``reader_fault``     red, slow blink until fixed silent
===================  ==========================  ==================================

The display shows the direction first, in big words the worker cannot miss (IN / OUT / BREAK,
in the site's language: :mod:`terminal.messages`), then the name and the word on the last tap.

Patterns run in gpiozero's background threads (``blink``/``beep`` with ``n=``), so a method
returns at once and a new pattern cuts the previous one short. ``saved`` must only be called
once the outbox COMMIT has returned (capture's job): green means the tap is on the disk.

The optional journal is a file to which every pattern appends one JSON line
(``{"pattern", "seq", "badge", "text", "direction", "at_ns"}``, ``at_ns`` from
``time.monotonic_ns()``, ``direction`` ``in``/``out``/``break`` or null) and flushes:
the demo prints it and the kill test checks that every tap answered ``saved`` is in the outbox.

Example::

    fb = Feedback(27, 22, 17, pin_factory=MockFactory(), display=dummy(width=128, height=64))
    fb.saved("Ana P.", None, seq=12, badge="nfc-a:04A1B2C3")
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gpiozero import LED, Buzzer, CompositeDevice

from siteclock.log import fields
from siteclock.protocol import Kind, Outcome, Verdict
from siteclock.terminal.messages import words

log = logging.getLogger(__name__)

Blink = tuple[float, float, int | None]
"""(on seconds, off seconds, repetitions; None = until the next pattern)."""


@dataclass(frozen=True, slots=True)
class Pattern:
    green: Blink | None = None
    red: Blink | None = None
    buzzer: Blink | None = None


PATTERNS: dict[str, Pattern] = {
    "saved": Pattern(green=(0.6, 0.1, 1), buzzer=(0.08, 0.05, 1)),  # IN
    "saved_out": Pattern(green=(0.4, 0.15, 2), buzzer=(0.5, 0.1, 1)),
    "saved_break": Pattern(green=(0.1, 0.1, 3), buzzer=(0.08, 0.08, 2)),
    "repeat": Pattern(green=(0.08, 0.08, 2)),
    "unknown_badge": Pattern(green=(0.6, 0.1, 1), red=(0.1, 0.1, 2), buzzer=(0.08, 0.08, 2)),
    "blocked": Pattern(green=(0.6, 0.1, 1), red=(0.15, 0.15, 3), buzzer=(0.08, 0.08, 3)),
    "refused": Pattern(red=(0.5, 0.2, 3), buzzer=(0.4, 0.2, 3)),
    "reader_fault": Pattern(red=(0.1, 0.9, None)),
}

SIGNALS = {Kind.OUT: "saved_out", Kind.BREAK_START: "saved_break"}
"""The LED and buzzer pattern of a saved tap by direction (``saved`` for IN and back from a
break); unknown and blocked badges keep their own warning patterns."""


def direction_word(kind: Kind | None) -> str | None:
    """``in`` / ``out`` / ``break`` for the journal (the display uses the site's language)."""
    if kind is None:
        return None
    return "break" if kind is Kind.BREAK_START else "out" if kind is Kind.OUT else "in"


class Feedback(CompositeDevice):
    """Green LED, red LED and buzzer (plus optional display and journal) for tap answers.

    :param green_pin: GPIO of the green LED (gpiozero pin name or number).
    :param red_pin: GPIO of the red LED.
    :param buzzer_pin: GPIO of the active buzzer.
    :param pin_factory: gpiozero pin factory; ``MockFactory()`` in tests, None for the default.
    :param display: a luma device (``luma.oled.device.ssd1306``, ``luma.core.device.dummy``).
    :param journal: a file to append one JSON line per pattern to (for demos and tests).
    :param tempo: multiplies every duration; tests use a small value to run fast.
    :param language: the display's language: ``en`` (default), ``nl``, ``fr`` or ``de``.
    """

    def __init__(
        self,
        green_pin: int | str,
        red_pin: int | str,
        buzzer_pin: int | str,
        *,
        pin_factory: Any = None,
        display: Any = None,
        journal: Path | None = None,
        tempo: float = 1.0,
        language: str = "en",
    ) -> None:
        self._words = words(language)  # before any pin is claimed: a bad name fails cleanly
        super().__init__(
            green=LED(green_pin, pin_factory=pin_factory),
            red=LED(red_pin, pin_factory=pin_factory),
            buzzer=Buzzer(buzzer_pin, pin_factory=pin_factory),
            _order=("green", "red", "buzzer"),
            pin_factory=pin_factory,
        )
        self._display = display
        self._tempo = tempo
        self._lock = threading.Lock()
        self._journal: IO[str] | None = (
            open(journal, "a", encoding="utf-8") if journal is not None else None  # noqa: SIM115
        )
        self.last_pattern: str | None = None
        self.last_signal: str | None = None
        """The LED/buzzer pattern last run: ``saved_out`` where the journal says ``saved``."""

    # ----------------------------------------------------------------- patterns

    def _headline(self, kind: Kind | None, text: str) -> list[str]:
        """The direction, then what happened: ``["OUT", "saved"]``."""
        w = self._words
        head = w.direction(kind)
        return [f"{head} - {text}" if head else text] + (
            [w.back_from_break] if kind is Kind.BREAK_END else []
        )

    def saved(
        self,
        name: str | None,
        verdict: Verdict | None,
        *,
        seq: int | None = None,
        badge: str | None = None,
        kind: Kind | None = None,
    ) -> None:
        """The tap is committed. Shows its direction, greets by name and gives the word on the
        previous tap (registered, or refused: see the employer, who has the reason)."""
        w = self._words
        lines = [*self._headline(kind, w.saved), name or ""]
        if verdict is not None:
            if verdict.outcome is Outcome.REGISTERED:
                lines.append(w.last_registered)
            else:
                lines += [w.last_rejected, w.see_employer]
        self._show("saved", lines, seq=seq, badge=badge, kind=kind,
                   signal=SIGNALS.get(kind, "saved") if kind is not None else "saved")  # fmt: skip

    def repeat(self, *, badge: str | None = None) -> None:
        """The same badge again within the repeat window: already saved, nothing new recorded."""
        self._show("repeat", [self._words.already_saved], badge=badge)

    def unknown_badge(
        self, *, seq: int | None = None, badge: str | None = None, kind: Kind | None = None
    ) -> None:
        """Saved, but the badge is not in the roster yet: the employer must enrol it."""
        lines = [*self._headline(kind, self._words.saved), self._words.badge_unknown]
        self._show("unknown_badge", lines, seq=seq, badge=badge, kind=kind)

    def blocked(
        self,
        name: str | None = None,
        *,
        seq: int | None = None,
        badge: str | None = None,
        kind: Kind | None = None,
    ) -> None:
        """Saved, but the badge is blocked in the roster: the worker must see the employer."""
        w = self._words
        lines = [*self._headline(kind, w.saved), name or "", w.badge_blocked, w.see_employer]
        self._show("blocked", lines, seq=seq, badge=badge, kind=kind)

    def refused(self, reason: str, *, badge: str | None = None) -> None:
        """The tap was NOT recorded (e.g. disk full). Red, loud, and honest."""
        self._show("refused", [self._words.not_saved, reason, self._words.use_paper], badge=badge)

    def out_of_service(self, *, badge: str | None = None) -> None:
        """The terminal is out of service (terminal.out_of_service): the tap is NOT recorded."""
        w = self._words
        self._show("refused", [w.not_saved, w.out_of_service, w.use_other_terminal], badge=badge)

    def reader_fault(self, detail: str) -> None:
        """The reader is gone; red blinks slowly until :meth:`reader_ok`."""
        self._show("reader_fault", [self._words.reader_fault, detail])

    def reader_ok(self) -> None:
        """The reader is back: stop the fault blink and clear the display."""
        with self._lock:
            if self.last_pattern == "reader_fault":
                self.red.off()
                self.last_pattern = None
        self._render([self._words.ready])

    # ----------------------------------------------------------------- machinery

    def _show(
        self,
        pattern: str,
        lines: list[str],
        *,
        seq: int | None = None,
        badge: str | None = None,
        kind: Kind | None = None,
        signal: str | None = None,
    ) -> None:
        """Run the LED/buzzer ``signal`` (default: the pattern's own), journal ``pattern``."""
        spec = PATTERNS[signal or pattern]
        with self._lock:
            self._check_open()
            for device, blink in ((self.green, spec.green), (self.red, spec.red)):
                if blink is None:
                    device.off()
                else:
                    on, off, n = blink
                    device.blink(on * self._tempo, off * self._tempo, n=n, background=True)
            if spec.buzzer is None:
                self.buzzer.off()
            else:
                on, off, n = spec.buzzer
                self.buzzer.beep(on * self._tempo, off * self._tempo, n=n, background=True)
            self.last_pattern = pattern
            self.last_signal = signal or pattern
            self._write_journal(pattern, seq, badge, lines, direction_word(kind))
        self._render(lines)

    def _write_journal(
        self,
        pattern: str,
        seq: int | None,
        badge: str | None,
        lines: list[str],
        direction: str | None,
    ) -> None:
        if self._journal is None:
            return
        shown = " / ".join(line for line in lines if line)  # what the display says
        line = json.dumps(
            {
                "pattern": pattern, "seq": seq, "badge": badge, "text": shown,
                "direction": direction, "at_ns": time.monotonic_ns(),
            },
            separators=(",", ":"),
        )  # fmt: skip
        try:
            self._journal.write(line + "\n")
            self._journal.flush()
        except OSError as exc:  # a full disk must not stop the LEDs from answering
            log.warning("feedback journal write failed", extra=fields(error=exc))

    def _render(self, lines: list[str]) -> None:
        if self._display is None:
            return
        from luma.core.render import canvas  # only terminals with a display need luma

        try:
            with canvas(self._display) as draw:
                for i, text in enumerate(line for line in lines if line):
                    draw.text((0, i * 12), text[:21], fill="white")
        except OSError as exc:  # an I2C glitch must not lose the tap's answer
            log.warning("display update failed", extra=fields(error=exc))

    def close(self) -> None:
        """Turn everything off and release the pins, display and journal. Safe to repeat."""
        super().close()
        # getattr: gpiozero also closes an object whose __init__ failed (a bad language)
        journal = getattr(self, "_journal", None)
        if journal is not None:
            journal.close()
            self._journal = None
