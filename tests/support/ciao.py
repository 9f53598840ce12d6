"""Test helpers for the CIaO client, simulator, registry and relay: keys, identifiers, wiring."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from siteclock.gateway.ciao.client import CiaoClient, Timeouts
from siteclock.gateway.ciao.environments import for_local_sim
from siteclock.gateway.ciao.policy import PolicyConfig
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.identifiers import enterprise_check_digits, inss_check_digits
from siteclock.gateway.registry import Registry
from tests.support.waiting import wait_until

CLIENT_ID = "self_service_chaman_12345_test"
FAST_POLICY = PolicyConfig(
    max_attempts=6, max_delay_s=30, initial_wait_s=0.05, max_wait_s=0.5, jitter_s=0.05
)


@functools.cache
def rsa_pair(name: str = "client") -> tuple[bytes, bytes]:
    """(private PEM, public PEM); cached per name because RSA generation is slow-ish."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def write_private_key(path: Path, pem: bytes) -> Path:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return path


def make_inss(n: int, *, born_2000: bool = False) -> str:
    """A valid INSS: birth date 1990-01-01 (or 2001-01-01) with serial ``n`` (1..997)."""
    first9 = ("010101" if born_2000 else "900101") + f"{n:03d}"
    return first9 + inss_check_digits(first9, born_2000_or_later=born_2000)


def make_enterprise(n: int) -> str:
    first8 = f"0{n + 2000000:07d}"
    return first8 + enterprise_check_digits(first8)


WORKPLACE = "1Y1003SQ5VSSZ"


def client_for(
    url: str,
    *,
    private_pem: bytes | None = None,
    read_s: float = 2.0,
    policy: PolicyConfig = FAST_POLICY,
) -> CiaoClient:
    return CiaoClient(
        for_local_sim(url),
        client_id=CLIENT_ID,
        private_key_pem=private_pem or rsa_pair()[0],
        timeouts=Timeouts(connect_s=1.0, read_s=read_s),
        policy=policy,
    )


@dataclass(frozen=True)
class Person:
    worker_ref: str
    badge: str
    inss: str
    employer: str


def populate(
    registry: Registry, workers: int, *, employers: int = 3, workplace: str = WORKPLACE
) -> list[Person]:
    """Workers with badges at one workplace, spread over a few employers."""
    registry.add_workplace(workplace, latitude=50.85, longitude=4.35)
    people = []
    for i in range(workers):
        person = Person(
            f"w-{i}", f"nfc-a:{i + 1:08X}", make_inss(i + 1), make_enterprise(i % employers)
        )
        registry.add_worker(
            person.worker_ref, f"Worker {i}", inss=person.inss, employer=person.employer
        )
        registry.enrol_badge(person.badge, person.worker_ref)
        registry.assign(person.worker_ref, workplace)
        people.append(person)
    return people


# --------------------------------------------------------------------------- relay world

FAST_RELAY = dict(
    idle_s=0.02,
    poll_interval_s=0.1,
    ambiguous_settle_s=0.2,
    rescan_s=5.0,
    backoff=PolicyConfig(initial_wait_s=0.05, max_wait_s=0.5),
)


@contextmanager
def running_sim(**options: Any) -> Iterator[SimServer]:
    """A CIaO simulator (``options`` as :class:`SimServer` takes them) that knows the test
    client: ``CLIENT_ID`` with the public half of :func:`rsa_pair`."""
    with SimServer(**options) as server:
        server.register_client(CLIENT_ID, rsa_pair()[1])
        yield server


@dataclass
class World:
    """A gateway database (inbox + registry + relay tables), a simulator and a relay."""

    db: Path | str
    registry: Registry
    people: list[Person]
    sim: object
    relay: object
    verdicts: list[tuple[str, object]]

    def run_until_state(self, terminal: str, seq: int, state: str, timeout: float = 5.0) -> bool:
        """Turn the relay until the row ``(terminal, seq)`` is in ``state``; False if it is not
        by ``timeout`` (the caller's assertions then say what it is in)."""

        def reached() -> bool:
            self.relay.run_once()  # type: ignore[attr-defined]
            return self.relay.store.get(terminal, seq)["state"] == state  # type: ignore[attr-defined]

        return wait_until(reached, timeout, interval=0.02)

    def run_until_final(self, timeout: float = 20.0) -> None:
        """Turn the relay until every stored event has a delivered final verdict."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.relay.run_once()  # type: ignore[attr-defined]
            counts = self.relay.store.counts()  # type: ignore[attr-defined]
            total = sum(counts.values())
            final = sum(counts.get(s, 0) for s in ("registered", "rejected", "refused"))
            notified = self.relay.store.db.count_notified()  # type: ignore[attr-defined]
            if total and final == total and notified == total:
                return
            time.sleep(0.02)
        raise AssertionError(f"not final after {timeout}s: {self.relay.store.counts()}")  # type: ignore[attr-defined]


def make_world(
    tmp_path: Path,
    sim: object,
    *,
    workers: int = 10,
    read_s: float = 1.0,
    policy: PolicyConfig = FAST_POLICY,
    db: Path | str | None = None,
    **relay_options: object,
) -> World:
    """``db``: the gateway database (a PostgreSQL URL...); a SQLite file in ``tmp_path`` by
    default."""
    from siteclock.gateway.relay import Relay, RelayConfig
    from tests.support.inbox import create_inbox

    db = db or tmp_path / "gateway.db"
    create_inbox(db)
    registry = Registry(db, tmp_path / "inss.key")
    people = populate(registry, workers)
    verdicts: list[tuple[str, object]] = []
    client = client_for(sim.url, read_s=read_s, policy=policy)  # type: ignore[attr-defined]
    config = RelayConfig(**{**FAST_RELAY, **relay_options})  # type: ignore[arg-type]
    relay = Relay(
        db,
        client,
        registry,
        config=config,
        on_verdict=lambda terminal, verdict: verdicts.append((terminal, verdict)),
    )
    return World(db, registry, people, sim, relay, verdicts)


def exactly_once_report(records: list[dict[str, Any]]) -> tuple[int, list[tuple[str, ...]]]:
    """(registrations, duplicated keys) from the simulator's own record."""
    keys: dict[tuple[str, ...], int] = {}
    for r in records:
        key = (
            r["ssin"],
            json.dumps(r["employer"], sort_keys=True),
            r["contractualRelationshipReference"],
            r["type"],
            r["registrationDate"],
        )
        keys[key] = keys.get(key, 0) + 1
    return len(records), [k for k, n in keys.items() if n > 1]
