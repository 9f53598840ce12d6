"""Relay stages 4 and 5 alone: what a poll answer records, and the verdict a terminal is told."""

from __future__ import annotations

import json

from siteclock.gateway.ciao.client import Registration
from siteclock.gateway.identifiers import inss_check_digits
from siteclock.gateway.relay_notify import verdict_for
from siteclock.gateway.relay_poll import by_id, polled_columns
from siteclock.gateway.relay_store import State
from siteclock.protocol import Outcome

INSS = "850101001" + inss_check_digits("850101001")


def final_row(state: State, remarks: list[str] | None = None, error: str = "") -> dict:
    return {
        "seq": 7,
        "state": state,
        "remarks": json.dumps(remarks) if remarks is not None else None,
        "last_error": error,
    }


def test_a_registered_event_is_told_registered() -> None:
    verdict = verdict_for(final_row(State.REGISTERED))
    assert (verdict.seq, verdict.outcome, verdict.reason) == (7, Outcome.REGISTERED, "")


def test_a_rejected_event_is_told_ciaos_remarks() -> None:
    verdict = verdict_for(final_row(State.REJECTED, ["no declaration", "late"]))
    assert verdict.outcome is Outcome.REJECTED
    assert verdict.reason == "no declaration; late"
    assert verdict_for(final_row(State.REJECTED, [], "not created")).reason == "not created"
    assert verdict_for(final_row(State.REJECTED)).reason == "rejected"


def test_a_refused_event_is_told_why_without_any_inss() -> None:
    verdict = verdict_for(final_row(State.REFUSED, error=f"item.ssin: {INSS} unknown " + "x" * 300))
    assert verdict.reason.startswith("refused by CIaO: item.ssin: ")
    assert INSS not in verdict.reason
    assert len(verdict.reason) == 200


def test_a_poll_answer_records_validity_and_ends_a_final_one() -> None:
    reg = Registration("c-1", "VALID", ("ok",))
    final = polled_columns(reg, State.REGISTERED, later_ns=20, now_ns=10, final_ns=11)
    assert final == {
        "validity": "VALID",
        "remarks": ("ok",),
        "next_try_ns": 20,
        "updated_ns": 10,
        "state": State.REGISTERED,
        "final_ns": 11,
    }
    pending = polled_columns(reg, State.PENDING, later_ns=20, now_ns=10, final_ns=11)
    assert "state" not in pending
    assert "final_ns" not in pending


def test_a_search_answers_for_the_ids_asked_and_marks_the_missing() -> None:
    hits = [Registration("a", "VALID"), Registration("zz", "VALID")]
    found = by_id({"a", "b"}, hits)
    assert found == {"a": hits[0], "b": None}
