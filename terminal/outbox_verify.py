"""``siteclock verify-chain``: check a terminal's held history offline, reading only.

Anyone holding a copy of a terminal's ``outbox.db`` and its public key(s) can prove the events
are the terminal's own, unaltered and unbroken since the last pruning checkpoint.

The exit code tells three different answers apart, because they call for different people:

* 0: the history verifies;
* 1: ``BROKEN``: the history itself is wrong (a signature, a link, a number): evidence of
  tampering or of a bug, for an investigation;
* 2: the outbox file is missing or unreadable: nothing was checked;
* 3: a public key file is missing, empty or damaged (a power cut once left ``terminal.key.pub``
  empty): nothing was checked; get the key again (the gateway knows every terminal's keys)
  and run again. A damaged key file must never read as a forged history.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from siteclock.protocol import GENESIS_HASH, ChainBroken, SignedEvent, key_id, verify_chain
from siteclock.terminal.outbox_file import (
    COLUMNS,
    OutboxCorrupt,
    check_integrity,
    signed_from_row,
)

EXIT_BROKEN = 1
EXIT_OUTBOX_UNREADABLE = 2
EXIT_KEY_DAMAGED = 3
# Raw public key sizes of the algorithms events are signed with: Ed25519, and P-256 as an
# uncompressed point (what a secure element doing ES256 gives).
PUBLIC_KEY_SIZES = {32: "ed25519", 65: "es256"}


class KeyFileDamaged(ValueError):
    """A public key file does not hold a public key: the file is damaged, not the history."""


def read_public_key(path: Path) -> bytes:
    """The public key in the hex file ``path``; :class:`KeyFileDamaged` naming what is wrong."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileDamaged(f"cannot read public key file {path}: {exc}") from exc
    try:
        public = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise KeyFileDamaged(f"public key file {path} does not hold hex ({exc})") from exc
    if len(public) not in PUBLIC_KEY_SIZES:
        raise KeyFileDamaged(
            f"public key file {path} is damaged: it holds {len(public)} bytes, a public key is "
            f"32 (Ed25519) or 65 (P-256)"
        )
    return public


class _ReadOnlyHistory:
    """Read a held history without writing anything to the file (for offline verification)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            check_integrity(self.conn, path)
        except BaseException:
            self.conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def checkpoint(self) -> tuple[int, bytes]:
        pruned_seq, pruned_digest = self.conn.execute(
            "SELECT pruned_seq, pruned_digest FROM head WHERE id = 1"
        ).fetchone()
        return pruned_seq + 1, bytes(pruned_digest) if pruned_seq else GENESIS_HASH

    def events(self, from_seq: int) -> Iterator[SignedEvent]:
        cur = self.conn.execute(
            f"SELECT {COLUMNS} FROM events WHERE seq >= ? ORDER BY seq", (from_seq,)
        )
        for row in cur:
            yield signed_from_row(row)


def verify_cli(argv: list[str]) -> int:
    """``siteclock verify-chain --db PATH --public-key HEXFILE``: check a terminal's history."""
    parser = argparse.ArgumentParser(
        prog="siteclock verify-chain",
        description="Verify the signatures and hash chain of a terminal's outbox, offline.",
    )
    parser.add_argument("--db", type=Path, required=True, help="the terminal's outbox.db")
    parser.add_argument(
        "--public-key", type=Path, required=True, action="append",
        help="file holding one of the terminal's Ed25519 public keys in hex; repeat it for"
        " a history that spans a key rotation",
    )  # fmt: skip
    args = parser.parse_args(argv)
    keys: dict[str, bytes] = {}
    for path in args.public_key:
        try:
            public = read_public_key(path)
        except KeyFileDamaged as exc:
            print(
                f"KEY DAMAGED verify-chain: {exc}; the history was NOT checked (this says "
                "nothing about it): get the terminal's public key again (the gateway holds it) "
                "and run again",
                file=sys.stderr,
            )
            return EXIT_KEY_DAMAGED
        keys[key_id(public)] = public
    if not args.db.is_file():
        print(f"verify-chain: {args.db}: no such outbox file", file=sys.stderr)
        return EXIT_OUTBOX_UNREADABLE
    history: _ReadOnlyHistory | None = None
    try:
        history = _ReadOnlyHistory(args.db)
        first_seq, prev = history.checkpoint()
        started = time.monotonic()
        count = verify_chain(
            history.events(first_seq), keys, prev_hash=prev,
            first_seq=first_seq,
        )  # fmt: skip
    except (OutboxCorrupt, sqlite3.Error) as exc:
        print(f"verify-chain: {args.db}: cannot read: {exc}", file=sys.stderr)
        return EXIT_OUTBOX_UNREADABLE
    except ChainBroken as exc:
        print(f"BROKEN {args.db}: {exc}")
        return EXIT_BROKEN
    finally:
        if history is not None:  # a file left open would keep the disk busy (unmount fails)
            history.close()
    took = time.monotonic() - started
    if count == 0:
        print(f"OK {args.db}: no events held (history pruned through seq {first_seq - 1})")
    else:
        pruned = ", earlier events pruned" if first_seq > 1 else ""
        print(
            f"OK {args.db}: {count} events, seq {first_seq}..{first_seq + count - 1} signed and "
            f"chained{pruned} ({took:.1f} s)"
        )
    return 0
