"""Relay stage 4: polling. A registration CIaO created with a pending validity is looked up
again every ``poll_interval_s`` until it is final: one search per (employer, workplace) and
date range, at most ``poll_calls_per_turn`` calls a turn so polling never holds up submission;
by id when the search by dates is refused.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from siteclock.gateway.ciao.client import CiaoError, Permanent, Registration, ShuttingDown
from siteclock.gateway.relay_failures import NOT_ANSWERED, Update
from siteclock.gateway.relay_queries import due_pending
from siteclock.gateway.relay_stage import DueRowsStage
from siteclock.gateway.relay_store import FINAL, State

if TYPE_CHECKING:
    pass


def by_id(ids: Iterable[str], hits: Sequence[Registration]) -> dict[str, Registration | None]:
    """The registrations a search found among ``ids``; None for an id it did not return."""
    wanted = set(ids)
    found: dict[str, Registration | None] = {h.id: h for h in hits if h.id in wanted}
    return found | {i: None for i in wanted if i not in found}


def polled_columns(
    reg: Registration, state: State, *, later_ns: int, now_ns: int, final_ns: int
) -> dict[str, Any]:
    """What a poll answer records: its validity and remarks, the next poll, and the final
    state (at ``final_ns``) when ``state`` is one."""
    values: dict[str, Any] = {
        "validity": reg.validity,
        "remarks": reg.remarks,
        "next_try_ns": later_ns,
        "updated_ns": now_ns,
    }
    if state in FINAL:
        values.update(state=state, final_ns=final_ns)
    return values


class Poller(DueRowsStage):
    """Looks up due pending registrations and records their validity."""

    def due(self, now: int) -> Sequence[Any]:
        return due_pending(self.relay.store, now, self.relay.config.poll_batch)

    def handle(self, rows: Sequence[Any], now: int) -> int:
        relay = self.relay
        groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for row in rows:
            groups[(row["employer"] or "", row["workplace"] or "")].append(row)
        updates: list[Update] = []
        later = now + int(relay.config.poll_interval_s * 1e9)
        calls = relay.config.poll_calls_per_turn
        looked = 0
        try:
            for (employer, workplace), members in groups.items():
                if calls <= 0:
                    break
                members.sort(key=lambda r: r["reg_date"] or "")
                found, used = self._poll_group(employer, workplace, members, calls)
                calls -= used
                for row in members:
                    key = (row["terminal"], row["seq"])
                    reg = found.get(row["ciao_id"])
                    if reg is None:
                        if row["ciao_id"] in found:  # asked, but no answer: next time
                            updates.append((key, {"next_try_ns": later, "updated_ns": now}))
                            looked += 1
                        continue
                    looked += 1
                    state = relay.state_for(reg.validity)
                    final = relay.clock_ns() if state in FINAL else now
                    columns = polled_columns(reg, state, later_ns=later, now_ns=now, final_ns=final)
                    updates.append((key, columns))
        finally:
            if updates:
                with relay.tx() as db:
                    relay.store.update_each(db, updates)
        return looked

    def _poll_group(
        self, employer: str, workplace: str, members: list[Any], calls: int
    ) -> tuple[dict[str, Registration | None], int]:
        """Registrations of ``members`` by id (None: asked and failed) and calls used."""
        relay = self.relay
        ids = {row["ciao_id"] for row in members}
        names = relay.profile.search
        by_search = (
            employer and workplace and not ({names.date_from, names.date_to} & relay.search.omitted)
        )
        if by_search:
            try:
                dates = [members[0]["reg_date"], members[-1]["reg_date"]]
                hits = relay.search(json.loads(employer), workplace, dates, None)
            except ShuttingDown:
                raise
            except CiaoError as exc:
                relay.counters[f"poll_failed.{exc.reason}"] += 1
                if not isinstance(exc, Permanent):
                    relay.alerts.trouble(exc, relay.clock_ns())
                    return dict.fromkeys(ids), 1
            else:
                relay.alerts.answered(*NOT_ANSWERED)
                relay.counters["poll_search"] += 1
                return by_id(ids, hits), 1
        # No usable search: one lookup per id, within the turn's budget.
        found: dict[str, Registration | None] = {}
        for row in members[:calls]:
            try:
                found[row["ciao_id"]] = relay.client.get(row["ciao_id"])
            except ShuttingDown:
                raise
            except CiaoError as exc:
                relay.counters[f"poll_failed.{exc.reason}"] += 1
                found[row["ciao_id"]] = None
        relay.counters["poll_lookup"] += len(found)
        return found, max(1, len(found))
