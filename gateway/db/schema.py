"""The gateway database's recorded migrations: the only place its tables are defined.

Each migration has a number and a name; :meth:`SQLiteGatewayDB.migrate` applies the ones a file
has not had yet, in order, each in the same transaction as its row in ``schema_version``. A
migration is never edited once released: a change to the schema is a new migration at the end.

Migration 1 is the schema the separate stores created before the data layer existed (every
``CREATE ... IF NOT EXISTS``, then the columns added after the first release when missing), so a
``gateway.db`` written by that code is adopted as it is: nothing is rebuilt or copied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

INBOX = """
CREATE TABLE IF NOT EXISTS inbox(
  terminal TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL, digest BLOB NOT NULL,
  body BLOB NOT NULL, alg TEXT NOT NULL, kid TEXT NOT NULL, sig BLOB NOT NULL,
  workplace TEXT NOT NULL, kind TEXT NOT NULL, badge TEXT NOT NULL, wall_ns INTEGER NOT NULL,
  flags TEXT NOT NULL,
  received_ns INTEGER NOT NULL,
  PRIMARY KEY (terminal, seq));
CREATE INDEX IF NOT EXISTS inbox_received ON inbox(received_ns);
CREATE TABLE IF NOT EXISTS security_alerts(
  id INTEGER PRIMARY KEY AUTOINCREMENT, at_ns INTEGER NOT NULL, terminal TEXT NOT NULL,
  seq INTEGER NOT NULL, kind TEXT NOT NULL, stored_digest BLOB, offered_digest BLOB,
  offered_body BLOB);
"""

RELAY = """
CREATE TABLE IF NOT EXISTS registrations(
  terminal TEXT NOT NULL, seq INTEGER NOT NULL,
  state TEXT NOT NULL,
  ciao_id TEXT, validity TEXT, remarks TEXT NOT NULL DEFAULT '[]',
  attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
  solo INTEGER NOT NULL DEFAULT 0,
  registry_version INTEGER NOT NULL DEFAULT -1,
  worker_ref TEXT, employer TEXT, workplace TEXT, reg_date TEXT, ciao_type TEXT,
  created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL,
  submitted_ns INTEGER, final_ns INTEGER,
  next_try_ns INTEGER NOT NULL DEFAULT 0,
  alerted INTEGER NOT NULL DEFAULT 0, notified INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (terminal, seq));
CREATE INDEX IF NOT EXISTS registrations_state ON registrations(state, terminal, seq);
CREATE INDEX IF NOT EXISTS registrations_ciao_id ON registrations(ciao_id);
CREATE INDEX IF NOT EXISTS registrations_unnotified ON registrations(notified, state);
CREATE TABLE IF NOT EXISTS relay_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS relay_alerts(
  cause TEXT PRIMARY KEY, message TEXT NOT NULL, since_ns INTEGER NOT NULL,
  cleared_ns INTEGER, raised INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS relay_requeues(
  at_ns INTEGER NOT NULL, terminal TEXT NOT NULL, seq INTEGER NOT NULL,
  from_state TEXT NOT NULL, to_state TEXT NOT NULL, last_error TEXT NOT NULL,
  selection TEXT NOT NULL);
"""

TERMINALS = """
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

REGISTRY = """
CREATE TABLE IF NOT EXISTS reg_workers(
  ref TEXT PRIMARY KEY, name TEXT NOT NULL, inss_enc BLOB NOT NULL,
  employer_id TEXT NOT NULL, employer_kind TEXT NOT NULL, capacity TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reg_badges(
  badge TEXT PRIMARY KEY, worker_ref TEXT NOT NULL REFERENCES reg_workers(ref),
  active INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS reg_workplaces(
  ref TEXT PRIMARY KEY, latitude REAL, longitude REAL, address TEXT);
CREATE TABLE IF NOT EXISTS reg_assignments(
  worker_ref TEXT NOT NULL REFERENCES reg_workers(ref), workplace TEXT NOT NULL,
  PRIMARY KEY (worker_ref, workplace));
CREATE TABLE IF NOT EXISTS reg_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO reg_meta VALUES ('version', 0);
"""

SEQUENCE = """
CREATE TABLE IF NOT EXISTS worker_sequence(
  terminal TEXT NOT NULL, seq INTEGER NOT NULL,
  workplace TEXT NOT NULL, worker_ref TEXT NOT NULL,
  wall_ns INTEGER NOT NULL,          -- the tap's time as relayed (corrected when it was)
  kind TEXT NOT NULL,                -- what the terminal recorded
  ciao_type TEXT NOT NULL,           -- 'in' or 'out': what the sequence supports, sent
  issues TEXT NOT NULL DEFAULT '',   -- comma-separated, for the employer; '' when none
  decided_ns INTEGER NOT NULL,
  PRIMARY KEY (terminal, seq));
CREATE INDEX IF NOT EXISTS worker_sequence_day ON worker_sequence(workplace, worker_ref, wall_ns);
"""

ENROLMENT = """
CREATE TABLE IF NOT EXISTS enrol_tokens(
  token_hash TEXT PRIMARY KEY, workplace TEXT NOT NULL, created_ns INTEGER NOT NULL,
  expires_ns INTEGER NOT NULL, created_by TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
  used_ns INTEGER, used_by TEXT, used_kid TEXT);
CREATE TABLE IF NOT EXISTS enrol_location_conflicts(
  workplace TEXT NOT NULL, terminal_id TEXT NOT NULL, at_ns INTEGER NOT NULL,
  latitude REAL, longitude REAL, address TEXT);
"""

ADDED_COLUMNS: dict[str, dict[str, str]] = {
    # why a security alert was raised, in words (a gap's range...)
    "security_alerts": {"detail": "TEXT"},
    # All nullable, so existing rows stay valid.
    "registrations": {
        "terminal_wall_ns": "INTEGER",  # the terminal's time of a clock_unsynced event
        "corrected_wall_ns": "INTEGER",  # the time submitted instead (NULL: terminal time used)
        "clock_note": "TEXT",  # why, in words, for the employer's review
        "problem": "TEXT",  # the last problem details (JSON: status, type, title, detail...)
        "ambiguous_ns": "INTEGER",  # when the row became ambiguous
        "search_refused_ns": "INTEGER",  # first time the search for it was refused (400)
        "requeued_ns": "INTEGER",  # last ``siteclock relay requeue`` of the row
    },
}
"""Columns the stores added at open after their first release, in the order they added them."""

INBOX_BADGE_INDEX = "CREATE INDEX IF NOT EXISTS inbox_badge_time ON inbox(badge, wall_ns)"
"""Made by the sequence check when it first runs (as before the data layer): a gateway that
only takes in events does not pay for it on every insert."""


def _initial(conn: sqlite3.Connection) -> None:
    """Today's schema, created where missing; the added columns added where missing."""
    for script in (INBOX, RELAY, TERMINALS, REGISTRY, SEQUENCE, ENROLMENT):
        for statement in statements(script):
            conn.execute(statement)
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def statements(script: str) -> list[str]:
    """The statements of ``script`` one by one (``executescript`` would commit the migration's
    transaction; a plain split on ``;`` would cut the comments that contain one)."""
    found, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            found.append(buffer.strip())
            buffer = ""
    return found


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[sqlite3.Connection], None]


