"""Test helper: count the outermost transactions a database object opens (its nested
``atomic()`` blocks are savepoints of the enclosing one and are not counted)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


def count_transactions(monkeypatch: pytest.MonkeyPatch, db: Any) -> list[int]:
    """From now on, each outermost ``db.atomic()`` appends 1 to the list returned."""
    transactions: list[int] = []
    depth = [0]
    real_atomic = db.atomic

    @contextmanager
    def counting_atomic() -> Iterator[object]:
        if depth[0] == 0:
            transactions.append(1)
        depth[0] += 1
        try:
            with real_atomic() as conn:
                yield conn
        finally:
            depth[0] -= 1

    monkeypatch.setattr(db, "atomic", counting_atomic)
    return transactions
