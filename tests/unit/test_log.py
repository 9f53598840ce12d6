"""Logs are key=value lines, and an INSS never reaches one."""

from __future__ import annotations

import io
import logging
import re

import pytest

from siteclock import log


@pytest.fixture
def captured():
    stream = io.StringIO()
    log.setup("DEBUG", stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


@pytest.mark.parametrize("inss", ["85073003328", "85.07.30-033.28", "85 07 30 033 28"])
def test_inss_is_masked_in_messages_args_and_fields(captured, inss):
    logger = logging.getLogger("t")
    logger.warning("worker %s rejected", inss, extra=log.fields(ssin=inss, seq=4))
    logger.info(f"inline {inss}")
    out = captured.getvalue()
    assert "033" not in out
    assert out.count(log.REDACTED) == 3
    assert "seq=4" in out


def test_longer_digit_runs_and_timestamps_are_left_alone(captured):
    logging.getLogger("t").info("ns", extra=log.fields(wall_ns=1700000000123456789, seq=12))
    assert "wall_ns=1700000000123456789" in captured.getvalue()


def test_values_with_spaces_are_quoted(captured):
    logging.getLogger("t").error("reader gone", extra=log.fields(next_step="check the cable"))
    assert 'next_step="check the cable"' in captured.getvalue()
    assert 'msg="reader gone"' in captured.getvalue()


@pytest.mark.parametrize(
    "form",
    ["85-07-30-033-28", "85/07/30-033/28", "85.07.30 033-28", "8507 3003 328", "85.07.30-033.28"],
)
def test_each_form_the_parser_accepts_is_masked_in_a_log_line(captured, form: str) -> None:
    from siteclock.gateway.identifiers import normalize_inss

    assert normalize_inss(form) == "85073003328"  # the parser accepts it...
    logging.getLogger("t").warning("worker %s refused", form, extra=log.fields(inss=form))
    out = captured.getvalue()
    assert "85073003328" not in re.sub(r"[\s./-]", "", out)  # ...so no log line may show it
    assert out.count(log.REDACTED) == 2
