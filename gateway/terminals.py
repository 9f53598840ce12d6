"""The gateway's registry of terminals: who may speak, with which keys, for which workplace.

A terminal is known by its id, bound to exactly one workplace (a Declaration of Works
reference), and holds one or more public keys named by ``kid``. Keys are never deleted: a
rotated or compromised key gets ``revoked_at`` so old evidence still verifies offline while new
events signed with it are refused. Rebinding a terminal to another workplace is explicit and
leaves an audit row (DESIGN decision 6).

The registry lives in the gateway's SQLite file (its own tables next to ``inbox``).

Example::

    reg = TerminalRegistry(db_path)
    reg.register("t-hall-01", "1Y1003SQ5VSSZ", public_key=signer.public_key_bytes())
    reg.get("t-hall-01").keys      # {kid: public key bytes} of keys not revoked
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siteclock import sqlite
from siteclock.protocol import ALGORITHMS, ClockProof, check_terminal_id, check_workplace, key_id

_SCHEMA = """
CREATE TABLE IF NOT EXISTS terminals(
  id TEXT PRIMARY KEY, workplace TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'active',
  registered_ns INTEGER NOT NULL, last_status TEXT, last_status_ns INTEGER);
CREATE TABLE IF NOT EXISTS terminal_keys(
  terminal TEXT NOT NULL REFERENCES terminals(id), kid TEXT NOT NULL, alg TEXT NOT NULL,
  public_key BLOB NOT NULL, valid_from_ns INTEGER NOT NULL, revoked_at_ns INTEGER,
  PRIMARY KEY (terminal, kid));
CREATE TABLE IF NOT EXISTS terminal_audit(
  at_ns INTEGER NOT NULL, terminal TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clock_sync(
  terminal TEXT NOT NULL, boot_id TEXT NOT NULL, wall_ns INTEGER NOT NULL,
  boot_ns INTEGER NOT NULL, maxerror_us INTEGER NOT NULL, received_ns INTEGER NOT NULL,
  PRIMARY KEY (terminal, boot_id));
"""

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


class TerminalRegistry:
    """Terminals and their keys in SQLite; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite.connect(self.path, schema=_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _audit(self, terminal: str, action: str, **detail: Any) -> None:
        self._conn.execute(
            "INSERT INTO terminal_audit VALUES (?, ?, ?, ?)",
            (time.time_ns(), terminal, action, json.dumps(detail, sort_keys=True)),
        )

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
        with self._lock, sqlite.immediate(self._conn):
            self._conn.execute(
                "INSERT INTO terminals(id, workplace, status, registered_ns) VALUES (?,?,?,?)",
                (terminal_id, workplace, ACTIVE, now),
            )
            kid = self._add_key(terminal_id, public_key, alg, valid_from_ns or now)
            self._audit(terminal_id, "register", workplace=workplace, kid=kid)
        return kid

    def _add_key(self, terminal_id: str, public_key: bytes, alg: str, valid_from_ns: int) -> str:
        if alg not in ALGORITHMS:
            raise ValueError(f"unknown signature algorithm {alg!r}")
        kid = key_id(public_key)
        self._conn.execute(
            "INSERT INTO terminal_keys(terminal, kid, alg, public_key, valid_from_ns) "
            "VALUES (?,?,?,?,?)",
            (terminal_id, kid, alg, bytes(public_key), valid_from_ns),
        )
        return kid

    def add_key(self, terminal_id: str, public_key: bytes, *, alg: str = "ed25519") -> str:
        """Rotation: a second key, valid from now; revoke the old one when the overlap ends."""
        with self._lock, sqlite.immediate(self._conn):
            kid = self._add_key(terminal_id, public_key, alg, time.time_ns())
            self._audit(terminal_id, "add_key", kid=kid)
        return kid

    def revoke_key(self, terminal_id: str, kid: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE terminal_keys SET revoked_at_ns = ? "
                "WHERE terminal = ? AND kid = ? AND revoked_at_ns IS NULL",
                (time.time_ns(), terminal_id, kid),
            )
            self._audit(terminal_id, "revoke_key", kid=kid)

    def rebind(self, terminal_id: str, workplace: str, *, reason: str) -> None:
        """Move a terminal to another workplace: explicit, with a reason in the audit trail."""
        check_workplace(workplace)
        with self._lock:
            old = self._conn.execute(
                "SELECT workplace FROM terminals WHERE id = ?", (terminal_id,)
            ).fetchone()
            if old is None:
                raise KeyError(terminal_id)
            self._conn.execute(
                "UPDATE terminals SET workplace = ? WHERE id = ?", (workplace, terminal_id)
            )
            self._audit(terminal_id, "rebind", old=old[0], new=workplace, reason=reason)

    def set_status(self, terminal_id: str, status: str) -> None:
        """``active`` or ``disabled`` (a disabled terminal's events are refused)."""
        if status not in (ACTIVE, DISABLED):
            raise ValueError(f"status must be {ACTIVE!r} or {DISABLED!r}")
        with self._lock:
            self._conn.execute(
                "UPDATE terminals SET status = ? WHERE id = ?", (status, terminal_id)
            )
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
        now = time.time_ns()
        point = (
            None
            if proof is None or proof.terminal_id != terminal_id
            else (proof.boot_id, proof.wall_ns, proof.boot_ns, proof.maxerror_us)
        )
        with self._lock, sqlite.immediate(self._conn):
            self._conn.execute(
                "UPDATE terminals SET last_status = ?, last_status_ns = ? WHERE id = ?",
                (json.dumps(status, sort_keys=True), now, terminal_id),
            )
            if point is not None:
                boot_id, wall_ns, boot_ns, maxerror_us = point
                # The latest point of a boot wins: a later sync has the kernel's best estimate.
                # Heartbeats may arrive out of order (QoS 1 redelivery), hence the boot_ns test.
                self._conn.execute(
                    "INSERT INTO clock_sync VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT(terminal, boot_id) DO UPDATE SET wall_ns=excluded.wall_ns, "
                    "boot_ns=excluded.boot_ns, maxerror_us=excluded.maxerror_us, "
                    "received_ns=excluded.received_ns WHERE excluded.boot_ns >= boot_ns",
                    (terminal_id, boot_id, wall_ns, boot_ns, maxerror_us, now),
                )

    def sync_point(self, terminal_id: str, boot_id: str) -> SyncPoint | None:
        """The latest synced clock reading of one boot of a terminal, if it sent one."""
        with self._lock:
            row = self._conn.execute(
                "SELECT wall_ns, boot_ns, maxerror_us, received_ns FROM clock_sync "
                "WHERE terminal = ? AND boot_id = ?",
                (terminal_id, boot_id),
            ).fetchone()
        return SyncPoint(terminal_id, boot_id, *row) if row else None

    def last_heartbeat(self, terminal_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT last_status FROM terminals WHERE id = ?", (terminal_id,)
            ).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def get(self, terminal_id: str) -> TerminalRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT workplace, status FROM terminals WHERE id = ?", (terminal_id,)
            ).fetchone()
            if row is None:
                return None
            keys = self._conn.execute(
                "SELECT kid, alg, public_key, valid_from_ns, revoked_at_ns FROM terminal_keys "
                "WHERE terminal = ? ORDER BY valid_from_ns",
                (terminal_id,),
            ).fetchall()
        return TerminalRecord(
            terminal_id,
            row[0],
            row[1],
            tuple(TerminalKey(k[0], k[1], bytes(k[2]), k[3], k[4]) for k in keys),
        )

    def ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT id FROM terminals ORDER BY id")]
