"""Operations on the worker registry: workers (INSS sealed by the caller), badges, workplaces,
assignments, and the version every change bumps so the relay retries what it could not resolve.
"""

from __future__ import annotations

from typing import Any

from siteclock.gateway.db.core import SQLiteCore

_WORKER = "SELECT w.ref, w.name, w.inss_enc, w.employer_id, w.employer_kind, w.capacity "


class RegistryOps(SQLiteCore):
    def _registry_change(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._writing() as conn:
            conn.execute(sql, args)
            conn.execute("UPDATE reg_meta SET value=value+1 WHERE key='version'")

    def save_worker(
        self, ref: str, name: str, sealed_inss: bytes, employer_id: str, employer_kind: str,
        capacity: str,
    ) -> None:  # fmt: skip
        """Add or update a worker (the INSS arrives sealed: this layer never sees it)."""
        self._registry_change(
            "INSERT INTO reg_workers VALUES (?,?,?,?,?,?) ON CONFLICT(ref) DO UPDATE SET "
            "name=excluded.name, inss_enc=excluded.inss_enc, employer_id=excluded.employer_id, "
            "employer_kind=excluded.employer_kind, capacity=excluded.capacity",
            (ref, name, sealed_inss, employer_id, employer_kind, capacity),
        )

    def link_badge(self, badge: str, worker_ref: str) -> None:
        """Link (or re-link and unblock) a badge to a worker."""
        self._registry_change(
            "INSERT INTO reg_badges VALUES (?,?,1) ON CONFLICT(badge) DO UPDATE SET "
            "worker_ref=excluded.worker_ref, active=1",
            (badge, worker_ref),
        )

    def block_badge(self, badge: str) -> None:
        self._registry_change("UPDATE reg_badges SET active=0 WHERE badge=?", (badge,))

    def save_workplace(
        self, ref: str, latitude: float | None, longitude: float | None, address: str | None
    ) -> None:
        """Add or replace a workplace (``address`` is JSON text)."""
        self._registry_change(
            "INSERT OR REPLACE INTO reg_workplaces VALUES (?,?,?,?)",
            (ref, latitude, longitude, address),
        )

    def assign_worker(self, worker_ref: str, workplace: str) -> None:
        self._registry_change(
            "INSERT OR IGNORE INTO reg_assignments VALUES (?,?)", (worker_ref, workplace)
        )

    def _registry_one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        with self.reading() as conn:
            return conn.execute(sql, args).fetchone()

    def registry_version(self) -> int:
        return int(self._registry_one("SELECT value FROM reg_meta WHERE key='version'")[0])

    def worker_exists(self, ref: str) -> bool:
        return self._registry_one("SELECT 1 FROM reg_workers WHERE ref=?", (ref,)) is not None

    def worker_row(self, ref: str) -> tuple[Any, ...] | None:
        """``(ref, name, sealed INSS, employer id, employer kind, capacity)`` of a worker."""
        return self._registry_one(_WORKER + "FROM reg_workers w WHERE w.ref=?", (ref,))

    def worker_row_of_badge(self, badge: str) -> tuple[Any, ...] | None:
        """:meth:`worker_row` of the worker behind an active badge."""
        return self._registry_one(
            _WORKER + "FROM reg_badges b JOIN reg_workers w ON w.ref=b.worker_ref "
            "WHERE b.badge=? AND b.active=1",
            (badge,),
        )

    def badge_active(self, badge: str) -> bool | None:
        """Whether an enrolled badge is active; None when it is not enrolled."""
        row = self._registry_one("SELECT active FROM reg_badges WHERE badge=?", (badge,))
        return None if row is None else bool(row[0])

    def workplace_row(self, ref: str) -> tuple[Any, ...] | None:
        """``(ref, latitude, longitude, address JSON)``."""
        return self._registry_one("SELECT * FROM reg_workplaces WHERE ref=?", (ref,))

    def roster_rows(self, workplace: str) -> list[tuple[str, str, str, int]]:
        """``(badge, worker ref, name, active)`` of the workers assigned to ``workplace``."""
        with self.reading() as conn:
            return conn.execute(
                "SELECT b.badge, w.ref, w.name, b.active FROM reg_assignments a "
                "JOIN reg_workers w ON w.ref=a.worker_ref JOIN reg_badges b ON b.worker_ref=w.ref "
                "WHERE a.workplace=? ORDER BY b.badge",
                (workplace,),
            ).fetchall()

    # ------------------------------------------------------------------ employer's daily work

    def unblock_badge(self, badge: str) -> bool:
        """Make a blocked badge active again; False when the badge is not enrolled."""
        with self._writing() as conn:
            changed = conn.execute(
                "UPDATE reg_badges SET active=1 WHERE badge=?", (badge,)
            ).rowcount
            if changed:
                conn.execute("UPDATE reg_meta SET value=value+1 WHERE key='version'")
        return bool(changed)

    def unassign_worker(self, worker_ref: str, workplace: str) -> None:
        self._registry_change(
            "DELETE FROM reg_assignments WHERE worker_ref=? AND workplace=?",
            (worker_ref, workplace),
        )

    def assigned_workers(self, workplace: str) -> list[str]:
        """The references of the workers on ``workplace``'s roster (with a badge or not)."""
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT worker_ref FROM reg_assignments WHERE workplace=? ORDER BY worker_ref",
                (workplace,),
            ).fetchall()
        return [r[0] for r in rows]

    def worker_listing(self, workplace: str | None) -> list[tuple[Any, ...]]:
        """``(ref, name, employer id, capacity, badge or None, active or None)`` of every
        worker (on ``workplace`` when given), one row per badge, a worker without a badge once."""
        where, args = ("", ()) if workplace is None else (
            "WHERE w.ref IN (SELECT worker_ref FROM reg_assignments WHERE workplace=?) ",
            (workplace,),
        )  # fmt: skip
        with self.reading() as conn:
            return conn.execute(
                "SELECT w.ref, w.name, w.employer_id, w.capacity, b.badge, b.active "
                "FROM reg_workers w LEFT JOIN reg_badges b ON b.worker_ref=w.ref "
                + where
                + "ORDER BY w.name, w.ref, b.badge",
                args,
            ).fetchall()

    def workplaces_of(self, worker_ref: str) -> list[str]:
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT workplace FROM reg_assignments WHERE worker_ref=? ORDER BY workplace",
                (worker_ref,),
            ).fetchall()
        return [r[0] for r in rows]

    def unfinished_taps_of_worker(self, worker_ref: str, finished: tuple[str, ...]) -> int:
        """Taps of the worker's badges that the relay has not finished with (no registration
        yet, or one in a state outside ``finished``): removing the worker would strand them."""
        marks = ",".join("?" * len(finished))
        return int(self._registry_one(
            "SELECT COUNT(*) FROM inbox i LEFT JOIN registrations r "
            "ON r.terminal=i.terminal AND r.seq=i.seq "
            "WHERE i.badge IN (SELECT badge FROM reg_badges WHERE worker_ref=?) "
            f"AND (r.state IS NULL OR r.state NOT IN ({marks}))",
            (worker_ref, *finished),
        )[0])  # fmt: skip

    def delete_worker(self, worker_ref: str) -> bool:
        """Delete a worker, their badges and assignments (one transaction); False if unknown."""
        with self._writing() as conn:
            conn.execute("DELETE FROM reg_badges WHERE worker_ref=?", (worker_ref,))
            conn.execute("DELETE FROM reg_assignments WHERE worker_ref=?", (worker_ref,))
            gone = conn.execute("DELETE FROM reg_workers WHERE ref=?", (worker_ref,)).rowcount
            conn.execute("UPDATE reg_meta SET value=value+1 WHERE key='version'")
        return bool(gone)
