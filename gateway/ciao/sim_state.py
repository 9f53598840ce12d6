"""The CIaO simulator's state: registrations, tokens, clients, reference data, its own record.

Everything the simulator knows sits in one :class:`SimState` behind one lock. A registration is
created pending and settles (:meth:`SimState.settle`) into valid, or invalid with the SOAP-style
remarks the reference data calls for, after ``validation_delay_s`` on the simulator's clock.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from siteclock.gateway.ciao.profile import Profile
from siteclock.gateway.ciao.sim_faults import Faults, Throttle
from siteclock.gateway.ciao.sim_http import parse_time

REMARK_DOW_UNKNOWN = "DUC IS NOT EXISTING"
REMARK_EMPLOYER_NOT_ON_DOW = "COMPANY IS NOT KNOWN  AS BUILDER OR  SUBCONTRACTOR IN THIS DUC"
REMARK_INSS_UNKNOWN = "NISS IS NOT KNOW IN THE NATIONAL REGISTER"
REMARK_DUPLICATE = "SAME DECLARATION HAS ALREADY BEEN REGISTERED"
REMARK_DIMONA = "RELATED DIMONA NOT OK"


@dataclass
class SimRegistration:
    id: int
    item: dict[str, Any]
    client_id: str
    created_at: float
    validate_at: float
    validity: str
    remarks: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What makes two registrations "the same declaration"."""
        i = self.item
        return (
            i["ssin"],
            employer_key(i["employer"]),
            i["contractualRelationshipReference"],
            i["type"].lower(),
            utc(i["registrationDate"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.item, "validity": self.validity, "remarks": self.remarks}


def employer_key(employer: dict[str, Any]) -> str:
    return str(employer.get("enterpriseNumber") or employer.get("foreignVatNumber"))


def utc(value: str) -> str:
    moment = parse_time(value)
    return moment.astimezone(UTC).isoformat() if moment else value


class SimState:
    """Everything the simulator knows; all access under one lock."""

    def __init__(
        self,
        profile: Profile,
        *,
        validation_delay_s: float,
        seed: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.validation_delay_s = validation_delay_s
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.faults = Faults()
        self.clients: dict[str, Any] = {}
        self.jtis: set[str] = set()
        self.tokens: dict[str, tuple[str, float]] = {}
        self.registrations: dict[int, SimRegistration] = {}
        self._by_place: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._by_key: dict[tuple[str, ...], list[int]] = defaultdict(list)
        self._due: list[tuple[float, int]] = []
        self.next_id = 17_000
        self.throttles: list[Throttle] = []
        self.arrivals: list[tuple[str, float]] = []
        self.stats: Counter[str] = Counter()
        self.api_requests = 0
        # Reference data for validation; None = "everything is known and fine".
        self.dows: dict[str, set[str]] | None = None
        self.known_ssins: set[str] | None = None
        self.dimona_not_ok: set[tuple[str, str]] = set()
        self.rejected: dict[str, str] = {}  # INSS -> the remark its registrations get

    # ------------------------------------------------------------------ validation

    def settle(self, now: float | None = None) -> None:
        """Turn due pending registrations into a final validity (call with the lock held)."""
        now = self.clock() if now is None else now
        while self._due and self._due[0][0] <= now:
            _, reg_id = heapq.heappop(self._due)
            reg = self.registrations[reg_id]
            reg.remarks = self._remarks(reg)
            validity = self.profile.validity
            reg.validity = validity.invalid if reg.remarks else validity.valid
            self.stats[f"validated.{reg.validity}"] += 1

    def _remarks(self, reg: SimRegistration) -> list[str]:
        item, remarks = reg.item, []
        dow, employer, ssin = (
            item["contractualRelationshipReference"],
            employer_key(item["employer"]),
            item["ssin"],
        )
        if self.dows is not None:
            if dow not in self.dows:
                remarks.append(REMARK_DOW_UNKNOWN)
            elif employer not in self.dows[dow]:
                remarks.append(REMARK_EMPLOYER_NOT_ON_DOW)
        if self.known_ssins is not None and ssin not in self.known_ssins:
            remarks.append(REMARK_INSS_UNKNOWN)
        if (ssin, employer) in self.dimona_not_ok:
            remarks.append(REMARK_DIMONA)
        if ssin in self.rejected and self.rejected[ssin] not in remarks:
            remarks.append(self.rejected[ssin])
        if self._by_key[reg.key][0] != reg.id:
            remarks.append(REMARK_DUPLICATE)
        return remarks

    def create(self, item: dict[str, Any], client_id: str) -> SimRegistration:
        now = self.clock()
        reg = SimRegistration(
            id=self.next_id,
            item=item,
            client_id=client_id,
            created_at=now,
            validate_at=now + self.validation_delay_s,
            validity=self.profile.validity.pending,
        )
        self.next_id += 1
        self.registrations[reg.id] = reg
        self._by_key[reg.key].append(reg.id)
        self._by_place[
            (employer_key(item["employer"]), item["contractualRelationshipReference"])
        ].append(reg.id)
        heapq.heappush(self._due, (reg.validate_at, reg.id))
        self.stats["registrations"] += 1
        return reg

    def search(self, employer: str, workplace: str) -> Iterable[SimRegistration]:
        return (self.registrations[i] for i in self._by_place.get((employer, workplace), ()))
