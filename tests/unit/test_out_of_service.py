"""Issue 11, Seen 10: a decommissioned terminal kept telling workers "Saved". The rule that
calls it out of service, with an injected clock, and its words in every site language."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from siteclock.terminal.feedback import Feedback
from siteclock.terminal.messages import LANGUAGES
from siteclock.terminal.out_of_service import LoginWatch
from tests.support.clock import ManualClock

REFUSED = "Not authorized"


def test_refused_login_after_an_accepted_one_ends_service_after_the_delay(tmp_path: Path) -> None:
    clock = ManualClock()
    watch = LoginWatch(tmp_path, after_s=300, clock=clock)
    watch.observe(logins=1, connected=True, refusals=0, reason=None)
    watch.observe(logins=1, connected=False, refusals=1, reason=REFUSED)
    clock.now += 299
    watch.observe(logins=1, connected=False, refusals=5, reason=REFUSED)
    assert not watch.out_of_service()
    clock.now += 1
    assert watch.out_of_service()
    # accepted again (an employer undid it, or the broker's file was fixed): back at once
    watch.observe(logins=2, connected=True, refusals=5, reason=REFUSED)
    assert not watch.out_of_service()


def test_a_terminal_never_accepted_keeps_recording(tmp_path: Path) -> None:
    """A typo in the password at provisioning is not a decommission."""
    clock = ManualClock()
    watch = LoginWatch(tmp_path, after_s=1, clock=clock)
    watch.observe(logins=0, connected=False, refusals=3, reason="Bad user name or password")
    clock.now += 3600
    assert not watch.out_of_service()


def test_the_accepted_login_is_remembered_across_restarts(tmp_path: Path) -> None:
    LoginWatch(tmp_path).observe(logins=1, connected=False, refusals=0, reason=None)
    clock = ManualClock()
    watch = LoginWatch(tmp_path, after_s=10, clock=clock)  # the service restarted
    watch.observe(logins=0, connected=False, refusals=1, reason=REFUSED)
    clock.now += 10
    assert watch.out_of_service()


def test_a_busy_or_unwell_broker_is_not_a_decommission(tmp_path: Path) -> None:
    clock = ManualClock()
    watch = LoginWatch(tmp_path, after_s=1, clock=clock)
    watch.observe(logins=1, connected=True, refusals=0, reason=None)
    watch.observe(logins=1, connected=False, refusals=1, reason="Server unavailable")
    clock.now += 60
    assert not watch.out_of_service()


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_out_of_service_words_fit_the_display(language: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    fb = Feedback(17, 27, 22, pin_factory=MockFactory(), journal=journal, language=language)
    try:
        fb.out_of_service(badge="nfc-a:04A1B2C3")
    finally:
        fb.close()
    words = LANGUAGES[language]
    text = json.loads(journal.read_text())["text"]
    assert words.out_of_service in text
    assert words.use_other_terminal in text
    assert words.saved not in text
    assert len(words.out_of_service) <= 21
    assert len(words.use_other_terminal) <= 21
    assert fb.last_pattern == "refused"
