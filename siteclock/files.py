"""Files that must survive a power cut and never be readable by the wrong user.

POSIX promises little after a power cut: a file's data is on the disk only after an ``fsync``
of that file, and a name (a new file, a rename, a new directory) only after an ``fsync`` of the
directory that holds it. A file written without both can come back empty, or not at all: a
terminal's public key came back as an empty file that way. So every file the product writes and
needs after a cut goes through one of these helpers, and nothing else writes such files:

* :func:`write_durably` (and :func:`write_secret` / :func:`write_public` on top of it):
  temporary file, fsync, rename, fsync of the directory, so a reader sees the old file or the
  new one, never half of one; a secret has its mode (0600) from its first byte;
* :func:`create_durably`: the same, but only if no file has that name yet (a key made once);
* :func:`replace_durably`: a rename that survives a cut;
* :func:`make_dir_durably`: a directory whose own name survives a cut.

``docs/durability.md`` says which file uses which, and how the power-cut tests check them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make the names in ``directory`` (creations, renames, removals) survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir_durably(path: Path, mode: int = 0o777) -> None:
    """Create ``path`` and any missing parents with ``mode`` (narrowed by the umask, as
    ``mkdir`` does), each one's name synced into its parent, so a directory made before a
    power cut is still there after it."""
    path = Path(path)
    if path.is_dir():
        return
    make_dir_durably(path.parent, mode)
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    fsync_directory(path.parent)


def _write_temporary(path: Path, data: bytes, mode: int, group: int | None) -> Path:
    """A synced temporary file next to ``path`` with ``mode`` from its first byte."""
    make_dir_durably(path.parent)
    # A name no other writer uses: two processes writing the same file never share a temporary.
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        if group is not None:
            os.fchown(fd, -1, group)
        os.fchmod(fd, mode)  # the umask must not narrow what a reader (the broker) needs
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_durably(path: Path, data: bytes, *, mode: int = 0o644, group: int | None = None) -> None:
    """Replace the file at ``path`` by ``data`` so that a power cut leaves the old file or the
    new one, whole (temporary file, fsync, rename, fsync of the directory)."""
    path = Path(path)
    tmp = _write_temporary(path, data, mode, group)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def create_durably(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Create ``path`` holding ``data``, whole, or raise ``FileExistsError`` if it exists.

    The data is synced under a temporary name, then given its name with a hard link (which,
    unlike a rename, refuses to replace), so two processes starting at once cannot both create
    it, and a cut never leaves the name on an empty file.
    """
    path = Path(path)
    tmp = _write_temporary(path, data, mode, None)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)


def replace_durably(source: Path, target: Path) -> None:
    """``os.replace(source, target)`` whose result survives a power cut."""
    os.replace(source, target)
    fsync_directory(Path(target).parent)
    if Path(source).parent != Path(target).parent:
        fsync_directory(Path(source).parent)


def write_secret(path: Path, data: bytes, *, mode: int = 0o600, group: int | None = None) -> None:
    """Write ``data`` durably to a file that has ``mode`` (0600 unless a reader group needs
    0640) from its first byte: no window where it is wider. ``group`` (a gid) is given to the
    file before the rename, so a broker reading it by group never sees it unreadable."""
    write_durably(path, data, mode=mode & 0o640, group=group)


def write_public(path: Path, data: bytes) -> None:
    """Write a file anyone may read (certificates, public keys) durably, mode 0644."""
    write_durably(path, data, mode=0o644)
