"""Operations on the terminal registry: terminals, their keys, the audit trail, heartbeats and
the clock sync points the relay dates unsynced taps from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from siteclock.gateway.db.core import Core


class TerminalOps(Core):
    def add_terminal(self, terminal_id: str, workplace: str, status: str, at_ns: int) -> None:
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO terminals(id, workplace, status, registered_ns) VALUES (?,?,?,?)",
                (terminal_id, workplace, status, at_ns),
            )

    def add_terminal_key(
        self, terminal_id: str, kid: str, alg: str, public_key: bytes, valid_from_ns: int
    ) -> None:
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO terminal_keys(terminal, kid, alg, public_key, valid_from_ns) "
                "VALUES (?,?,?,?,?)",
                (terminal_id, kid, alg, bytes(public_key), valid_from_ns),
            )

    def audit_terminal(self, terminal_id: str, action: str, detail: str, at_ns: int) -> None:
        """One row of the terminal audit trail (``detail`` is JSON text)."""
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO terminal_audit VALUES (?, ?, ?, ?)",
                (at_ns, terminal_id, action, detail),
            )

    def revoke_terminal_key(self, terminal_id: str, kid: str, at_ns: int) -> None:
        with self._writing() as conn:
            conn.execute(
                "UPDATE terminal_keys SET revoked_at_ns = ? "
                "WHERE terminal = ? AND kid = ? AND revoked_at_ns IS NULL",
                (at_ns, terminal_id, kid),
            )

    def set_terminal_workplace(self, terminal_id: str, workplace: str) -> None:
        with self._writing() as conn:
            conn.execute(
                "UPDATE terminals SET workplace = ? WHERE id = ?", (workplace, terminal_id)
            )

    def set_terminal_status(self, terminal_id: str, status: str) -> None:
        with self._writing() as conn:
            conn.execute("UPDATE terminals SET status = ? WHERE id = ?", (status, terminal_id))

    def record_heartbeat(
        self,
        terminal_id: str,
        status: str,
        at_ns: int,
        point: tuple[str, int, int, int] | None = None,
    ) -> None:
        """Keep the last heartbeat (``status`` is JSON text) and, when given, the sync point
        ``(boot_id, wall_ns, boot_ns, maxerror_us)`` of its boot."""
        self.record_heartbeats([(terminal_id, status, at_ns, point)])

    def record_heartbeats(
        self, beats: Sequence[tuple[str, str, int, tuple[str, int, int, int] | None]]
    ) -> None:
        """:meth:`record_heartbeat` for many ``(terminal, status, at_ns, point)``, in order (a
        terminal's later heartbeat wins): two statements for all, not two each."""
        with self._writing() as conn:
            conn.executemany(
                "UPDATE terminals SET last_status = ?, last_status_ns = ? WHERE id = ?",
                [(status, at_ns, terminal) for terminal, status, at_ns, _ in beats],
            )
            points = [(t, *point, at_ns) for t, _, at_ns, point in beats if point is not None]
            if points:
                # The latest point of a boot wins: a later sync has the kernel's best estimate.
                # Heartbeats may arrive out of order (QoS 1 redelivery), hence the boot_ns test.
                conn.executemany(
                    "INSERT INTO clock_sync VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT(terminal, boot_id) DO UPDATE SET wall_ns=excluded.wall_ns, "
                    "boot_ns=excluded.boot_ns, maxerror_us=excluded.maxerror_us, "
                    "received_ns=excluded.received_ns WHERE excluded.boot_ns >= boot_ns",
                    points,
                )

    def sync_point(self, terminal_id: str, boot_id: str) -> tuple[int, int, int, int] | None:
        """``(wall_ns, boot_ns, maxerror_us, received_ns)`` of a boot's latest sync point."""
        with self.reading() as conn:
            return conn.execute(
                "SELECT wall_ns, boot_ns, maxerror_us, received_ns FROM clock_sync "
                "WHERE terminal = ? AND boot_id = ?",
                (terminal_id, boot_id),
            ).fetchone()

    def last_heartbeat(self, terminal_id: str) -> str | None:
        """The JSON text of the terminal's last heartbeat, if any."""
        with self.reading() as conn:
            row = conn.execute(
                "SELECT last_status FROM terminals WHERE id = ?", (terminal_id,)
            ).fetchone()
        return row[0] if row else None

    def last_heard_ns(self, terminal_id: str) -> int | None:
        """When the terminal's last heartbeat arrived, if one ever did."""
        with self.reading() as conn:
            row = conn.execute(
                "SELECT last_status_ns FROM terminals WHERE id = ?", (terminal_id,)
            ).fetchone()
        return row[0] if row else None

    def terminal(self, terminal_id: str) -> tuple[str, str, list[tuple[Any, ...]]] | None:
        """``(workplace, status, keys)``; keys as ``(kid, alg, public_key, valid_from_ns,
        revoked_at_ns)``, oldest first."""
        with self.reading() as conn:
            row = conn.execute(
                "SELECT workplace, status FROM terminals WHERE id = ?", (terminal_id,)
            ).fetchone()
            if row is None:
                return None
            keys = conn.execute(
                "SELECT kid, alg, public_key, valid_from_ns, revoked_at_ns FROM terminal_keys "
                "WHERE terminal = ? ORDER BY valid_from_ns",
                (terminal_id,),
            ).fetchall()
        return row[0], row[1], keys

    def terminal_key_count(self, terminal_id: str) -> int:
        """How many keys the terminal has ever had (revoked ones included). Keys are never
        deleted, so this only grows: a change tells a reader its copy of the keys is stale,
        whichever process added the key, for the price of one index lookup."""
        with self.reading() as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM terminal_keys WHERE terminal = ?", (terminal_id,)
            ).fetchone()
        return int(count)

    def terminal_places(self, status: str) -> list[tuple[str, str]]:
        """``(id, workplace)`` of every terminal in ``status``, in one query (the roster
        round reads the whole fleet this way, not with a query per terminal)."""
        with self.reading() as conn:
            return [
                (r[0], r[1])
                for r in conn.execute(
                    "SELECT id, workplace FROM terminals WHERE status = ? ORDER BY id", (status,)
                )
            ]

    def terminal_ids(self) -> list[str]:
        with self.reading() as conn:
            return [r[0] for r in conn.execute("SELECT id FROM terminals ORDER BY id")]
