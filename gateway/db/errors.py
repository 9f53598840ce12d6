"""Errors of the gateway database, the same whichever backend raised them.

Callers outside ``gateway/db`` catch these, never a driver's own: :class:`OperationalError`
when the database itself failed (disk, lock timeout, lost connection: not the input's fault,
so the caller stops and retries later), :class:`IntegrityError` when a constraint refused a
row (that row's fault alone), :class:`DatabaseError` for anything else the driver raised.

Each backend maps its driver's errors onto them in :func:`neutral_errors`. On SQLite the
mapped error is *also* the matching ``sqlite3`` error, so code written against ``sqlite3``
before this module existed keeps catching what it caught.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


class DatabaseError(Exception):
    """Any error the gateway database's driver raised."""


class OperationalError(DatabaseError):
    """The database failed (disk, lock timeout, lost connection): retry later."""


class IntegrityError(DatabaseError):
    """A constraint (unique key, foreign key, not null) refused a row."""


class _SQLiteDatabaseError(DatabaseError, sqlite3.DatabaseError):
    pass


class _SQLiteOperationalError(OperationalError, sqlite3.OperationalError):
    pass


class _SQLiteIntegrityError(IntegrityError, sqlite3.IntegrityError):
    pass


def _sqlite_class(exc: sqlite3.Error) -> type[DatabaseError]:
    if isinstance(exc, sqlite3.OperationalError):
        return _SQLiteOperationalError
    if isinstance(exc, sqlite3.IntegrityError):
        return _SQLiteIntegrityError
    return _SQLiteDatabaseError


def _postgres_class(exc: Exception) -> type[DatabaseError] | None:
    try:
        import psycopg
    except ImportError:  # the gateway extra without PostgreSQL: nothing to map
        return None
    if isinstance(exc, psycopg.errors.IntegrityError):
        return IntegrityError
    if isinstance(exc, (psycopg.OperationalError, psycopg.errors.LockNotAvailable,
                        psycopg.errors.QueryCanceled, psycopg.errors.SerializationFailure,
                        psycopg.errors.DeadlockDetected)):  # fmt: skip
        return OperationalError
    if isinstance(exc, psycopg.Error):
        return DatabaseError
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:
        return None
    return OperationalError if isinstance(exc, PoolTimeout) else None


def neutral(exc: BaseException) -> DatabaseError | None:
    """The backend-neutral error for a driver's ``exc`` (None: not a driver error)."""
    if isinstance(exc, DatabaseError):
        return None  # mapped already (an inner block did it)
    if isinstance(exc, sqlite3.Error):
        kind: type[DatabaseError] | None = _sqlite_class(exc)
    elif isinstance(exc, Exception):
        kind = _postgres_class(exc)
    else:
        kind = None
    if kind is None:
        return None
    mapped = kind(*exc.args)
    for attribute in ("sqlite_errorcode", "sqlite_errorname", "sqlstate"):
        if hasattr(exc, attribute):
            setattr(mapped, attribute, getattr(exc, attribute))
    return mapped


@contextmanager
def neutral_errors() -> Iterator[None]:
    """Raise a driver's error leaving the block as its neutral counterpart (chained)."""
    try:
        yield
    except Exception as exc:
        mapped = neutral(exc)
        if mapped is None:
            raise
        raise mapped from exc
