"""Files that must survive a power cut (siteclock.files, siteclock.keys) and verify-chain's
answer when a key file did not: "damaged key" (exit 3), never "BROKEN" (exit 1).

The power cuts themselves are in tests/integration/test_power_cut*.py (a FUSE filesystem that
drops what was not synced); these check the parts in isolation, fast.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from siteclock import files, keys
from siteclock.protocol import ClockState, Kind
from siteclock.terminal.outbox import Outbox, verify_cli


def test_write_durably_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "state.json"
    files.write_durably(target, b"one")
    files.write_durably(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_write_secret_is_private_from_the_first_byte(tmp_path: Path) -> None:
    files.write_secret(tmp_path / "pw", b"s3cret")
    assert stat.S_IMODE((tmp_path / "pw").stat().st_mode) == 0o600


def test_create_durably_refuses_an_existing_name_and_keeps_it(tmp_path: Path) -> None:
    files.create_durably(tmp_path / "k", b"first")
    with pytest.raises(FileExistsError):
        files.create_durably(tmp_path / "k", b"second")
    assert (tmp_path / "k").read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["k"]  # the temporary is gone either way


def test_make_dir_durably_makes_every_missing_parent_with_its_mode(tmp_path: Path) -> None:
    files.make_dir_durably(tmp_path / "x" / "y", 0o700)
    assert stat.S_IMODE((tmp_path / "x" / "y").stat().st_mode) == 0o700
    files.make_dir_durably(tmp_path / "x" / "y", 0o700)  # again: nothing to do
    (tmp_path / "f").write_text("")
    with pytest.raises(FileExistsError):
        files.make_dir_durably(tmp_path / "f")


def test_replace_durably_moves_the_file(tmp_path: Path) -> None:
    (tmp_path / "new").write_text("n")
    (tmp_path / "cur").write_text("c")
    files.replace_durably(tmp_path / "new", tmp_path / "cur")
    assert (tmp_path / "cur").read_text() == "n"
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("damage", ["", "not hex\n", "abcd\n"])
def test_load_or_create_writes_a_damaged_public_key_again(tmp_path: Path, damage: str) -> None:
    """After a cut ``terminal.key.pub`` came back empty and was never written again."""
    signer = keys.load_or_create(tmp_path / "terminal.key")
    pub = keys.public_path(tmp_path / "terminal.key")
    pub.write_text(damage)
    again = keys.load_or_create(tmp_path / "terminal.key")
    assert again.kid == signer.kid
    assert pub.read_text() == signer.public_key_bytes().hex() + "\n"


def test_load_or_create_keeps_a_good_public_key_untouched(tmp_path: Path) -> None:
    keys.load_or_create(tmp_path / "terminal.key")
    pub = keys.public_path(tmp_path / "terminal.key")
    before = pub.stat().st_mtime_ns
    os.utime(pub, ns=(before - 10**9, before - 10**9))
    keys.load_or_create(tmp_path / "terminal.key")
    assert pub.stat().st_mtime_ns == before - 10**9


def _history(tmp_path: Path) -> tuple[Path, Path]:
    signer = keys.load_or_create(tmp_path / "terminal.key")
    with Outbox(tmp_path / "outbox.db", signer=signer, terminal_id="t-1",
                workplace="ABCDEFGH12345") as box:  # fmt: skip
        for _ in range(3):
            box.append(kind=Kind.IN, badge="sim:0A", clock=ClockState(True, 1, "test"))
    return tmp_path / "outbox.db", keys.public_path(tmp_path / "terminal.key")


@pytest.mark.parametrize("damage", [b"", b"\x00" * 65, b"zz\n", b"abcd\n"])
def test_verify_chain_tells_a_damaged_key_file_from_a_broken_history(
    tmp_path: Path, damage: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    db, pub = _history(tmp_path)
    assert verify_cli(["--db", str(db), "--public-key", str(pub)]) == 0
    pub.write_bytes(damage)
    assert verify_cli(["--db", str(db), "--public-key", str(pub)]) == 3
    out = capsys.readouterr()
    assert "BROKEN" not in out.out
    assert "KEY DAMAGED" in out.err
    assert "NOT checked" in out.err


def test_verify_chain_missing_key_file_is_not_a_broken_history(tmp_path: Path) -> None:
    db, pub = _history(tmp_path)
    pub.unlink()
    assert verify_cli(["--db", str(db), "--public-key", str(pub)]) == 3
