"""The gateway's registry of terminals: who may speak, with which keys, for which workplace.

A terminal is known by its id, bound to exactly one workplace (a Declaration of Works
reference), and holds one or more public keys named by ``kid``. Keys are never deleted: a
rotated or compromised key gets ``revoked_at`` so old evidence still verifies offline while new
events signed with it are refused. Rebinding a terminal to another workplace is explicit and
leaves an audit row (DESIGN decision 6).

The registry lives in the gateway database (:mod:`siteclock.gateway.db`), next to ``inbox``.

Example::

    reg = TerminalRegistry(db_path)
    reg.register("t-hall-01", "1Y1003SQ5VSSZ", public_key=signer.public_key_bytes())
    reg.get("t-hall-01").keys      # {kid: public key bytes} of keys not revoked
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from siteclock.gateway.db import OnGatewayDB
from siteclock.protocol import ALGORITHMS, ClockProof, check_terminal_id, check_workplace, key_id

ACTIVE = "active"
DISABLED = "disabled"


@dataclass(frozen=True)
class TerminalKey:
    kid: str
    alg: str
    public_key: bytes
    valid_from_ns: int
    revoked_at_ns: int | None = None


@dataclass(frozen=True)
class TerminalRecord:
    terminal_id: str
    workplace: str
    status: str
    all_keys: tuple[TerminalKey, ...] = field(default=())

    @property
    def keys(self) -> dict[str, bytes]:
        """Keys that may sign new events: ``{kid: public key}`` for every key not revoked."""
        return {k.kid: k.public_key for k in self.all_keys if k.revoked_at_ns is None}

    @property
    def revoked_kids(self) -> frozenset[str]:
        return frozenset(k.kid for k in self.all_keys if k.revoked_at_ns is not None)


@dataclass(frozen=True)
class SyncPoint:
    """One synced clock reading of a terminal's boot: ``wall_ns`` was true at ``boot_ns``.

    With it the gateway dates a tap taken earlier in the same boot with an unsynced clock:
    ``wall_ns - (boot_ns - event.boot_ns)`` (docs/protocol.md, "Clock correction").
    """

    terminal_id: str
    boot_id: str
    wall_ns: int
    boot_ns: int
    maxerror_us: int
    received_ns: int


class TerminalRegistry(OnGatewayDB):
    """Terminals and their keys on the gateway database; safe to share between threads."""

    def _audit(self, terminal: str, action: str, **detail: Any) -> None:
        self.db.audit_terminal(terminal, action, json.dumps(detail, sort_keys=True), time.time_ns())

    def register(
        self,
        terminal_id: str,
        workplace: str,
        *,
        public_key: bytes,
        alg: str = "ed25519",
        valid_from_ns: int | None = None,
    ) -> str:
        """Add a terminal bound to ``workplace`` with its first public key. Returns the kid."""
        check_terminal_id(terminal_id)
        check_workplace(workplace)
        now = time.time_ns()
        with self.db.atomic():
            self.db.add_terminal(terminal_id, workplace, ACTIVE, now)
            kid = self._add_key(terminal_id, public_key, alg, valid_from_ns or now)
            self._audit(terminal_id, "register", workplace=workplace, kid=kid)
        return kid

    def _add_key(self, terminal_id: str, public_key: bytes, alg: str, valid_from_ns: int) -> str:
        if alg not in ALGORITHMS:
            raise ValueError(f"unknown signature algorithm {alg!r}")
        kid = key_id(public_key)
        self.db.add_terminal_key(terminal_id, kid, alg, public_key, valid_from_ns)
        return kid

    def add_key(self, terminal_id: str, public_key: bytes, *, alg: str = "ed25519") -> str:
        """Rotation: a second key, valid from now; revoke the old one when the overlap ends."""
        with self.db.atomic():
            kid = self._add_key(terminal_id, public_key, alg, time.time_ns())
            self._audit(terminal_id, "add_key", kid=kid)
        return kid

    def revoke_key(self, terminal_id: str, kid: str) -> None:
        with self.db.atomic():
            self.db.revoke_terminal_key(terminal_id, kid, time.time_ns())
            self._audit(terminal_id, "revoke_key", kid=kid)

    def rebind(self, terminal_id: str, workplace: str, *, reason: str) -> None:
        """Move a terminal to another workplace: explicit, with a reason in the audit trail."""
        check_workplace(workplace)
        with self.db.atomic():
            old = self.db.terminal(terminal_id)
            if old is None:
                raise KeyError(terminal_id)
            self.db.set_terminal_workplace(terminal_id, workplace)
            self._audit(terminal_id, "rebind", old=old[0], new=workplace, reason=reason)

    def set_status(self, terminal_id: str, status: str) -> None:
        """``active`` or ``disabled`` (a disabled terminal's events are refused)."""
        if status not in (ACTIVE, DISABLED):
            raise ValueError(f"status must be {ACTIVE!r} or {DISABLED!r}")
        with self.db.atomic():
            self.db.set_terminal_status(terminal_id, status)
            self._audit(terminal_id, "status", status=status)

    def record_heartbeat(
        self, terminal_id: str, status: dict[str, Any], *, proof: ClockProof | None = None
    ) -> None:
        """Keep the last heartbeat a terminal published (for the dashboard).

        Only a verified, signed :class:`ClockProof` (the caller checked its signature) becomes
        the sync point of its boot (see :meth:`sync_point`): the heartbeat's own JSON fields are
        unsigned, and anyone holding the terminal's broker password could otherwise move the
        boot's unsynced taps in time.
        """
        self.record_heartbeats([(terminal_id, status, proof)])

    def record_heartbeats(
        self, beats: Sequence[tuple[str, dict[str, Any], ClockProof | None]]
    ) -> None:
        """:meth:`record_heartbeat` for many ``(terminal, status, proof)``, in order."""
        now = time.time_ns()
        self.db.record_heartbeats([
            (terminal_id, json.dumps(status, sort_keys=True), now,
             None if proof is None or proof.terminal_id != terminal_id
             else (proof.boot_id, proof.wall_ns, proof.boot_ns, proof.maxerror_us))
            for terminal_id, status, proof in beats
        ])  # fmt: skip

    def sync_point(self, terminal_id: str, boot_id: str) -> SyncPoint | None:
        """The latest synced clock reading of one boot of a terminal, if it sent one."""
        row = self.db.sync_point(terminal_id, boot_id)
        return SyncPoint(terminal_id, boot_id, *row) if row else None

    def last_heartbeat(self, terminal_id: str) -> dict[str, Any] | None:
        text = self.db.last_heartbeat(terminal_id)
        return json.loads(text) if text else None

    def last_heard(self, terminal_id: str) -> int | None:
        """When the terminal's last heartbeat arrived (ns), or None if it never sent one."""
        return self.db.last_heard_ns(terminal_id)

    def has_events(self, terminal_id: str) -> bool:
        """Whether any event of the terminal reached the inbox (it has a history to keep)."""
        return self.db.count_events(terminal_id) > 0

    def replace_keys(
        self, terminal_id: str, public_key: bytes, *, alg: str = "ed25519", reason: str
    ) -> str:
        """Re-enrolment of a terminal that never recorded an event: every old key is revoked
        (kept, as keys always are), the new one added, the reason audited. Returns the kid."""
        with self.db.atomic():
            found = self.db.terminal(terminal_id)
            if found is None:
                raise KeyError(terminal_id)
            now = time.time_ns()
            old = [k[0] for k in found[2] if k[4] is None]
            for kid in old:
                self.db.revoke_terminal_key(terminal_id, kid, now)
            kid = self._add_key(terminal_id, public_key, alg, now)
            self._audit(terminal_id, "re-enrol", kid=kid, revoked=old, reason=reason)
        return kid

    def get(self, terminal_id: str) -> TerminalRecord | None:
        found = self.db.terminal(terminal_id)
        if found is None:
            return None
        workplace, status, keys = found
        return TerminalRecord(
            terminal_id,
            workplace,
            status,
            tuple(TerminalKey(k[0], k[1], bytes(k[2]), k[3], k[4]) for k in keys),
        )

    def key_count(self, terminal_id: str) -> int:
        """How many keys the terminal has ever had: it grows with every key added, so a
        cached record whose ``all_keys`` is shorter is stale (see the intake's key refresh)."""
        return self.db.terminal_key_count(terminal_id)

    def ids(self) -> list[str]:
        return self.db.terminal_ids()

    def active_places(self) -> list[tuple[str, str]]:
        """``(terminal id, workplace)`` of every active terminal, in one query."""
        return self.db.terminal_places(ACTIVE)
