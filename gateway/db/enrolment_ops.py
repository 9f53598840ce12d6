"""Operations of terminal enrolment (tokens, the locations terminals offered that were not
applied) and of badge enrolment (claiming an unknown-badge tap before the relay sends it)."""

from __future__ import annotations

from typing import Any

from siteclock.gateway.db.core import SQLiteCore

_TOKEN = (
    "SELECT token_hash, workplace, created_ns, expires_ns, created_by, note, used_ns, used_by "
    "FROM enrol_tokens"
)


class EnrolmentOps(SQLiteCore):
    # ------------------------------------------------------------------ enrolment tokens

    def add_token(
        self, token_hash: str, workplace: str, created_ns: int, expires_ns: int,
        created_by: str, note: str,
    ) -> None:  # fmt: skip
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO enrol_tokens(token_hash, workplace, created_ns, expires_ns, "
                "created_by, note) VALUES (?,?,?,?,?,?)",
                (token_hash, workplace, created_ns, expires_ns, created_by, note),
            )

    def token(self, token_hash: str) -> tuple[Any, ...] | None:
        """``(token_hash, workplace, created_ns, expires_ns, created_by, note, used_ns,
        used_by)`` of one token."""
        with self.reading() as conn:
            return conn.execute(_TOKEN + " WHERE token_hash = ?", (token_hash,)).fetchone()

    def tokens(self) -> list[tuple[Any, ...]]:
        """Every token as :meth:`token` gives it, oldest first."""
        with self.reading() as conn:
            return conn.execute(_TOKEN + " ORDER BY created_ns").fetchall()

    def revoke_token(self, token_hash: str, at_ns: int, by: str) -> bool:
        """Revoke an unused token: it expires now; False when it was used or revoked already."""
        with self._writing() as conn:
            return (
                conn.execute(
                    "UPDATE enrol_tokens SET revoked_ns=?, revoked_by=?, "
                    "expires_ns=min(expires_ns, ?) "
                    "WHERE token_hash=? AND used_ns IS NULL AND revoked_ns IS NULL",
                    (at_ns, by, at_ns, token_hash),
                ).rowcount
                == 1
            )

    def token_revocations(self) -> dict[str, int]:
        """``{token hash: revoked_ns}`` of every revoked token."""
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT token_hash, revoked_ns FROM enrol_tokens WHERE revoked_ns IS NOT NULL"
            ).fetchall()
        return dict(rows)

    def token_claim(self, token_hash: str) -> tuple[Any, ...] | None:
        """``(workplace, expires_ns, used_ns, used_by, used_kid)``: what a claim is judged on."""
        with self.reading() as conn:
            return conn.execute(
                "SELECT workplace, expires_ns, used_ns, used_by, used_kid FROM enrol_tokens "
                "WHERE token_hash = ?",
                (token_hash,),
            ).fetchone()

    def claim_token(self, token_hash: str, terminal_id: str, kid: str, at_ns: int) -> bool:
        """Mark an unused token used by (terminal, key); False when it was used already."""
        with self._writing() as conn:
            return (
                conn.execute(
                    "UPDATE enrol_tokens SET used_ns=?, used_by=?, used_kid=? "
                    "WHERE token_hash=? AND used_ns IS NULL",
                    (at_ns, terminal_id, kid, token_hash),
                ).rowcount
                == 1
            )

    def record_location_conflict(
        self, workplace: str, terminal_id: str, at_ns: int, latitude: float | None,
        longitude: float | None, address: str | None,
    ) -> None:  # fmt: skip
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO enrol_location_conflicts VALUES (?,?,?,?,?,?)",
                (workplace, terminal_id, at_ns, latitude, longitude, address),
            )

    def location_conflicts(self, workplace: str) -> list[tuple[Any, ...]]:
        """``(terminal_id, at_ns, latitude, longitude, address JSON)``, oldest first."""
        with self.reading() as conn:
            return conn.execute(
                "SELECT terminal_id, at_ns, latitude, longitude, address "
                "FROM enrol_location_conflicts WHERE workplace = ? ORDER BY at_ns",
                (workplace,),
            ).fetchall()

    # ------------------------------------------------------------------ badge enrolment

    def next_unknown_badge_tap(
        self, terminal_id: str, since_ns: int, flag_like: str
    ) -> tuple[int, str] | None:
        """``(seq, badge)`` of the first tap of ``terminal_id`` received since ``since_ns``
        whose flags match ``flag_like`` (the unknown-badge flag)."""
        with self.reading() as conn:
            return conn.execute(
                "SELECT seq, badge FROM inbox WHERE terminal=? AND received_ns>=? AND flags LIKE ? "
                "ORDER BY seq LIMIT 1",
                (terminal_id, since_ns, flag_like),
            ).fetchone()

    def claim_tap(
        self, terminal_id: str, seq: int, state: str, note: str, claimable: tuple[str, ...],
        at_ns: int,
    ) -> str:  # fmt: skip
        """Put the relay row of a tap in ``state`` (with ``note`` as its last error) unless
        the relay has moved it past ``claimable``; returns the row's state afterwards."""
        marks = ",".join("?" * len(claimable))
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO registrations(terminal, seq, state, last_error, created_ns, "
                "updated_ns) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(terminal, seq) DO UPDATE SET state=excluded.state, "
                "last_error=excluded.last_error, updated_ns=excluded.updated_ns "
                f"WHERE state IN ({marks})",
                (terminal_id, seq, state, note, at_ns, at_ns, *claimable),
            )
            (found,) = conn.execute(
                "SELECT state FROM registrations WHERE terminal=? AND seq=?", (terminal_id, seq)
            ).fetchone()
        return str(found)
