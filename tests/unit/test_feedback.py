"""Feedback patterns on gpiozero mock pins and a luma dummy display, plus the journal."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from luma.core.device import dummy

from siteclock.protocol import Kind, Outcome, Verdict
from siteclock.terminal.feedback import PATTERNS, Feedback

GREEN, RED, BUZZER = 27, 22, 17
TEMPO = 0.002  # patterns run 500x faster than on a wall


@pytest.fixture
def pins() -> MockFactory:
    return MockFactory()


@pytest.fixture
def display():
    return dummy(width=128, height=64)


@pytest.fixture
def feedback(pins, display, tmp_path: Path):
    fb = Feedback(GREEN, RED, BUZZER, pin_factory=pins, display=display,
                  journal=tmp_path / "journal.jsonl", tempo=TEMPO)  # fmt: skip
    yield fb
    fb.close()


def rises(pins: MockFactory, pin: int) -> int:
    """How many times a pin went high since it was last cleared."""
    states = [s.state for s in pins.pin(pin).states]
    return sum(1 for a, b in itertools.pairwise(states) if b and not a)


def settle(pins: MockFactory) -> None:
    """Wait until gpiozero's background blink threads have finished their n= repetitions."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        before = [len(pins.pin(p).states) for p in (GREEN, RED, BUZZER)]
        time.sleep(0.03)
        if before == [len(pins.pin(p).states) for p in (GREEN, RED, BUZZER)]:
            return


def run_pattern(pins, call) -> tuple[int, int, int]:
    for p in (GREEN, RED, BUZZER):
        pins.pin(p).clear_states()
    call()
    settle(pins)
    return rises(pins, GREEN), rises(pins, RED), rises(pins, BUZZER)


def test_each_pattern_has_its_own_signature(feedback, pins) -> None:
    seen = {
        "saved": run_pattern(pins, lambda: feedback.saved("Ana", None, seq=1, badge="sim:0A")),
        "repeat": run_pattern(pins, lambda: feedback.repeat(badge="sim:0A")),
        "unknown_badge": run_pattern(pins, lambda: feedback.unknown_badge(seq=2)),
        "blocked": run_pattern(pins, lambda: feedback.blocked("Eve", seq=3)),
        "refused": run_pattern(pins, lambda: feedback.refused("disk full")),
    }
    assert seen == {
        "saved": (1, 0, 1),
        "repeat": (2, 0, 0),
        "unknown_badge": (1, 2, 2),
        "blocked": (1, 3, 3),
        "refused": (0, 3, 3),
    }
    assert len(set(seen.values())) == len(seen)
    assert all(PATTERNS[name] for name in seen)


def test_patterns_do_not_block(pins, tmp_path) -> None:
    slow = Feedback(GREEN, RED, BUZZER, pin_factory=pins, tempo=1.0)
    started = time.monotonic()
    slow.refused("disk full")  # about 2 s of blinking on a wall
    assert time.monotonic() - started < 0.5
    assert slow.red.is_lit or slow.buzzer.is_active
    slow.close()


def test_reader_fault_blinks_until_reader_ok(feedback, pins) -> None:
    feedback.reader_fault("no answer from PN532")
    time.sleep(0.1)
    assert rises(pins, RED) >= 3  # keeps blinking: no n=
    feedback.reader_ok()
    time.sleep(0.02)
    count = len(pins.pin(RED).states)
    time.sleep(0.05)
    assert len(pins.pin(RED).states) == count
    assert not feedback.red.is_lit


def test_display_shows_text_and_changes_with_the_answer(feedback, display) -> None:
    feedback.saved("Ana P.", Verdict(1, Outcome.REJECTED, "dimona"), seq=2)
    saved = display.image.copy()
    assert saved.getbbox() is not None  # something was drawn
    feedback.refused("disk full")
    assert display.image.tobytes() != saved.tobytes()


def test_journal_has_one_line_per_pattern(feedback, tmp_path) -> None:
    feedback.saved(None, None, seq=7, badge="sim:0A")
    feedback.repeat(badge="sim:0A")
    feedback.refused("disk full", badge="sim:0B")
    lines = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [(x["pattern"], x["seq"], x["badge"]) for x in lines] == [
        ("saved", 7, "sim:0A"), ("repeat", None, "sim:0A"), ("refused", None, "sim:0B"),
    ]  # fmt: skip
    assert lines[0]["at_ns"] <= lines[1]["at_ns"] <= lines[2]["at_ns"]


def test_close_is_safe_twice_and_turns_everything_off(feedback, pins) -> None:
    feedback.saved(None, None)
    feedback.close()
    feedback.close()
    assert feedback.closed


# --------------------------------------------------------------------------- direction (issue 8)


def test_in_out_and_break_look_and_sound_different(feedback, pins) -> None:
    seen = {
        kind: run_pattern(pins, lambda k=kind: feedback.saved("Ana", None, seq=1, kind=k))
        for kind in (Kind.IN, Kind.OUT, Kind.BREAK_START)
    }
    assert seen == {Kind.IN: (1, 0, 1), Kind.OUT: (2, 0, 1), Kind.BREAK_START: (3, 0, 2)}
    others = {(0, 3, 3), (2, 0, 0), (1, 2, 2), (1, 3, 3)}  # refused, repeat, unknown, blocked
    assert not set(seen.values()) & others
    assert feedback.last_pattern == "saved"  # the journal's name stays what readers expect
    assert feedback.last_signal == "saved_break"


@pytest.mark.parametrize(
    ("language", "came_in", "went_out", "on_break"),
    [
        ("en", "IN - saved", "OUT - saved", "BREAK - saved"),
        ("nl", "IN - opgeslagen", "UIT - opgeslagen", "PAUZE - opgeslagen"),
        ("fr", "ENTRÉE - enregistré", "SORTIE - enregistré", "PAUSE - enregistré"),
        ("de", "KOMMEN - gespeichert", "GEHEN - gespeichert", "PAUSE - gespeichert"),
    ],
)
def test_the_display_says_the_direction_in_the_sites_language(
    pins, tmp_path, language, came_in, went_out, on_break
) -> None:
    journal = tmp_path / "journal.jsonl"
    fb = Feedback(GREEN, RED, BUZZER, pin_factory=pins, journal=journal, tempo=TEMPO,
                  language=language)  # fmt: skip
    for kind in (Kind.IN, Kind.OUT, Kind.BREAK_START):
        fb.saved("Ana", Verdict(1, Outcome.REJECTED, "RELATED DIMONA NOT OK"), seq=2, kind=kind)
    fb.close()
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    assert [x["text"].split(" / ")[0] for x in lines] == [came_in, went_out, on_break]
    assert [x["direction"] for x in lines] == ["in", "out", "break"]
    assert all(len(part) <= 21 for x in lines for part in x["text"].split(" / "))
    # the worker is told to see the employer, not the NSSO's code for why
    assert not any("DIMONA" in x["text"] for x in lines)


def test_an_unknown_language_is_refused_before_any_pin_is_taken(pins) -> None:
    with pytest.raises(ValueError, match="'es' is not one of de, en, fr, nl"):
        Feedback(GREEN, RED, BUZZER, pin_factory=pins, language="es")
    Feedback(GREEN, RED, BUZZER, pin_factory=pins).close()  # the pins are still free