HEALTH_AND_ALERTS = """
CREATE TABLE IF NOT EXISTS terminal_health(
  terminal TEXT PRIMARY KEY,
  online INTEGER NOT NULL,            -- 1 online, 0 offline
  changed_ns INTEGER NOT NULL,        -- when ``online`` last changed (gateway clock)
  reason TEXT NOT NULL DEFAULT '',    -- why offline: 'connection lost', 'stopped', 'silent'
  heartbeat_ns INTEGER,               -- when the last online heartbeat arrived (gateway clock)
  due_ns INTEGER,                     -- silent after this: heartbeat + interval + margin
  heartbeat_s REAL,                   -- the interval the terminal reported (NULL: config's)
  queue_depth INTEGER, oldest_unsent_age_s REAL,
  clock_synced INTEGER, clock_maxerror_us INTEGER, clock_offset_ms INTEGER,
  reader TEXT, disk_free_mb REAL, version TEXT,
  alerts TEXT NOT NULL DEFAULT '');   -- the terminal's own alert codes, comma-separated
CREATE INDEX IF NOT EXISTS terminal_health_due ON terminal_health(online, due_ns);
CREATE TABLE IF NOT EXISTS terminal_refusals(
  terminal TEXT NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL, last_ns INTEGER NOT NULL,
  PRIMARY KEY (terminal, reason));
CREATE TABLE IF NOT EXISTS alerts(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL,                  -- what the alert is about: one open alert per key
  kind TEXT NOT NULL, subject TEXT NOT NULL, message TEXT NOT NULL, link TEXT NOT NULL,
  raised_ns INTEGER NOT NULL,
  resolved_ns INTEGER, resolution TEXT, resolved_by TEXT,
  condition_cleared_ns INTEGER,       -- a person resolved it before its condition cleared: when
                                      -- it did (until then the condition raises no new alert)
  sent_ns INTEGER, resolve_sent_ns INTEGER,
  send_attempts INTEGER NOT NULL DEFAULT 0, send_error TEXT NOT NULL DEFAULT '',
  next_send_ns INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_key ON alerts(key) WHERE resolved_ns IS NULL;
CREATE INDEX IF NOT EXISTS alerts_raised ON alerts(raised_ns);
CREATE TABLE IF NOT EXISTS alert_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS registrations_submitted ON registrations(submitted_ns);
CREATE INDEX IF NOT EXISTS registrations_verdict_issue ON registrations(updated_ns)
  WHERE state IN ('rejected', 'refused') OR remarks <> '[]';
CREATE INDEX IF NOT EXISTS worker_sequence_issue ON worker_sequence(decided_ns) WHERE issues <> '';
ALTER TABLE security_alerts ADD COLUMN resolved_ns INTEGER;
ALTER TABLE security_alerts ADD COLUMN resolution TEXT;
ALTER TABLE security_alerts ADD COLUMN resolved_by TEXT;
CREATE INDEX IF NOT EXISTS security_alerts_open ON security_alerts(id) WHERE resolved_ns IS NULL;
"""
"""Migration 3: terminal health (online/offline from Last Will and heartbeats, a sweeper's
deadline), refusals per terminal and reason, the console's alerts (one open per key, a
resolution, delivery state), a resolved marker on security alerts, and the partial indexes the
alert rules read through (rejections and remarks, sequence issues) so a sweep costs little
however many registrations are stored."""


