"""Test helper: a FUSE filesystem that loses, on a simulated power cut, what was never synced.

The idea is LazyFS's: the filesystem keeps, for every file, what reached the "disk" (its data
as of its last ``fsync``) apart from what was merely written, and for every directory the names
as of its last ``fsync`` apart from the live ones. A power cut keeps only the durable side:

* file data is durable only after an ``fsync`` of that file (``fdatasync`` counts too);
* a name (create, rename, unlink, mkdir, link) is durable only after an ``fsync`` of the
  directory holding it; a file whose name was never made durable is gone after the cut;
* what was written but not synced is dropped (``drop``), or written back up to a random point
  with the last write torn at a 512-byte sector (``torn``), or written back page by page at
  random, with some directories' unsynced names kept too (``random``), as a disk cache
  flushing in its own order would.

It runs as its own process (``python tests/support/powerfs.py MOUNT --image FILE``), so a cut
behaves like one for the processes using it: the test kills them, tells the filesystem to cut
(``cut`` below), unmounts it, and mounts a new one that starts from the image the cut left, as
a machine starts from its disk. The control channel is a hidden file at the mount's root
(``.powerfs``): one command per write. ``readonly on|off`` turns the filesystem read-only
(``EROFS``) and back, like a remount after an I/O error; ``capacity N`` makes writes beyond
``N`` bytes of file data fail with ``ENOSPC``, like a full SD card.

A clean unmount keeps everything (the kernel would have synced it). SQLite's WAL works on it
(``-shm`` is mmapped through the kernel's page cache); the binding is mfusepy (ctypes over
Debian's libfuse3). Mounting needs ``/dev/fuse`` and ``fusermount3`` (the ``fuse3`` package).

Example::

    with PowerFS(tmp_path / "mnt", tmp_path / "disk.img") as fs:
        ...                      # run a terminal with data_dir under fs.mount
        proc.kill()
        fs.cut("torn", seed=7)   # the power goes: unsynced writes are lost, the fs unmounted
        fs.start()               # power back: a new mount from what survived
"""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import random
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CONTROL = ".powerfs"
SECTOR = 512
PAGE = 4096
MODES = ("drop", "torn", "random")


@dataclass(eq=False)
class Node:
    """One inode: a file (data) or a directory (entries), with a live and a durable side."""

    ino: int
    mode: int  # with the S_IFREG / S_IFDIR bits
    data: bytearray = field(default_factory=bytearray)
    durable_data: bytes = b""
    durable_mode: int = 0
    # writes and truncations since the last fsync, in order: ("w", offset, bytes) | ("t", size)
    pending: list[tuple] = field(default_factory=list)
    entries: dict[str, Node] = field(default_factory=dict)
    durable_entries: dict[str, Node] = field(default_factory=dict)
    nlink: int = 1
    mtime_ns: int = field(default_factory=time.time_ns)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def sync_data(self) -> None:
        self.durable_data = bytes(self.data)
        self.durable_mode = self.mode
        self.pending.clear()

    def sync_entries(self) -> None:
        self.durable_entries = dict(self.entries)
        self.durable_mode = self.mode


def apply_write(buf: bytearray, offset: int, data: bytes) -> None:
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))
    buf[offset : offset + len(data)] = data


def apply_truncate(buf: bytearray, size: int) -> None:
    if size < len(buf):
        del buf[size:]
    else:
        buf.extend(bytes(size - len(buf)))


