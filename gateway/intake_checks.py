"""What the intake checks signatures with (each terminal's keys, cached) and the check itself,
split over two threads."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from siteclock.gateway.intake_limits import (
    KEY_REFRESH_S,
    KNOWN_TERMINAL_TTL_S,
    RATE_LIMITED,
    REGISTRY_TTL_S,
    VERIFY_SPLIT_MIN,
)
from siteclock.gateway.terminals import TerminalRecord, TerminalRegistry
from siteclock.protocol import ProtocolError, SignedEvent


@dataclass(frozen=True, slots=True)
class Verifier:
    """What checking one terminal's events needs, taken from its registry record once per
    cache period instead of once per message."""

    record: TerminalRecord
    keys: dict[str, bytes]
    revoked: frozenset[str]


SignatureJob = tuple[SignedEvent, dict[str, bytes], str]
"""An event to check, its terminal's usable keys, and the terminal's id."""


def signature_failures(jobs: list[SignatureJob], caps: dict[str, int]) -> list[str | None]:
    """For each job: None if its signature verifies with the key its envelope names, else the
    refusal reason. Once a terminal has had ``caps[terminal]`` failures here, its remaining
    events are not checked at all (``rate_limited``): what bounds a junk-signature flood
    within one group. Runs on any thread; touches no shared state."""
    reasons: list[str | None] = []
    failures: Counter[str] = Counter()
    for signed, keys, terminal in jobs:
        if failures[terminal] >= caps[terminal]:
            reasons.append(RATE_LIMITED)
            continue
        try:
            signed.envelope.verify(keys)
            reasons.append(None)
            continue
        except ProtocolError as exc:
            reasons.append(exc.reason)
        except Exception:  # noqa: BLE001 - a crypto library surprise refuses one event only
            reasons.append("bad_signature")
        failures[terminal] += 1
    return reasons


class VerifierCache:
    """Each terminal's registry entry and usable keys, cached for :data:`REGISTRY_TTL_S`: a
    revocation or rebinding takes effect within that time without a query per message."""

    def __init__(self, registry: TerminalRegistry) -> None:
        self.registry = registry
        self._cached: dict[str, tuple[float, Verifier | None]] = {}

    def get(self, terminal: str, *, max_age_s: float = REGISTRY_TTL_S) -> Verifier | None:
        """``max_age_s`` asks for a fresher entry (a key id the cache does not know)."""
        now = time.monotonic()
        cached = self._cached.get(terminal)
        if cached is not None and now - cached[0] < max_age_s:
            return cached[1]
        record = self.registry.get(terminal)
        verifier = None if record is None else Verifier(record, record.keys, record.revoked_kids)
        self._cached[terminal] = (now, verifier)
        return verifier

    def known(self, terminal: str) -> Verifier | None:
        """The entry of a terminal found in the registry within :data:`KNOWN_TERMINAL_TTL_S`,
        else :meth:`get`: for what only needs to know the terminal is registered."""
        read_at, verifier = self._cached.get(terminal, (0.0, None))
        if verifier is not None and time.monotonic() - read_at < KNOWN_TERMINAL_TTL_S:
            return verifier
        return self.get(terminal)

    def for_unknown_key(self, terminal: str) -> Verifier | None:
        """The entry to check a key id the cached one does not know: reread at once when the
        terminal has had a key added since it was read (whichever process added it, so an
        event signed by a just-registered key is accepted on its first arrival); otherwise
        at most every :data:`KEY_REFRESH_S`. A flood of made-up key ids thus costs one key
        count per message, and a full reread at most once a second."""
        cached = self._cached.get(terminal)
        if cached is not None and cached[1] is not None:
            known = len(cached[1].record.all_keys)
            if self.registry.key_count(terminal) != known:
                return self.get(terminal, max_age_s=0.0)
        return self.get(terminal, max_age_s=KEY_REFRESH_S)


class SignatureChecker:
    """Checks a group's signatures on two threads.

    cryptography releases the GIL while it checks an Ed25519 signature, so a group is split
    in two and a helper thread checks one half while the caller checks the other: on two
    cores verification takes half the wall time, and paho's thread keeps reading meanwhile.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake-verify")

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False)

    def check(self, jobs: list[SignatureJob], budget: dict[str, float]) -> list[str | None]:
        """The refusal reason of each signature (None: valid), in the order of ``jobs``.
        ``budget`` is each terminal's remaining budget: each half may fail at most half of it
        (at least one)."""
        if len(jobs) < VERIFY_SPLIT_MIN:
            return signature_failures(jobs, {t: max(1, int(n)) for t, n in budget.items()})
        caps = {t: max(1, int(n + 1) // 2) for t, n in budget.items()}
        half = len(jobs) // 2
        try:
            first = self._pool.submit(signature_failures, jobs[:half], caps)
        except RuntimeError:  # the pool is shut down (stopped intake): check them all here
            return signature_failures(jobs, {t: max(1, int(n)) for t, n in budget.items()})
        second = signature_failures(jobs[half:], caps)
        return first.result() + second
