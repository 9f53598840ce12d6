"""The soak's history checker: it must see a lost, a duplicated, an unexpected, a late tap."""

from __future__ import annotations

from bench.soak import Tap, check_history, check_saved

A, B = "85073100123", "90010100234"  # made-up INSS shapes; never leave the soak process


def tap(seq: int, ssin: str, kind: str, wall_s: float) -> Tap:
    return Tap("t-1", seq, ssin, kind, wall_s)


def registration(ssin: str, kind: str, date: str, verdict_s: float) -> dict:
    return {"ssin": ssin, "type": kind.upper(), "registrationDate": date, "validate_at": verdict_s}


T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_a_clean_history_is_all_registered():
    taps = [tap(1, A, "in", T0 + 0.4), tap(2, B, "in", T0 + 1.9)]
    regs = [
        registration(A, "in", "2026-01-01T00:00:00Z", T0 + 2),
        registration(B, "in", "2026-01-01T00:00:01Z", T0 + 3),
    ]
    figures = check_history(taps, regs)
    assert figures["registered"] == 2
    assert (figures["lost"], figures["duplicated"], figures["unexpected"]) == (0, 0, 0)
    assert figures["p99_tap_to_verdict_s"] == 1.6


def test_lost_duplicated_unexpected_late_and_changed_are_each_counted():
    taps = [
        tap(1, A, "in", T0),  # registered twice
        tap(2, A, "out", T0 + 10),  # never registered: lost
        tap(3, B, "in", T0 + 20),  # registered as out by the gateway, very late
    ]
    regs = [
        registration(A, "in", "2026-01-01T00:00:00Z", T0 + 1),
        registration(A, "in", "2026-01-01T00:00:00Z", T0 + 5),
        registration(B, "out", "2026-01-01T00:00:20Z", T0 + 20 + 500),
        registration(B, "in", "2026-01-01T00:01:00Z", T0 + 61),  # nobody tapped this
    ]
    figures = check_history(taps, regs, late_s=120)
    assert figures["lost"] == 1
    assert figures["duplicated"] == 1
    assert figures["unexpected"] == 1
    assert figures["type_changed"] == 1
    assert figures["late"] == 1


def test_saved_taps_missing_or_overwritten_after_a_power_cut_are_counted():
    witnessed = {"t-1": [(1, "e1"), (2, "e2"), (3, "e3")], "t-2": [(1, "f1")]}
    held = {"t-1": [(1, "e1"), (3, "other")], "t-2": [(1, "f1"), (2, "f2")]}
    # e2 is gone, seq 3 now holds another event; f2 was never witnessed (a kill cut its line).
    assert check_saved(witnessed, held) == {"saved_lost": 1, "seq_reused": 1}
    assert check_saved(witnessed, witnessed) == {"saved_lost": 0, "seq_reused": 0}