def after_cut(node: Node, mode: str, rng: random.Random) -> bytes:
    """What of ``node``'s data the disk holds after a cut in ``mode``."""
    buf = bytearray(node.durable_data)
    ops = node.pending
    if mode == "torn":
        keep = rng.randint(0, len(ops))
        for op in ops[:keep]:
            _apply(buf, op)
        if keep < len(ops) and ops[keep][0] == "w":
            _, offset, data = ops[keep]
            sectors = rng.randrange(0, max(1, (len(data) + SECTOR - 1) // SECTOR))
            if sectors:
                apply_write(buf, offset, data[: sectors * SECTOR])
    elif mode == "random":
        for op in ops:
            if op[0] == "t":
                if rng.random() < 0.5:
                    apply_truncate(buf, op[1])
                continue
            _, offset, data = op
            start = offset
            while start < offset + len(data):
                end = min(offset + len(data), (start // PAGE + 1) * PAGE)
                if rng.random() < 0.5:
                    apply_write(buf, start, data[start - offset : end - offset])
                start = end
    return bytes(buf)


def _apply(buf: bytearray, op: tuple) -> None:
    if op[0] == "w":
        apply_write(buf, op[1], op[2])
    else:
        apply_truncate(buf, op[1])


def crash_image(root: Node, mode: str, rng: random.Random) -> dict:
    """The disk as a machine finds it after a cut: ``{"root": ino, "nodes": {ino: ...}}``."""
    nodes: dict[int, dict] = {}

    def visit(node: Node) -> None:
        if node.ino in nodes:
            return
        if node.is_dir:
            keep_live = mode == "random" and rng.random() < 0.3
            entries = node.entries if keep_live else node.durable_entries
            nodes[node.ino] = {"mode": node.durable_mode or node.mode,
                               "entries": {n: c.ino for n, c in entries.items()}}  # fmt: skip
            for child in entries.values():
                visit(child)
        else:
            nodes[node.ino] = {"mode": node.durable_mode or node.mode,
                               "data": after_cut(node, mode, rng)}  # fmt: skip

    visit(root)
    return {"root": root.ino, "nodes": nodes}


def clean_image(root: Node) -> dict:
    """The disk after a clean shutdown: everything live, as if synced."""
    nodes: dict[int, dict] = {}

    def visit(node: Node) -> None:
        if node.ino in nodes:
            return
        if node.is_dir:
            nodes[node.ino] = {"mode": node.mode,
                               "entries": {n: c.ino for n, c in node.entries.items()}}  # fmt: skip
            for child in node.entries.values():
                visit(child)
        else:
            nodes[node.ino] = {"mode": node.mode, "data": bytes(node.data)}

    visit(root)
    return {"root": root.ino, "nodes": nodes}


def load_image(image: dict | None) -> tuple[Node, int]:
    """Nodes from an image (everything in it durable); a fresh root when there is none."""
    if image is None:
        root = Node(ino=1, mode=stat.S_IFDIR | 0o755)
        root.sync_entries()
        return root, 2
    built: dict[int, Node] = {}
    for ino, spec in image["nodes"].items():
        node = Node(ino=ino, mode=spec["mode"], durable_mode=spec["mode"], nlink=0)
        if "data" in spec:
            node.data = bytearray(spec["data"])
            node.durable_data = spec["data"]
        built[ino] = node
    for ino, spec in image["nodes"].items():
        for name, child in spec.get("entries", {}).items():
            built[ino].entries[name] = built[child]
            built[child].nlink += 1
        built[ino].durable_entries = dict(built[ino].entries)
    return built[image["root"]], max(built) + 1


def _operations_class():  # mfusepy is imported only in the filesystem's own process
    import mfusepy

    FuseOSError = mfusepy.FuseOSError

    def fail(code: int):
        return FuseOSError(code)

    class PowerLossFS(mfusepy.Operations):
        use_ns = True

        def __init__(self, image_path: Path, capacity: int | None) -> None:
            self.image_path = image_path
            image = pickle.loads(image_path.read_bytes()) if image_path.exists() else None
            self.root, self.next_ino = load_image(image)
            self.capacity = capacity
            self.readonly = False
            self.powered = True
            self.handles: dict[int, Node] = {}
            self.next_fh = 1

        # ------------------------------------------------------------- helpers
        def _check_power(self) -> None:
            if not self.powered:
                raise fail(errno.EIO)

        def _check_writable(self) -> None:
            self._check_power()
            if self.readonly:
                raise fail(errno.EROFS)

        def _lookup(self, path: str) -> Node:
            self._check_power()
            node = self.root
            for part in [p for p in path.split("/") if p]:
                if not node.is_dir:
                    raise fail(errno.ENOTDIR)
                try:
                    node = node.entries[part]
                except KeyError:
                    raise fail(errno.ENOENT) from None
            return node

        def _parent(self, path: str) -> tuple[Node, str]:
            head, _, name = path.rstrip("/").rpartition("/")
            parent = self._lookup(head or "/")
            if not parent.is_dir:
                raise fail(errno.ENOTDIR)
            return parent, name

        def _used(self) -> int:
            seen: set[int] = set()
            total = 0
            stack = [self.root, *self.handles.values()]
            while stack:
                node = stack.pop()
                if node.ino in seen:
                    continue
                seen.add(node.ino)
                total += len(node.data)
                stack.extend(node.entries.values())
            return total

        def _new(self, mode: int) -> Node:
            node = Node(ino=self.next_ino, mode=mode, durable_mode=mode)
            self.next_ino += 1
            return node

        def _handle(self, node: Node) -> int:
            fh = self.next_fh
            self.next_fh += 1
            self.handles[fh] = node
            return fh

        def _node(self, path: str | None, fh: int | None) -> Node:
            if fh is not None and fh in self.handles:
                self._check_power()
                return self.handles[fh]
            return self._lookup(path or "/")

        # ------------------------------------------------------------- control
        def _control(self, text: str) -> None:
            words = text.split()
            if not words:
                return
            if words[0] == "cut":
                mode = words[1] if len(words) > 1 else "drop"
                seed = int(words[2]) if len(words) > 2 else 0
                if mode not in MODES:
                    raise fail(errno.EINVAL)
                image = crash_image(self.root, mode, random.Random(seed))
                self._save(image)
                self.powered = False
            elif words[0] == "readonly":
                self.readonly = words[1:] == ["on"]
            elif words[0] == "capacity":
                self.capacity = int(words[1]) if words[1] != "none" else None
            else:
                raise fail(errno.EINVAL)

        def _save(self, image: dict) -> None:
            tmp = self.image_path.with_name(self.image_path.name + ".tmp")
            tmp.write_bytes(pickle.dumps(image))
            os.replace(tmp, self.image_path)

        def destroy(self, path: str) -> None:
            if self.powered:  # a clean unmount: the kernel syncs everything first
                self._save(clean_image(self.root))

        # ------------------------------------------------------------- metadata
        def getattr(self, path: str, fh: int | None = None) -> dict:
            if path == "/" + CONTROL:
                return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": 0}
            node = self._node(path, fh)
            return {
                "st_mode": node.mode,
                "st_ino": node.ino,
                "st_nlink": max(node.nlink, 1) + (1 if node.is_dir else 0),
                "st_size": len(node.data),
                "st_uid": os.getuid(),
                "st_gid": os.getgid(),
                "st_blocks": (len(node.data) + 511) // 512,
                "st_atime": node.mtime_ns,
                "st_mtime": node.mtime_ns,
                "st_ctime": node.mtime_ns,
            }

        def readdir(self, path: str, fh: int) -> list[str]:
            node = self._lookup(path)
            return [".", "..", *node.entries]

        def statfs(self, path: str) -> dict:
            size = self.capacity if self.capacity is not None else 1 << 30
            free = max(0, size - self._used())
            return {"f_bsize": PAGE, "f_frsize": PAGE, "f_blocks": size // PAGE,
                    "f_bfree": free // PAGE, "f_bavail": free // PAGE, "f_files": 1 << 20,
                    "f_ffree": 1 << 20, "f_favail": 1 << 20, "f_namemax": 255}  # fmt: skip

        def chmod(self, path: str, mode: int) -> int:
            self._check_writable()
            node = self._lookup(path)
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            self._check_writable()
            self._lookup(path)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            self._check_writable()
            node = self._lookup(path)
            node.mtime_ns = times[1] if times else time.time_ns()
            return 0

        def access(self, path: str, amode: int) -> int:
            if path != "/" + CONTROL:
                self._lookup(path)
            return 0

        # ------------------------------------------------------------- names
        def _link_into(self, parent: Node, name: str, node: Node) -> None:
            old = parent.entries.get(name)
            if old is not None:
                old.nlink -= 1
            parent.entries[name] = node
            node.nlink += 1
            parent.mtime_ns = time.time_ns()

        def create(self, path: str, mode: int, flags: int = 0) -> int:
            if path == "/" + CONTROL:
                return 0
            self._check_writable()
            parent, name = self._parent(path)
            if name in parent.entries:
                if flags & os.O_EXCL:
                    raise fail(errno.EEXIST)
                return self._handle(parent.entries[name])
            node = self._new(stat.S_IFREG | (mode & 0o7777))
            node.nlink = 0
            self._link_into(parent, name, node)
            return self._handle(node)

        def mkdir(self, path: str, mode: int) -> int:
            self._check_writable()
            parent, name = self._parent(path)
            if name in parent.entries:
                raise fail(errno.EEXIST)
            node = self._new(stat.S_IFDIR | (mode & 0o7777))
            node.nlink = 0
            self._link_into(parent, name, node)
            return 0

        def unlink(self, path: str) -> int:
            self._check_writable()
            parent, name = self._parent(path)
            node = parent.entries.pop(name, None)
            if node is None:
                raise fail(errno.ENOENT)
            node.nlink -= 1
            return 0

        def rmdir(self, path: str) -> int:
            self._check_writable()
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                raise fail(errno.ENOENT)
            if node.entries:
                raise fail(errno.ENOTEMPTY)
            del parent.entries[name]
            return 0

        def rename(self, old: str, new: str) -> int:
            self._check_writable()
            src_parent, src_name = self._parent(old)
            dst_parent, dst_name = self._parent(new)
            node = src_parent.entries.get(src_name)
            if node is None:
                raise fail(errno.ENOENT)
            target = dst_parent.entries.get(dst_name)
            if target is not None and target.is_dir and target.entries:
                raise fail(errno.ENOTEMPTY)
            del src_parent.entries[src_name]
            node.nlink -= 1
            self._link_into(dst_parent, dst_name, node)
            return 0

        def link(self, target: str, source: str) -> int:
            self._check_writable()
            node = self._lookup(source)
            parent, name = self._parent(target)
            if name in parent.entries:
                raise fail(errno.EEXIST)
            self._link_into(parent, name, node)
            return 0

        # ------------------------------------------------------------- data
        def open(self, path: str, flags: int) -> int:
            if path == "/" + CONTROL:
                return 0
            node = self._lookup(path)
            if flags & (os.O_WRONLY | os.O_RDWR) and self.readonly:
                raise fail(errno.EROFS)
            if flags & os.O_TRUNC:
                self.truncate(path, 0)
            return self._handle(node)

        def opendir(self, path: str) -> int:
            return self._handle(self._lookup(path))

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            node = self._node(path, fh)
            return bytes(node.data[offset : offset + size])

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            if fh == 0 and path == "/" + CONTROL:
                self._control(bytes(data).decode())
                return len(data)
            self._check_writable()
            node = self._node(path, fh)
            grow = max(0, offset + len(data) - len(node.data))
            if grow and self.capacity is not None and self._used() + grow > self.capacity:
                raise fail(errno.ENOSPC)
            data = bytes(data)
            apply_write(node.data, offset, data)
            node.pending.append(("w", offset, data))
            node.mtime_ns = time.time_ns()
            return len(data)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            self._check_writable()
            node = self._node(path, fh)
            grow = max(0, length - len(node.data))
            if grow and self.capacity is not None and self._used() + grow > self.capacity:
                raise fail(errno.ENOSPC)
            apply_truncate(node.data, length)
            node.pending.append(("t", length))
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            self._check_power()
            if self.readonly:
                raise fail(errno.EROFS)
            self._node(path, fh).sync_data()
            return 0

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            self._check_power()
            node = self._node(path, fh)
            node.sync_entries()
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            self.handles.pop(fh, None)
            return 0

        def releasedir(self, path: str, fh: int) -> int:
            self.handles.pop(fh, None)
            return 0

    return PowerLossFS


def serve(mount: Path, image: Path, capacity: int | None) -> None:
    """Run the filesystem in the foreground until it is unmounted."""
    import mfusepy

    ops = _operations_class()(image, capacity)
    # One thread: the model needs no locks, and nothing here waits on the mount itself.
    # No kernel attribute/entry cache: a name the model dropped must not be served from cache.
    mfusepy.FUSE(ops, str(mount), foreground=True, nothreads=True, fsname="powerfs",
                 attr_timeout=0, entry_timeout=0, negative_timeout=0)  # fmt: skip


# ----------------------------------------------------------------------------- test side


class PowerFS:
    """Mount, cut and remount a power-loss filesystem from a test (see the module docstring)."""

    def __init__(self, mount: Path, image: Path, *, capacity: int | None = None) -> None:
        self.mount = Path(mount)
        self.image = Path(image)
        self.capacity = capacity
        self.proc: subprocess.Popen | None = None
        self.log = self.image.with_suffix(".log")

    def start(self) -> PowerFS:
        self.mount.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, str(self.mount), "--image", str(self.image)]
        if self.capacity is not None:
            cmd += ["--capacity", str(self.capacity)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while not (self.mount / CONTROL).exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"powerfs did not mount at {self.mount}:\n"
                                   f"{self.log.read_text(errors='replace')}")  # fmt: skip
            time.sleep(0.01)
        return self

    def control(self, command: str) -> None:
        fd = os.open(self.mount / CONTROL, os.O_WRONLY)
        try:
            os.write(fd, command.encode())
        finally:
            os.close(fd)

    def cut(self, mode: str = "drop", *, seed: int = 0) -> None:
        """The power goes: keep what was durable (``mode`` for the rest), then unmount."""
        if mode not in MODES:
            raise ValueError(f"cut mode {mode!r} is not one of {MODES}")
        self.control(f"cut {mode} {seed}")
        self.stop()

    def stop(self) -> None:
        """Unmount (cleanly, unless a cut came first) and wait for the process to end."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            done = subprocess.run(["fusermount3", "-u", str(self.mount)],
                                  capture_output=True, check=False)  # fmt: skip
            wait_s = 15.0
            if done.returncode != 0:  # still busy (a file left open): detach now
                subprocess.run(["fusermount3", "-u", "-z", str(self.mount)],
                               capture_output=True, check=False)  # fmt: skip
                wait_s = 1.0  # the process would wait for the last open file to close
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> PowerFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fuse_available() -> bool:
    """Whether this machine can mount the filesystem (``/dev/fuse``, ``fusermount3``, mfusepy)."""
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError):
        return False
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="power-loss FUSE filesystem for tests")
    parser.add_argument("mount", type=Path)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--capacity", type=int, default=None)
    args = parser.parse_args(argv)
    serve(args.mount, args.image, args.capacity)


if __name__ == "__main__":
    main()
