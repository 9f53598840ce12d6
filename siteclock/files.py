"""Files that must survive a power cut and never be readable by the wrong user.

Secrets (key files, broker credentials, tokens) are written with mode 0600 from their first byte;
every write is a temporary file, fsync, rename and fsync of the directory, so a reader sees the old
file or the new one, never half of one. Both the gateway and the terminal's installer use this.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_secret(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o600,
    group: int | None = None,
    owner: int | None = None,
) -> None:
    """Write ``data`` atomically to a file that has ``mode`` (0600 unless a reader group needs
    0640) from its first byte: no window where it is wider, no half-written file after a power
    cut (temporary file, fsync, rename, fsync of the directory). ``group`` and ``owner`` (a gid,
    a uid: the latter needs root) are given to the file before the rename, so a broker reading
    it by group or as its owner never sees it unreadable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode & 0o640)
    with os.fdopen(fd, "wb") as fh:
        if group is not None or owner is not None:
            os.fchown(fh.fileno(), -1 if owner is None else owner, -1 if group is None else group)
        os.fchmod(fh.fileno(), mode & 0o640)  # the umask must not narrow what the broker needs
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)
