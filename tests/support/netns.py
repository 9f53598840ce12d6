"""Network namespaces joined by an impaired link: loss, delay, jitter, reordering, duplication
and a link that goes down, between two real kernel TCP/IP stacks.

Each :class:`Netns` is a namespace the test creates (``ip netns add``) and removes, whatever
happens. :func:`impaired_link` joins two of them with a point-to-point link of addresses that
exist only inside them, and returns a :class:`Link` whose :meth:`Link.impair` sets the faults:

* with ``tc netem`` when the kernel has it (``sch_netem``): a veth pair, netem on both ends;
* otherwise with :class:`TunForwarder`: each namespace holds a TUN device, and a thread of the
  test moves every IP packet from one to the other, dropping, delaying, reordering and
  duplicating them the way netem does. Both ends still run the kernel's own TCP, so
  retransmission, congestion control and keepalives behave as on a bad link.

Code runs inside a namespace through :func:`Netns.entered`: sockets opened, threads started and
processes spawned by the calling thread meanwhile stay in that namespace.

Example::

    with Netns.pair("uplink") as (site, server), impaired_link(site, server) as link:
        with server.entered():
            broker.start()                       # listens on link.right_ip inside `server`
        link.impair(loss=0.1, delay_s=0.1, jitter_s=0.05, reorder=0.25, duplicate=0.05)
        link.down(); link.up()
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import itertools
import os
import random
import select
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

IP = shutil.which("ip") or "/usr/sbin/ip"
TC = shutil.which("tc") or "/usr/sbin/tc"
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
_counter = itertools.count()


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _check(*argv: str) -> None:
    done = _run(*argv)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


def unavailable() -> str | None:
    """Why namespaces cannot be used here (not root, no ``ip``), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not os.path.exists(IP):
        return "iproute2's ip is not installed (make system installs it)"
    return None