def _health_and_alerts(conn: sqlite3.Connection) -> None:
    for statement in statements(HEALTH_AND_ALERTS):
        conn.execute(statement)


CONSOLE = """
CREATE TABLE IF NOT EXISTS console_users(
  username TEXT PRIMARY KEY, password_hash TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('admin', 'site_manager')),
  language TEXT NOT NULL DEFAULT 'en', disabled INTEGER NOT NULL DEFAULT 0,
  created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS console_user_sites(
  username TEXT NOT NULL REFERENCES console_users(username) ON DELETE CASCADE,
  workplace TEXT NOT NULL,
  PRIMARY KEY (username, workplace));
-- The cookie carries a random token; only its SHA-256 is kept, so a copy of the database
-- opens no session. Each session has its own CSRF token.
CREATE TABLE IF NOT EXISTS console_sessions(
  token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL,
  created_ns INTEGER NOT NULL, seen_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions(username);
CREATE TABLE IF NOT EXISTS console_audit(
  id INTEGER PRIMARY KEY AUTOINCREMENT, at_ns INTEGER NOT NULL, username TEXT NOT NULL,
  action TEXT NOT NULL, detail TEXT NOT NULL, remote TEXT NOT NULL DEFAULT '');
-- A person's answer to a registration that needs one (a rejection read and handled...).
CREATE TABLE IF NOT EXISTS console_resolutions(
  terminal TEXT NOT NULL, seq INTEGER NOT NULL, at_ns INTEGER NOT NULL,
  username TEXT NOT NULL, comment TEXT NOT NULL,
  PRIMARY KEY (terminal, seq));
-- The registrations page pages newest first by tap time, per worksite (keyset pagination).
CREATE INDEX IF NOT EXISTS inbox_workplace_time ON inbox(workplace, wall_ns, terminal, seq);
CREATE INDEX IF NOT EXISTS inbox_time ON inbox(wall_ns, terminal, seq);
-- A worker's registrations (the console's worker filter, evidence for one worker).
CREATE INDEX IF NOT EXISTS registrations_worker ON registrations(worker_ref);
CREATE INDEX IF NOT EXISTS registrations_employer ON registrations(employer);
"""


def _console(conn: sqlite3.Connection) -> None:
    """The employer's console: accounts, their worksites, sessions, audit trail, resolutions,
    and the indexes its registrations page reads by."""
    for statement in statements(CONSOLE):
        conn.execute(statement)


def _token_revocation(conn: sqlite3.Connection) -> None:
    """An enrolment token can be revoked before it is used (``provision token revoke``): when
    and by whom is kept, the row stays for the audit trail."""
    conn.execute("ALTER TABLE enrol_tokens ADD COLUMN revoked_ns INTEGER")
    conn.execute("ALTER TABLE enrol_tokens ADD COLUMN revoked_by TEXT")


def _envelope_version(conn: sqlite3.Connection) -> None:
    """Events signed as COSE_Sign1 (envelope version 2) verify only with their version known:
    every row stored before is version 1, the column's default. The evidence export finds the
    badges a worker used through ``registrations_worker`` (and reads their taps through
    ``inbox_badge_time``, made by the first reader that needs it)."""
    conn.execute("ALTER TABLE inbox ADD COLUMN envelope INTEGER NOT NULL DEFAULT 1")
    # the badges a worker's taps were resolved to (a badge re-linked since keeps its past)
    conn.execute("CREATE INDEX IF NOT EXISTS registrations_worker ON registrations(worker_ref)")


def _submitted_by(conn: sqlite3.Connection) -> None:
    """Several gateways' relays share one queue: a ``submitted`` row names the relay process
    that marked it (its instance id, ``<hostname>-<random>``), so a starting relay recovers only
    the rows of relays that are gone, never the batch a live one has in flight. Rows marked
    before this migration have none (NULL): a starting relay recovers them as it always did."""
    conn.execute("ALTER TABLE registrations ADD COLUMN submitted_by TEXT")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the schema of the separate stores", _initial),
    Migration(2, "the employer's console: accounts, sessions, audit", _console),
    Migration(3, "terminal health, refusals per terminal, console alerts", _health_and_alerts),
    Migration(4, "enrolment tokens can be revoked", _token_revocation),
    Migration(5, "inbox envelope version (COSE_Sign1)", _envelope_version),
    Migration(6, "the relay instance that submitted a registration", _submitted_by),
)

SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version(
  version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ns INTEGER NOT NULL)
"""
