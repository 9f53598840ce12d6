"""Operations of the employer's console: accounts and their worksites, sessions, the audit
trail, the registrations page (keyset pages, filters, scope) and a person's resolutions.

Passwords arrive hashed (Argon2, by :mod:`gateway.console.accounts`) and session tokens arrive
as their SHA-256: this layer never sees a secret. A worksite scope is a list of Declaration of
Works references, or ``None`` for every worksite (an administrator).
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from siteclock.gateway.db.core import SQLiteCore


@dataclass(frozen=True, slots=True)
class RegistrationFilter:
    """What the registrations page asks for; every field left ``None`` does not filter.

    ``scope``: the worksites the reader may see (``None``: all). ``before``: the keyset cursor,
    ``(wall_ns, terminal, seq)`` of the last row of the previous page (newest first)."""

    scope: Sequence[str] | None = None
    workplace: str | None = None
    worker: str | None = None
    employer: Sequence[str] | None = None
    """The employer as the relay stored it (the JSON object it sent): each text it may be."""
    state: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    before: tuple[int, str, int] | None = None


SORT_AT_MOST = 20_000
"""A state or employer filter matching at most this many rows is read through its own index
and sorted by time; one matching more is checked along the time-ordered walk instead (its rows
are dense there, so a page is found quickly). Counting stops at this bound: the choice costs
a few milliseconds however large the store."""

_REGISTRATION_COLUMNS = (
    "i.terminal, i.seq, i.workplace, i.kind, i.badge, i.wall_ns, i.flags, i.received_ns, "
    "r.state, r.ciao_id, r.validity, r.remarks, r.last_error, r.problem, r.worker_ref, "
    "r.employer, r.ciao_type, r.terminal_wall_ns, r.corrected_wall_ns, r.clock_note, "
    "c.comment AS resolution, c.username AS resolved_by, c.at_ns AS resolved_ns"
)
_REGISTRATION_FROM = (
    "FROM inbox i JOIN registrations r USING (terminal, seq) "
    "LEFT JOIN console_resolutions c USING (terminal, seq)"
)


class ConsoleOps(SQLiteCore):
    # ------------------------------------------------------------------ accounts

    def add_console_user(
        self, username: str, password_hash: str, role: str, worksites: Sequence[str],
        language: str, at_ns: int,
    ) -> None:  # fmt: skip
        """A new account (``sqlite3.IntegrityError`` when the name is taken)."""
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO console_users(username, password_hash, role, language, created_ns) "
                "VALUES (?,?,?,?,?)",
                (username, password_hash, role, language, at_ns),
            )
            conn.executemany(
                "INSERT INTO console_user_sites VALUES (?,?)", [(username, w) for w in worksites]
            )

    def console_user(self, username: str) -> tuple[Any, ...] | None:
        """``(username, password_hash, role, language, disabled, worksites)``."""
        with self.reading() as conn:
            row = conn.execute(
                "SELECT username, password_hash, role, language, disabled FROM console_users "
                "WHERE username=?",
                (username,),
            ).fetchone()
            if row is None:
                return None
            sites = [
                w for (w,) in conn.execute(
                    "SELECT workplace FROM console_user_sites WHERE username=? ORDER BY workplace",
                    (username,),
                )
            ]  # fmt: skip
        return (*row, sites)

    def console_users(self) -> list[tuple[Any, ...]]:
        """Every account as :meth:`console_user` has it, by name (without the hash: ``''``)."""
        with self.reading() as conn:
            names = [n for (n,) in conn.execute("SELECT username FROM console_users ORDER BY 1")]
        found = [self.console_user(name) for name in names]
        return [(r[0], "", *r[2:]) for r in found if r is not None]

    def set_console_user(
        self, username: str, *, password_hash: str | None = None, role: str | None = None,
        worksites: Sequence[str] | None = None, language: str | None = None,
        disabled: bool | None = None,
    ) -> bool:  # fmt: skip
        """Change what is given; False when there is no such account. A new password, a
        disabled account or other worksites end the account's open sessions."""
        with self._writing() as conn:
            if conn.execute(
                "SELECT 1 FROM console_users WHERE username=?", (username,)
            ).fetchone() is None:  # fmt: skip
                return False
            for column, value in (
                ("password_hash", password_hash), ("role", role), ("language", language),
                ("disabled", None if disabled is None else int(disabled)),
            ):  # fmt: skip
                if value is not None:
                    conn.execute(
                        f"UPDATE console_users SET {column}=? WHERE username=?", (value, username)
                    )
            if worksites is not None:
                conn.execute("DELETE FROM console_user_sites WHERE username=?", (username,))
                conn.executemany(
                    "INSERT INTO console_user_sites VALUES (?,?)",
                    [(username, w) for w in worksites],
                )
            if password_hash is not None or disabled or worksites is not None or role:
                conn.execute("DELETE FROM console_sessions WHERE username=?", (username,))
            return True

    def remove_console_user(self, username: str) -> bool:
        with self._writing() as conn:
            conn.execute("DELETE FROM console_sessions WHERE username=?", (username,))
            conn.execute("DELETE FROM console_user_sites WHERE username=?", (username,))
            return conn.execute(
                "DELETE FROM console_users WHERE username=?", (username,)
            ).rowcount > 0  # fmt: skip

    # ------------------------------------------------------------------ sessions

    def open_console_session(self, token_hash: str, username: str, csrf: str, at_ns: int) -> None:
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO console_sessions VALUES (?,?,?,?,?)",
                (token_hash, username, csrf, at_ns, at_ns),
            )

    def console_session(self, token_hash: str) -> tuple[str, str, int, int] | None:
        """``(username, csrf, created_ns, seen_ns)`` of an open session."""
        with self.reading() as conn:
            return conn.execute(
                "SELECT username, csrf, created_ns, seen_ns FROM console_sessions "
                "WHERE token_hash=?",
                (token_hash,),
            ).fetchone()

    def touch_console_session(self, token_hash: str, at_ns: int) -> None:
        with self._writing() as conn:
            conn.execute(
                "UPDATE console_sessions SET seen_ns=? WHERE token_hash=?", (at_ns, token_hash)
            )

    def close_console_session(self, token_hash: str) -> None:
        with self._writing() as conn:
            conn.execute("DELETE FROM console_sessions WHERE token_hash=?", (token_hash,))

    def expire_console_sessions(self, seen_before_ns: int) -> int:
        with self._writing() as conn:
            return conn.execute(
                "DELETE FROM console_sessions WHERE seen_ns<?", (seen_before_ns,)
            ).rowcount

    # ------------------------------------------------------------------ audit

    def add_console_audit(
        self, at_ns: int, username: str, action: str, detail: str, remote: str
    ) -> None:
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO console_audit(at_ns, username, action, detail, remote) "
                "VALUES (?,?,?,?,?)",
                (at_ns, username, action, detail, remote),
            )

    def console_audit(
        self, *, limit: int = 100, before_id: int | None = None
    ) -> list[tuple[Any, ...]]:
        """``(id, at_ns, username, action, detail, remote)``, newest first."""
        with self.reading() as conn:
            return conn.execute(
                "SELECT id, at_ns, username, action, detail, remote FROM console_audit "
                "WHERE id < ? ORDER BY id DESC LIMIT ?",
                (before_id if before_id is not None else 2**63 - 1, limit),
            ).fetchall()

    # ------------------------------------------------------------------ registrations

    def registrations_page(self, wanted: RegistrationFilter, limit: int) -> list[sqlite3.Row]:
        """One page of registrations, newest tap first, with their inbox event and any
        resolution.

        Each worksite of a scope is read through its own index walk (newest first, at most
        ``limit`` rows) and the walks are merged: no sort of a whole history, however many
        rows the store holds. A worker is looked for twice, each through its own index: as the
        worker the relay resolved (``registrations_worker``) and as a badge (``inbox(badge,
        wall_ns)``, for taps no worker was linked to yet). A state or employer matching few
        rows drives the read through its own index; a common one is checked along the time
        walk (see :data:`SORT_AT_MOST`). Measured on 1,000,000 rows: every filter under 100 ms.
        """
        if wanted.workplace is not None:
            if wanted.scope is not None and wanted.workplace not in wanted.scope:
                return []
            places: list[str | None] = [wanted.workplace]
        elif wanted.scope is not None:
            places = list(wanted.scope)
        else:
            places = [None]
        who: list[tuple[str, str] | None] = (
            [("r.worker_ref", wanted.worker), ("i.badge", wanted.worker)] if wanted.worker
            else [None]
        )  # fmt: skip
        selective = {
            column: (values, self._few_registrations(column, values))
            for column, values in (
                ("employer", tuple(wanted.employer or ())),
                ("state", (wanted.state,) if wanted.state else ()),
            )
            if values
        }
        walks = [
            self._registrations_walk(wanted, place, match, selective, limit)
            for place in places for match in who
        ]  # fmt: skip
        if len(walks) == 1:
            return walks[0]
        merged = heapq.merge(
            *walks, key=lambda r: (r["wall_ns"], r["terminal"], r["seq"]), reverse=True
        )
        page: list[sqlite3.Row] = []
        seen: set[tuple[str, int]] = set()
        for row in merged:
            key = (row["terminal"], row["seq"])
            if key not in seen:  # a resolved tap matches both by worker and by badge
                seen.add(key)
                page.append(row)
                if len(page) == limit:
                    break
        return page

    def _registrations_walk(
        self, wanted: RegistrationFilter, place: str | None, match: tuple[str, str] | None,
        selective: dict[str, tuple[tuple[str, ...], bool]], limit: int,
    ) -> list[sqlite3.Row]:  # fmt: skip
        where: list[str] = []
        args: list[Any] = []
        if place is not None:
            where.append("i.workplace=?")
            args.append(place)
        if match is not None:
            where.append(f"{match[0]}=?")  # one of two column names written above
            args.append(match[1])
        for column, (values, few) in selective.items():
            # An expression of the column (``|| ''``) keeps the planner off its index (on
            # SQLite and PostgreSQL alike): the time walk checks it instead.
            marks = ",".join("?" * len(values))
            checked = f"r.{column}" if few else f"(r.{column} || '')"
            where.append(f"{checked} IN ({marks})")
            args += values
        if wanted.since_ns is not None:
            where.append("i.wall_ns>=?")
            args.append(wanted.since_ns)
        if wanted.until_ns is not None:
            where.append("i.wall_ns<?")
            args.append(wanted.until_ns)
        if wanted.before is not None:
            where.append("(i.wall_ns, i.terminal, i.seq) < (?, ?, ?)")
            args += list(wanted.before)
        sql = (
            f"SELECT {_REGISTRATION_COLUMNS} {_REGISTRATION_FROM} "
            f"WHERE {' AND '.join(where) or '1'} "
            "ORDER BY i.wall_ns DESC, i.terminal DESC, i.seq DESC LIMIT ?"
        )
        return self._rows(sql, (*args, limit))

    def _few_registrations(self, column: str, values: Sequence[str]) -> bool:
        """Whether at most :data:`SORT_AT_MOST` registrations have ``column`` in ``values``
        (``column`` is ``state`` or ``employer``, both indexed)."""
        marks = ",".join("?" * len(values))
        with self.reading() as conn:
            (count,) = conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM registrations WHERE {column} IN ({marks}) "
                "LIMIT ?) AS matching",
                (*values, SORT_AT_MOST + 1),
            ).fetchone()
        return int(count) <= SORT_AT_MOST

    def registration_detail(self, terminal: str, seq: int) -> sqlite3.Row | None:
        """One registration as :meth:`registrations_page` reads it."""
        rows = self._rows(
            f"SELECT {_REGISTRATION_COLUMNS} {_REGISTRATION_FROM} WHERE i.terminal=? AND i.seq=?",
            (terminal, seq),
        )
        return rows[0] if rows else None

    def resolve_registration(
        self, terminal: str, seq: int, username: str, comment: str, at_ns: int
    ) -> bool:
        """Record (or replace) a person's resolution of a registration; False when none."""
        with self._writing() as conn:
            if conn.execute(
                "SELECT 1 FROM registrations WHERE terminal=? AND seq=?", (terminal, seq)
            ).fetchone() is None:  # fmt: skip
                return False
            conn.execute(
                "INSERT OR REPLACE INTO console_resolutions VALUES (?,?,?,?,?)",
                (terminal, seq, at_ns, username, comment),
            )
            return True

    def known_workplaces(self) -> list[str]:
        """Every worksite the gateway knows: the registry's and the terminals' bindings."""
        with self.reading() as conn:
            return [
                w for (w,) in conn.execute(
                    "SELECT ref FROM reg_workplaces UNION SELECT workplace FROM terminals "
                    "ORDER BY 1"
                )
            ]  # fmt: skip