class Netns:
    """A network namespace of its own, with loopback up; removed by :meth:`delete`."""

    def __init__(self, label: str) -> None:
        self.name = f"sc{os.getpid()}-{next(_counter)}-{label}"[:15]
        _check(IP, "netns", "add", self.name)
        try:
            _check(IP, "-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    @classmethod
    @contextlib.contextmanager
    def pair(cls, label: str) -> Iterator[tuple[Netns, Netns]]:
        left = cls(label[:4] + "L")
        try:
            right = cls(label[:4] + "R")
        except BaseException:
            left.delete()
            raise
        try:
            yield left, right
        finally:
            right.delete()
            left.delete()

    def ip(self, *argv: str) -> None:
        _check(IP, "-n", self.name, *argv)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Move the calling thread into this namespace, and back afterwards."""
        home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)

    def delete(self) -> None:
        """Remove the namespace (its interfaces go with it). Safe to call twice."""
        _run(IP, "netns", "del", self.name)


def netem_available() -> bool:
    """Whether ``tc qdisc ... netem`` works here (the kernel may lack ``sch_netem``)."""
    probe = Netns("probe")
    try:
        return _run(IP, "netns", "exec", probe.name, TC, "qdisc", "add", "dev", "lo", "root",
                    "netem", "delay", "1ms").returncode == 0  # fmt: skip
    finally:
        probe.delete()


# --------------------------------------------------------------------------- the faults


@dataclass
class Faults:
    """What a link does to each packet, netem's vocabulary (probabilities 0..1, seconds)."""

    loss: float = 0.0
    delay_s: float = 0.0
    jitter_s: float = 0.0
    reorder: float = 0.0
    """Share of packets sent at once, overtaking the delayed ones (needs a delay)."""
    duplicate: float = 0.0
    down: bool = False

    def netem_args(self) -> list[str]:
        if self.down:
            return ["loss", "100%"]
        args = ["delay", f"{self.delay_s * 1000:.0f}ms", f"{self.jitter_s * 1000:.0f}ms"]
        if self.reorder:
            args += ["reorder", f"{self.reorder * 100:g}%"]
        if self.loss:
            args += ["loss", f"{self.loss * 100:g}%"]
        if self.duplicate:
            args += ["duplicate", f"{self.duplicate * 100:g}%"]
        return args


@dataclass
class LinkCounters:
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0


class TunForwarder:
    """Moves IP packets between two TUN devices, applying :class:`Faults` on the way."""

    def __init__(self, left: int, right: int, seed: int = 14) -> None:
        self._fds = (left, right)
        self._peer = {left: right, right: left}
        self.faults = Faults()
        self.counters = LinkCounters()
        self._rng = random.Random(seed)
        self._queue: list[tuple[float, int, int, bytes]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        self._threads = [
            threading.Thread(target=self._receive, name="netns-rx", daemon=True),
            threading.Thread(target=self._deliver, name="netns-tx", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _receive(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([*self._fds, self._wake_r], [], [], 0.5)
            for fd in ready:
                if fd == self._wake_r:
                    continue
                try:
                    packet = os.read(fd, 65536)
                except OSError:
                    continue
                self._admit(self._peer[fd], packet)

    def _admit(self, out: int, packet: bytes) -> None:
        with self._cond:
            faults, rng = self.faults, self._rng
            if faults.down or rng.random() < faults.loss:
                self.counters.dropped += 1
                return
            copies = 2 if rng.random() < faults.duplicate else 1
            self.counters.duplicated += copies - 1
            now = time.monotonic()
            for _ in range(copies):
                if faults.reorder and rng.random() < faults.reorder:
                    delay = 0.0  # sent at once: overtakes the packets still delayed
                    self.counters.reordered += 1
                else:
                    delay = max(0.0, faults.delay_s + rng.uniform(-1, 1) * faults.jitter_s)
                heapq.heappush(self._queue, (now + delay, next(self._order), out, packet))
            self._cond.notify()

    def _deliver(self) -> None:
        with self._cond:
            while not self._stop:
                if not self._queue:
                    self._cond.wait(0.5)
                    continue
                due, _, out, packet = self._queue[0]
                left = due - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._queue)
                with contextlib.suppress(OSError):
                    os.write(out, packet)
                self.counters.forwarded += 1

    def set(self, faults: Faults) -> None:
        with self._cond:
            self.faults = faults
            if faults.down:
                self.counters.dropped += len(self._queue)
                self._queue.clear()  # what was in flight on a cut link is gone
            self._cond.notify()

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(5)
        for fd in (*self._fds, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _open_tun(ns: Netns, name: str) -> int:
    """A TUN device ``name`` created inside ``ns``; its file descriptor stays valid outside."""
    with ns.entered():
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


@dataclass
class Link:
    """A point-to-point link between two namespaces; ``left_ip`` lives in the left one."""

    left: Netns
    right: Netns
    left_ip: str
    right_ip: str
    backend: str
    device: str = "imp0"
    forwarder: TunForwarder | None = None
    faults: Faults = field(default_factory=Faults)

    def impair(self, **faults: float) -> None:
        """Set the faults (``loss``, ``delay_s``, ``jitter_s``, ``reorder``, ``duplicate``);
        those not named are cleared. ``impair()`` gives a clean link."""
        self._apply(Faults(**faults))

    def down(self) -> None:
        """Every packet is lost, both ways, until :meth:`up` (or :meth:`impair`)."""
        self._apply(Faults(down=True))

    def up(self) -> None:
        self._apply(Faults())

    @property
    def counters(self) -> LinkCounters | None:
        """Packet counts (userspace backend only; ``tc -s qdisc`` has netem's)."""
        return self.forwarder.counters if self.forwarder else None

    def _apply(self, faults: Faults) -> None:
        self.faults = faults
        if self.forwarder is not None:
            self.forwarder.set(faults)
            return
        for ns in (self.left, self.right):
            _check(IP, "netns", "exec", ns.name, TC, "qdisc", "replace", "dev", self.device,
                   "root", "netem", *faults.netem_args())  # fmt: skip


@contextlib.contextmanager
def impaired_link(
    left: Netns, right: Netns, *, subnet: int | None = None, device: str = "imp0"
) -> Iterator[Link]:
    """Join ``left`` and ``right`` with a link ``10.214.<subnet>.1`` <-> ``.2`` named ``device``
    on both sides, netem's when the kernel has it, the userspace forwarder's otherwise. A
    namespace on two links needs a different ``device`` and ``subnet`` for each."""
    subnet = os.getpid() % 250 if subnet is None else subnet
    left_ip, right_ip = f"10.214.{subnet}.1", f"10.214.{subnet}.2"
    forwarder = None
    if netem_available():
        _check(IP, "link", "add", device, "netns", left.name, "type", "veth", "peer", "name",
               device, "netns", right.name)  # fmt: skip
        backend = "netem"
    else:
        forwarder = TunForwarder(_open_tun(left, device), _open_tun(right, device))
        backend = "userspace (the kernel has no sch_netem)"
    try:
        for ns, mine, theirs in ((left, left_ip, right_ip), (right, right_ip, left_ip)):
            ns.ip("addr", "add", mine, "peer", theirs, "dev", device)
            ns.ip("link", "set", device, "up")
        link = Link(left, right, left_ip, right_ip, backend, device, forwarder)
        link.up()
        yield link
    finally:
        if forwarder is not None:
            forwarder.close()
